"""The API's OpenAPI document: every response of every endpoint, with examples.

The error examples are the bodies the API sends (same codes, same limits). The request and
success examples are taken from the data this process serves the first time ``/openapi.json`` is
asked for with a champion loaded: real athlete ids with a fresh online row, their real features
and the champion's real predictions (athlete ids are drawn per snapshot: a fixed id in the code
would be an athlete that does not exist).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from crossfit_mlops.serving.edge import MAX_ERRORS, Limits
from crossfit_mlops.tracking.registry import NoChampion

_EXAMPLE_TRIES = 25  # athletes tried (spread over the index) to find two with fresh online rows
_RETRY_SECONDS = 30.0  # a document without live examples is rebuilt after this long


class ErrorBody(BaseModel):
    """Every error: a stable code, what is wrong, and fields that depend on the code."""

    model_config = ConfigDict(extra="allow")
    error: str = Field(description="stable machine-readable code")
    detail: str | list[dict[str, Any]] = Field(
        description=f"what is wrong; for a 422 one {{loc, msg, type}} per field (at most {MAX_ERRORS})"
    )


class Prediction(BaseModel):
    athlete_id: int
    prediction: float = Field(description="total lift, lb")
    features_at: str = Field(description="event time of the online features the prediction used")
    model_name: str
    model_version: str
    feature_version: str


class BatchPredictions(BaseModel):
    predictions: list[dict[str, Any]] = Field(description="{athlete_id, prediction, features_at}, in request order")
    model_name: str
    model_version: str
    feature_version: str


class FeaturePredictions(BaseModel):
    predictions: list[float] = Field(description="total lift, lb, in request order")
    model_name: str
    model_version: str
    feature_version: str
    scored_at: str


def _errors(description: str, **examples: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": ErrorBody,
        "description": description,
        "content": {"application/json": {"examples": {name: {"value": value} for name, value in examples.items()}}},
    }


def _invalid(loc: list, msg: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"error": "invalid_input", "detail": [{"loc": loc, "msg": msg, "type": kind, **extra}]}


def _unavailable(model_name: str) -> dict[str, dict[str, Any]]:
    down = "registry at http://127.0.0.1:5000 unreachable: API request to endpoint /api/2.0/mlflow/registered-models/alias failed"
    store = "the feature store cannot serve v2 features: FileNotFoundError: Registry not found at path \".state/feast/registry.db\""
    return {
        "no_champion": {"error": "no_champion", "detail": str(NoChampion.missing(model_name))},
        "registry_unavailable": {"error": "registry_unavailable", "detail": down},
        "starting": {"error": "starting", "detail": f"the first look for {model_name}@champion in the registry has not finished yet"},
        "feature_store_unavailable": {"error": "feature_store_unavailable", "detail": store},
    }  # fmt: skip


def responses(model_name: str, limits: Limits) -> dict[str, dict[int, dict[str, Any]]]:
    """The ``responses=`` of each route."""
    n, body, items = limits.max_batch, limits.max_body_bytes, limits.max_items
    unavailable = _unavailable(model_name)
    r503 = _errors("nothing to answer with yet, or a dependency is down (see Retry-After)", **unavailable)
    r413 = _errors(
        "the request is larger than the limits",
        batch_too_large={"error": "batch_too_large", "detail": f"{n + 1} rows in one request; the limit is {n}", "limit": n},
        body_too_large={"error": "body_too_large", "detail": f"the body has {body * 4} bytes; the limit is {body}", "limit": body},
        too_many_items={"error": "too_many_items", "limit": items,
                        "detail": f"the body has {items * 4} ':' or ',' separators (object keys, array items); the limit is {items}"},
    )  # fmt: skip
    r422 = _errors(
        "a field is missing, unknown, of the wrong type, not finite, or out of its plausible range",
        not_finite=_invalid(["body", "athlete_id"], "Input should be a finite number", "finite_number"),
        out_of_range=_invalid(["body", "features", "age"], "must be between 18 and 90", "out_of_range",
                              input=-5, ctx={"ge": 18, "le": 90}),
        unknown_field=_invalid(["body", "features", "bench_press"], "not an input of the champion's signature",
                               "extra_forbidden"),
    )  # fmt: skip
    r404 = _errors("no feature snapshot has ever had the athlete", unknown={
        "error": "unknown_athlete", "athlete_ids": [987654321],
        "detail": "unknown athlete_id 987654321: not in any v2 feature snapshot"})  # fmt: skip
    r424 = _errors("the athlete is known, but the online store has no fresh row: materialize a snapshot", missing={
        "error": "features_unavailable", "athlete_ids": [408], "reasons": {"408": "no row in the online store"},
        "detail": "online v2 features unavailable (athlete_id 408: no row in the online store): materialize a current snapshot",
    })  # fmt: skip
    ready_503 = {
        name: {"ready": False, "error": v["error"], "detail": v["detail"], "reason": v["detail"]} for name, v in unavailable.items()
    }
    return {
        "/predict": {200: {"model": Prediction | BatchPredictions, "description": "one prediction, or one per athlete"},
                     404: r404, 413: r413, 422: r422, 424: r424, 503: r503},
        "/predict/features": {200: {"model": FeaturePredictions, "description": "one prediction per row"},
                              413: r413, 422: r422, 503: r503},
        "/ready": {200: {"description": "/predict can answer", "content": {"application/json": {"example": {
                       "ready": True, "model_version": "3", "feature_version": "v2"}}}},
                   503: {"description": "/predict cannot answer; the reason says why",
                         "content": {"application/json": {"examples": {k: {"value": v} for k, v in ready_503.items()}}}}},
        "/model": {503: _errors("no champion loaded", **{k: unavailable[k] for k in ("no_champion", "registry_unavailable")})},
    }  # fmt: skip


def _live_examples(champion, reader) -> dict[str, Any] | None:
    """Two athletes with fresh online rows, their features and the champion's predictions."""
    from crossfit_mlops.serving.online import FeatureStoreUnavailable

    ids = sorted(reader.known.get(champion.feature_version))
    found = []
    for candidate in ids[:: max(1, len(ids) // _EXAMPLE_TRIES)][:_EXAMPLE_TRIES]:
        try:
            found += reader.read([candidate], champion.feature_version, champion.columns)
        except (LookupError, FeatureStoreUnavailable):
            continue
        if len(found) == 2:
            break
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


def with_live_examples(app, holder, reader, get_openapi: Callable[..., dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """``app.openapi``: FastAPI's document plus live examples, built once per champion version."""
    cache: dict[str | None, tuple[dict[str, Any], float]] = {}

    def openapi() -> dict[str, Any]:
        champion = holder.current
        key = None if champion is None else champion.version
        cached = cache.get(key)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        live = None if champion is None else _live_examples(champion, reader)
        if live is not None:
            _insert(schema, live)
        cache[key] = (schema, float("inf") if live is not None else time.monotonic() + _RETRY_SECONDS)
        return schema

    return openapi
