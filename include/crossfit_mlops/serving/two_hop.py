"""The seed tutorial's serving path: read online features from Feast, POST them to MLflow's server.

``mlflow models serve -m models:/crossfit_total_lift@champion`` answers ``/invocations``; the
client does the feature lookup itself (two hops: the online store, then the model server). Kept as
a working, documented path and as the benchmark's baseline against the one-hop API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crossfit_mlops.serving.online import KnownAthletes, OnlineFeatureReader
from crossfit_mlops.settings import Settings, get_settings
from crossfit_mlops.tracking.aliases import input_schema, model_uri, require_champion


@dataclass(frozen=True)
class ChampionInputs:
    version: str
    feature_version: str
    columns: tuple[str, ...]


def champion_inputs(settings: Settings) -> ChampionInputs:
    """Feature version and input columns of ``@champion`` (from tags and signature; no model load)."""
    name, uri = settings.registered_model_name, settings.mlflow_tracking_uri
    mv = require_champion(uri, name)
    schema = input_schema(uri, model_uri(name, mv.version))
    return ChampionInputs(
        version=str(mv.version),
        feature_version=mv.tags["feature_version"],
        columns=tuple(col["name"] for col in schema),
    )


class TwoHopClient:
    """Feast online read in this process, then ``POST /invocations`` to ``mlflow models serve``."""

    def __init__(self, endpoint: str, settings: Settings | None = None, inputs: ChampionInputs | None = None):
        import requests

        from crossfit_mlops.features.feast_repo import get_store

        self.settings = settings or get_settings()
        self.endpoint = endpoint.rstrip("/")
        if not self.endpoint.endswith("/invocations"):
            self.endpoint += "/invocations"
        self.inputs = inputs or champion_inputs(self.settings)
        self.reader = OnlineFeatureReader(get_store(self.settings), KnownAthletes(self.settings))
        self.http = requests.Session()  # keep-alive, as a real client would

    def payload(self, athlete_ids: list[int]) -> dict[str, Any]:
        rows = self.reader.read(athlete_ids, self.inputs.feature_version, self.inputs.columns)
        return {"dataframe_split": {"columns": list(self.inputs.columns), "data": [r.values for r in rows]}}

    def predict(self, athlete_ids: list[int]) -> list[float]:
        response = self.http.post(self.endpoint, json=self.payload(athlete_ids), timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"{self.endpoint} answered {response.status_code}: {response.text[:500]}")
        return [float(v) for v in response.json()["predictions"]]
