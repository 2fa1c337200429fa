"""Real request and answer examples in the OpenAPI document, from the data this process serves.

The models of :mod:`crossfit_mlops.serving.schemas` carry the document's schemas and illustrative
examples. An athlete id written in code would be an athlete that does not exist (ids are drawn per
snapshot), so the first time ``/openapi.json`` is asked for with a champion loaded, the request and
200 examples of ``/predict`` and ``/predict/features`` are replaced by real ones: two athletes with
fresh online rows, their features and the champion's predictions. Built once per champion version;
without them, rebuilt after :data:`_RETRY_SECONDS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from crossfit_mlops.serving.champion import Champion
from crossfit_mlops.serving.online import FeatureStoreUnavailable, OnlineFeatureReader

_EXAMPLE_TRIES = 25  # athletes tried (spread over the index) to find two with fresh online rows
_RETRY_SECONDS = 30.0  # a document without live examples is rebuilt after this long


def _found_rows(champion: Champion, reader: OnlineFeatureReader) -> list:
    ids = sorted(reader.known.get(champion.feature_version))
    found = []
    for candidate in ids[:: max(1, len(ids) // _EXAMPLE_TRIES)][:_EXAMPLE_TRIES]:
        try:
            found += reader.read([candidate], champion.feature_version, champion.columns)
        except (LookupError, FeatureStoreUnavailable):
            continue
        if len(found) == 2:
            break
    return found


def live_examples(champion: Champion, reader: OnlineFeatureReader) -> dict[str, Any] | None:
    """Path -> (request examples, 200 examples), or None without two athletes to show."""
    found = _found_rows(champion, reader)
    if len(found) < 2:
        return None
    integral = {c for c, t in champion.column_types.items() if t in {"long", "integer"}}
    features = {c: int(v) if c in integral else v for c, v in zip(champion.columns, found[0].values, strict=True)}
    common = {"model_name": champion.model_name, "model_version": champion.version, "feature_version": champion.feature_version}
    items = [
        {"athlete_id": f.athlete_id, "prediction": p, "features_at": f.event_timestamp.isoformat()}
        for f, p in zip(found, champion.predict([f.values for f in found]), strict=True)
    ]
    return {
        "/predict": ({"one athlete": {"athlete_id": items[0]["athlete_id"]},
                      "several athletes": {"athlete_ids": [i["athlete_id"] for i in items]}},
                     {"one athlete": {**items[0], **common}, "several athletes": {"predictions": items, **common}}),
        "/predict/features": ({"one row": {"features": features}},
                              {"one row": {"predictions": [items[0]["prediction"]], **common,
                                           "scored_at": "2026-12-01T12:00:00.000+00:00"}}),
    }  # fmt: skip


def _insert(schema: dict[str, Any], live: dict[str, Any]) -> None:
    for path, (requests, answers) in live.items():
        operation = schema["paths"][path]["post"]
        operation["requestBody"]["content"]["application/json"]["examples"] = {
            name: {"value": value} for name, value in requests.items()
        }
        operation["responses"]["200"]["content"]["application/json"]["examples"] = {
            name: {"value": value} for name, value in answers.items()
        }


def openapi_with_live_examples(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi``: FastAPI's document plus live examples, built once per champion version."""
    cache: dict[str | None, tuple[dict[str, Any], float]] = {}

    def openapi() -> dict[str, Any]:
        champion = app.state.holder.current
        key = None if champion is None else champion.version
        cached = cache.get(key)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        live = None if champion is None else live_examples(champion, app.state.reader)
        if live is not None:
            _insert(schema, live)
        cache[key] = (schema, float("inf") if live is not None else time.monotonic() + _RETRY_SECONDS)
        return schema

    return openapi
