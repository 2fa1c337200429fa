"""The prediction API: FastAPI on Feast's online store and the registry's ``@champion``.

``python -m crossfit_mlops serve`` runs it with uvicorn on :8000. Endpoints:

- ``POST /predict`` ``{"athlete_id": 2554}`` or ``{"athlete_ids": [...]}``: the athlete's features
  from the online store, through the FeatureService of the feature version the champion was
  trained on, then the champion's prediction;
- ``POST /predict/features`` ``{"features": {...}}`` or ``{"instances": [{...}, ...]}``: the same
  with the features in the body, checked against the model's signature;
- ``GET /health`` (the process answers), ``GET /ready`` (a champion and the store are loaded),
  ``GET /model`` (what serves), ``/docs`` (OpenAPI).

Errors have one shape, ``{"error": <code>, "detail": <message>, ...}``: ``unknown_athlete`` 404,
``features_unavailable`` 424 (the athlete is known but the online row is missing or past its
TTL), ``batch_too_large`` 413, ``no_champion`` 503; a malformed body is FastAPI's 422 naming the
field. Handlers are ``async`` and do their (short, CPU-bound) work on the event loop: no thread
hop on the hot path.
"""

from __future__ import annotations

import logging
import math
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from crossfit_mlops.serving.champion import ChampionHolder
from crossfit_mlops.serving.features import (
    FeaturesUnavailable,
    OnlineFeatureReader,
    UnknownAthletes,
)
from crossfit_mlops.tracking.registry import NoChampion

log = logging.getLogger(__name__)


