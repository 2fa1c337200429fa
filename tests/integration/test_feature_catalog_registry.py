"""Against the stack's real MLflow server (supervised, SQLite, on a free port):

- the feature catalog's registry column: two registered versions, tagged by the lineage code the
  pipeline runs at registration (one trained on V1, one on V2, the V2 one ``@champion``), show up
  against exactly the features they were trained on;
- the server's Prometheus metrics: ``GET /metrics`` answers Prometheus text that counts the
  requests just made (summed over both uvicorn workers), from the folder in the state directory.

No model is trained: a version's source is an empty artifact folder of a real run (the catalog
and the lineage read tags, not models)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from tests.support.services import QUIET_ENV, ROOT, mlflow_server

pytestmark = pytest.mark.integration
MODEL = "crossfit_total_lift"


def _register(uri: str, feature_version: str, store) -> str:
    from mlflow import MlflowClient

    from crossfit_mlops.registry.lineage import tag_lineage

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("catalog") or client.get_experiment(client.create_experiment("catalog"))
    run = client.create_run(experiment.experiment_id)
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name='{MODEL}'"):
        client.create_registered_model(MODEL)
    mv = client.create_model_version(MODEL, f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                     tags={"feature_version": feature_version})  # fmt: skip
    tag_lineage(uri, MODEL, mv.version, feature_version, store)
    return mv.version


def test_the_catalog_lists_the_model_versions_and_mlflow_exposes_metrics(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from crossfit_mlops.features.feast_repo import apply_definitions, get_store
    from crossfit_mlops.settings import get_settings

    monkeypatch.setenv("CROSSFIT_STATE_DIR", str(tmp_path / "state"))
    settings = get_settings()
    store = get_store(settings)
    apply_definitions(settings, store)
    with mlflow_server(tmp_path / "mlflow_state") as uri:
        v1, v2 = _register(uri, "v1", store), _register(uri, "v2", store)
        MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(MODEL, "champion", v2)
        out = tmp_path / "catalog.md"
        env = {**os.environ, **QUIET_ENV, "CROSSFIT_STATE_DIR": str(tmp_path / "state")}
        done = subprocess.run(
            [sys.executable, "-m", "crossfit_mlops", "catalog", "--tracking-uri", uri, "--out", str(out)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        rows = {line.split(" | ")[0].strip("| `"): line for line in out.read_text().splitlines() if line.startswith("| `")}
        assert rows["age"].endswith(f"| v{v2} (@champion), v{v1} |")  # in both feature sets
        assert rows["bmi"].endswith(f"| v{v2} (@champion) |")  # V2 only
        assert f"read from the registry at `{uri}`" in out.read_text()

        for _ in range(3):
            requests.get(f"{uri}/api/2.0/mlflow/experiments/search?max_results=5", timeout=10).raise_for_status()
        metrics = requests.get(f"{uri}/metrics", timeout=10)
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        searched = [
            line for line in metrics.text.splitlines()
            if line.startswith("mlflow_server_http_requests_total{") and 'endpoint="/api/2.0/mlflow/experiments/search"' in line
        ]  # fmt: skip
        assert searched and sum(float(line.rsplit(" ", 1)[1]) for line in searched) >= 3, metrics.text[:3000]
        assert "mlflow_server_http_request_duration_seconds_bucket" in metrics.text
        assert list((tmp_path / "mlflow_state" / "mlflow" / "metrics").glob("*.db"))  # in the state dir