class PredictRequest(BaseModel):
    """Exactly one of ``athlete_id`` and ``athlete_ids``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"athlete_id": 2554}]})
    athlete_id: int | None = Field(default=None, ge=0, description="one athlete")
    athlete_ids: list[int] | None = Field(default=None, min_length=1, description="several athletes")

    @model_validator(mode="after")
    def _one_of(self) -> PredictRequest:
        if (self.athlete_id is None) == (self.athlete_ids is None):
            raise ValueError("give exactly one of athlete_id and athlete_ids")
        return self


class FeaturesRequest(BaseModel):
    """Exactly one of ``features`` (one row) and ``instances`` (several rows)."""

    model_config = ConfigDict(extra="forbid")
    features: dict[str, Any] | None = None
    instances: list[dict[str, Any]] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_of(self) -> FeaturesRequest:
        if (self.features is None) == (self.instances is None):
            raise ValueError("give exactly one of features and instances")
        return self


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str, **extra: Any):
        self.status, self.error, self.detail, self.extra = status, error, detail, extra
        super().__init__(detail)


def _check_batch(size: int, limit: int) -> None:
    if size > limit:
        raise ApiError(413, "batch_too_large", f"{size} rows in one request; the limit is {limit}", limit=limit)


def _champion(holder: ChampionHolder):
    try:
        return holder.require()
    except NoChampion as exc:
        raise ApiError(503, "no_champion", str(exc)) from None


def _rows_from_body(body: FeaturesRequest, columns: tuple[str, ...], types: dict[str, str]) -> list[list[float]]:
    """Rows in ``columns`` order; a 422 listing every wrong field, FastAPI style."""
    instances = [body.features] if body.features is not None else body.instances
    where = ["body", "features"] if body.features is not None else None
    errors, rows = [], []
    for index, instance in enumerate(instances):
        loc = where or ["body", "instances", index]
        for name in columns:
            if name not in instance:
                errors.append({"loc": [*loc, name], "msg": "Field required", "type": "missing"})
        for name in instance:
            if name not in types:
                errors.append(
                    {"loc": [*loc, name], "msg": "not an input of the champion's signature", "type": "extra_forbidden"}
                )
        row = []
        for name in columns:
            value = instance.get(name)
            if name not in instance:
                continue
            integral = types[name] in {"long", "integer"}
            bad = (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or (integral and not float(value).is_integer())
                or not math.isfinite(float(value))
            )
            if bad:
                kind = "an integer" if integral else "a finite number"
                errors.append({"loc": [*loc, name], "msg": f"must be {kind}", "type": "type_error", "input": value})
            else:
                row.append(float(value))
        rows.append(row)
    if errors:
        raise RequestValidationError(errors)
    return rows


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.error, "detail": exc.detail, **exc.extra}, status_code=exc.status)

    @app.exception_handler(UnknownAthletes)
    async def _unknown(_: Request, exc: UnknownAthletes) -> JSONResponse:
        return JSONResponse(
            {"error": "unknown_athlete", "detail": str(exc), "athlete_ids": exc.athlete_ids}, status_code=404
        )

    @app.exception_handler(FeaturesUnavailable)
    async def _unavailable(_: Request, exc: FeaturesUnavailable) -> JSONResponse:
        return JSONResponse(
            {
                "error": "features_unavailable",
                "detail": str(exc),
                "athlete_ids": list(exc.problems),
                "reasons": {str(k): v for k, v in exc.problems.items()},
            },
            status_code=424,
        )


def _add_status_routes(app: FastAPI, holder: ChampionHolder, reader: OnlineFeatureReader) -> None:
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        champion = holder.current
        if champion is None:
            return JSONResponse({"ready": False, "reason": holder.last_error}, status_code=503)
        try:
            reader.service(champion.feature_version)
        except Exception as exc:  # registry of the feature store unreadable
            return JSONResponse({"ready": False, "reason": f"feature store: {exc}"}, status_code=503)
        return JSONResponse(
            {"ready": True, "model_version": champion.version, "feature_version": champion.feature_version}
        )

    @app.get("/model")
    async def model() -> dict[str, Any]:
        champion = _champion(holder)
        return {**champion.describe(), "refresh_seconds": holder.refresh_seconds, "refresh_error": holder.last_error}


def _add_predict_routes(app: FastAPI, holder: ChampionHolder, reader: OnlineFeatureReader, max_batch: int) -> None:
    # the hot endpoints return a JSONResponse themselves: FastAPI would otherwise validate and
    # re-encode the returned dict against the annotation (about 0.2 ms a request)
    @app.post("/predict", response_class=JSONResponse)
    async def predict(body: PredictRequest):
        champion = _champion(holder)  # read once: the whole request uses this model
        ids = [body.athlete_id] if body.athlete_id is not None else body.athlete_ids
        _check_batch(len(ids), max_batch)
        features = reader.read(ids, champion.feature_version, champion.columns)
        predictions = champion.predict([f.values for f in features])
        common = {
            "model_name": champion.model_name,
            "model_version": champion.version,
            "feature_version": champion.feature_version,
        }
        items = [
            {"athlete_id": f.athlete_id, "prediction": p, "features_at": f.event_timestamp.isoformat()}
            for f, p in zip(features, predictions, strict=True)
        ]
        if body.athlete_id is not None:
            return JSONResponse({**items[0], **common})
        return JSONResponse({"predictions": items, **common})

    @app.post("/predict/features", response_class=JSONResponse)
    async def predict_features(body: FeaturesRequest):
        champion = _champion(holder)
        _check_batch(1 if body.features is not None else len(body.instances), max_batch)
        rows = _rows_from_body(body, champion.columns, champion.column_types)
        predictions = champion.predict(rows)
        return JSONResponse(
            {
                "predictions": predictions,
                "model_name": champion.model_name,
                "model_version": champion.version,
                "feature_version": champion.feature_version,
                "scored_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            }
        )


def create_app(
    holder: ChampionHolder,
    reader: OnlineFeatureReader,
    max_batch: int = 100,
    start_refresh: bool = True,
) -> FastAPI:
    """The API around an injected champion holder and feature reader."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if start_refresh:
            holder.start()
        try:
            yield
        finally:
            if start_refresh:
                holder.stop()

    app = FastAPI(
        title="crossfit-mlops prediction API",
        version="1",
        description="Total lift (lb) of CrossFit athletes from the champion model and Feast's online store.",
        lifespan=lifespan,
    )
    _add_error_handlers(app)
    _add_status_routes(app, holder, reader)
    _add_predict_routes(app, holder, reader, max_batch)
    return app


def build_app(settings=None, refresh_seconds: float | None = None, max_batch: int | None = None) -> FastAPI:
    """The app wired to the settings' MLflow registry and Feast store (what ``serve`` runs)."""
    from crossfit_mlops.features.store import get_store
    from crossfit_mlops.serving.features import KnownAthletes
    from crossfit_mlops.settings import get_settings

    settings = settings or get_settings()
    holder = ChampionHolder(
        settings.mlflow_tracking_uri,
        settings.registered_model_name,
        refresh_seconds=refresh_seconds if refresh_seconds is not None else settings.serving_refresh_seconds,
    )
    reader = OnlineFeatureReader(get_store(settings), KnownAthletes(settings))
    return create_app(holder, reader, max_batch=max_batch if max_batch is not None else settings.serving_max_batch)
