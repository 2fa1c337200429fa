"""The prediction API: FastAPI on Feast's online store and the registry's ``@champion``.

``python -m crossfit_mlops serve`` runs it with uvicorn on :8000. Endpoints:

- ``POST /predict`` ``{"athlete_id": N}`` or ``{"athlete_ids": [...]}``: the athlete's features
  from the online store, through the FeatureService of the feature version the champion was
  trained on, then the champion's prediction;
- ``POST /predict/features`` ``{"features": {...}}`` or ``{"instances": [{...}, ...]}``: the same
  with the features in the body, checked against the model's signature and each feature's
  plausible range (:func:`crossfit_mlops.features.specs.feature_bounds`);
- ``GET /health`` (the process answers), ``GET /ready`` (``/predict`` can answer: a champion is
  loaded and the online store answers a lookup), ``GET /model`` (what serves), ``/docs`` (OpenAPI,
  with examples taken from the data this process serves).

Errors have one shape, ``{"error": <code>, "detail": <message>, ...}`` (the 422's ``detail`` is
FastAPI's list naming each field): ``unknown_athlete`` 404, ``batch_too_large`` /
``body_too_large`` / ``too_many_items`` 413, ``invalid_input`` 422 (NaN, Infinity, a number out of
range, a missing or unknown field ...), ``features_unavailable`` 424 (the athlete is known but has
no fresh online row), ``no_champion`` / ``registry_unavailable`` / ``starting`` /
``feature_store_unavailable`` 503. The limits and the error shape of the edge live in
:mod:`crossfit_mlops.serving.edge`. Handlers are ``async`` and do their (short, CPU-bound) work on
the event loop: no thread hop on the hot path.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
from collections.abc import Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from crossfit_mlops.features.specs import FEATURE_SETS, Bounds
from crossfit_mlops.serving import openapi_docs
from crossfit_mlops.serving.champion import Champion, ChampionHolder
from crossfit_mlops.serving.edge import (
    EdgeRoute,
    Limits,
    RequestGuard,
    add_edge_handlers,
    error_response,
    limits_from_env,
)
from crossfit_mlops.serving.online import (
    FeatureStoreUnavailable,
    FeaturesUnavailable,
    OnlineFeatureReader,
    UnknownAthletes,
)

log = logging.getLogger(__name__)

INT64_MAX = 2**63 - 1  # Feast's entity key is an INT64
def _not_a_boolean(value: object) -> object:
    """JSON ``true`` is not athlete 1 (pydantic's lax int would take it as 1)."""
    if isinstance(value, bool):
        raise ValueError("an athlete id is a whole number, not a boolean")
    return value


AthleteId = Annotated[int, BeforeValidator(_not_a_boolean), Field(ge=0, le=INT64_MAX)]


class PredictRequest(BaseModel):
    """Exactly one of ``athlete_id`` and ``athlete_ids``."""

    model_config = ConfigDict(extra="forbid")
    athlete_id: AthleteId | None = Field(default=None, description="one athlete")
    athlete_ids: list[AthleteId] | None = Field(default=None, min_length=1, description="several athletes")

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


def _champion(holder: ChampionHolder) -> Champion:
    champion = holder.current
    if champion is None:
        code, message = holder.problem or ("no_champion", "no champion loaded")
        raise ApiError(503, code, message)
    return champion


# --- /predict/features: the body's values, checked -------------------------------------------------
def _value_problem(value: Any, integral: bool, bounds: Bounds | None) -> tuple[str, str] | None:
    """(message, type) of what is wrong with one feature value, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be {'an integer' if integral else 'a finite number'}", "type_error"
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range
        number = math.inf
    if not math.isfinite(number):
        return "must be a finite number", "finite_number"
    if integral and not number.is_integer():
        return "must be an integer", "type_error"
    if bounds is not None and not bounds.contains(number):
        return f"must be {bounds.describe()}", "out_of_range"
    return None


def _instance_errors(instance: dict[str, Any], loc: list, champion: Champion) -> tuple[list[dict], list[float]]:
    errors = [{"loc": [*loc, n], "msg": "Field required", "type": "missing"} for n in champion.columns if n not in instance]
    errors += [
        {"loc": [*loc, n], "msg": "not an input of the champion's signature", "type": "extra_forbidden"}
        for n in instance if n not in champion.column_types
    ]  # fmt: skip
    row = []
    for name in champion.columns:
        if name not in instance:
            continue
        value = instance[name]
        problem = _value_problem(value, champion.column_types[name] in {"long", "integer"}, champion.bounds.get(name))
        if problem is None:
            row.append(float(value))
        else:
            error = {"loc": [*loc, name], "msg": problem[0], "type": problem[1], "input": value}
            bounds = champion.bounds.get(name)
            if problem[1] == "out_of_range" and bounds is not None:
                error["ctx"] = {"gt" if bounds.exclusive else "ge": bounds.low, "lt" if bounds.exclusive else "le": bounds.high}
            errors.append(error)
    return errors, row


def _rows_from_body(body: FeaturesRequest, champion: Champion) -> list[list[float]]:
    """Rows in the champion's column order; a 422 naming every wrong field, FastAPI style."""
    single = body.features is not None
    instances = [body.features] if single else body.instances
    errors, rows = [], []
    for index, instance in enumerate(instances):
        found, row = _instance_errors(instance, ["body", "features"] if single else ["body", "instances", index], champion)
        errors += found
        rows.append(row)
    if errors:
        raise RequestValidationError(errors)
    return rows


# --- handlers --------------------------------------------------------------------------------------
def _retry_after(holder: ChampionHolder) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(holder.refresh_seconds)))}


def _add_error_handlers(app: FastAPI, holder: ChampionHolder) -> None:
    add_edge_handlers(app)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = _retry_after(holder) if exc.status == 503 else None
        return error_response(exc.status, exc.error, exc.detail, headers=headers, **exc.extra)

    @app.exception_handler(UnknownAthletes)
    async def _unknown(_: Request, exc: UnknownAthletes) -> JSONResponse:
        extra = {"unreadable_feature_tables": exc.unreadable} if exc.unreadable else {}
        return error_response(404, "unknown_athlete", str(exc), athlete_ids=exc.athlete_ids, **extra)

    @app.exception_handler(FeaturesUnavailable)
    async def _unavailable(_: Request, exc: FeaturesUnavailable) -> JSONResponse:
        return error_response(
            424, "features_unavailable", str(exc),
            athlete_ids=list(exc.problems), reasons={str(k): v for k, v in exc.problems.items()},
        )  # fmt: skip

    @app.exception_handler(FeatureStoreUnavailable)
    async def _store_down(_: Request, exc: FeatureStoreUnavailable) -> JSONResponse:
        return error_response(503, "feature_store_unavailable", str(exc), headers=_retry_after(holder))


def _readiness(holder: ChampionHolder, reader: OnlineFeatureReader) -> JSONResponse:
    """200 when ``/predict`` can answer: a champion is loaded and the online store answers the
    lookup ``/predict`` makes (through the Feast registry, into the view's table)."""
    champion = holder.current
    if champion is None:
        code, message = holder.problem or ("no_champion", "no champion loaded")
    else:
        message = reader.check(champion.feature_version, champion.columns)
        code = "feature_store_unavailable"
    if message is not None:
        body = {"ready": False, "error": code, "detail": message, "reason": message}
        return JSONResponse(body, status_code=503, headers=_retry_after(holder))
    body = {"ready": True, "model_version": champion.version, "feature_version": champion.feature_version}
    if holder.problem is not None:  # still serving what is loaded; say what the last refresh hit
        body["refresh_error"] = holder.last_error
    unreadable = reader.known.problems(champion.feature_version)
    if unreadable:
        body["warnings"] = [f"feature table {name} is not indexed: {why}" for name, why in sorted(unreadable.items())]
    return JSONResponse(body)


def _add_status_routes(app: FastAPI, holder: ChampionHolder, reader: OnlineFeatureReader, docs: Mapping) -> None:
    @app.get("/health", summary="the process answers")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="/predict can answer", response_class=JSONResponse, responses=docs["/ready"])
    async def ready():
        return _readiness(holder, reader)

    @app.get("/model", summary="what serves", responses=docs["/model"])
    async def model() -> dict[str, Any]:
        champion = _champion(holder)
        return {**champion.describe(), "refresh_seconds": holder.refresh_seconds, "refresh_error": holder.last_error}


def _add_predict_routes(app: FastAPI, holder: ChampionHolder, reader: OnlineFeatureReader, limits: Limits, docs) -> None:
    # the hot endpoints return a JSONResponse themselves: FastAPI would otherwise validate and
    # re-encode the returned dict against the annotation (about 0.2 ms a request)
    @app.post("/predict", response_class=JSONResponse, responses=docs["/predict"])
    async def predict(body: PredictRequest):
        champion = _champion(holder)  # read once: the whole request uses this model
        ids = [body.athlete_id] if body.athlete_id is not None else body.athlete_ids
        _check_batch(len(ids), limits.max_batch)
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

    @app.post("/predict/features", response_class=JSONResponse, responses=docs["/predict/features"])
    async def predict_features(body: FeaturesRequest):
        champion = _champion(holder)
        _check_batch(1 if body.features is not None else len(body.instances), limits.max_batch)
        rows = _rows_from_body(body, champion)
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


def _warm_index(reader: OnlineFeatureReader) -> None:
    for version in FEATURE_SETS:
        try:
            reader.known.get(version)
        except Exception:  # a request will try again and say what is wrong
            log.exception("could not index the %s feature tables", version)


def default_limits(max_batch: int = 100, env: Mapping[str, str] | None = None) -> Limits:
    return limits_from_env({} if env is None else env, max_batch, [s.names for s in FEATURE_SETS.values()])


def create_app(
    holder: ChampionHolder,
    reader: OnlineFeatureReader,
    max_batch: int = 100,
    start_refresh: bool = True,
    limits: Limits | None = None,
    startup_wait: float = 10.0,
) -> FastAPI:
    """The API around an injected champion holder and feature reader.

    ``startup_wait``: how long the start waits for the first registry check (it runs in the
    background: the port opens after at most this long, whatever the registry does).
    """
    limits = limits or default_limits(max_batch)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if start_refresh:
            holder.start()
            await asyncio.to_thread(holder.wait_first_check, startup_wait)
            # build the athlete index off the event loop (else the first unknown id builds it)
            threading.Thread(target=_warm_index, args=(reader,), name="athlete-index", daemon=True).start()
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
    app.router.route_class = EdgeRoute
    app.add_middleware(RequestGuard, limits=limits)
    docs = openapi_docs.responses(holder.model_name, limits)
    _add_error_handlers(app, holder)
    _add_status_routes(app, holder, reader, docs)
    _add_predict_routes(app, holder, reader, limits, docs)
    app.openapi = openapi_docs.with_live_examples(app, holder, reader, get_openapi)
    return app


def _env_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}={raw!r}: give a number of seconds >= 0")
    return value


def build_app(settings=None, refresh_seconds: float | None = None, max_batch: int | None = None, env=None) -> FastAPI:
    """The app wired to the settings' MLflow registry and Feast store (what ``serve`` runs).

    Besides the settings it reads ``CROSSFIT_SERVING_MAX_BODY_BYTES``, ``CROSSFIT_SERVING_MAX_ITEMS``
    (see :func:`crossfit_mlops.serving.edge.limits_from_env`) and ``CROSSFIT_SERVING_STARTUP_WAIT_S``
    (10); a bad value is a ValueError naming the variable.
    """
    from crossfit_mlops.features.store import get_store
    from crossfit_mlops.serving.online import KnownAthletes
    from crossfit_mlops.settings import get_settings

    env = os.environ if env is None else env
    settings = settings or get_settings()
    refresh = refresh_seconds if refresh_seconds is not None else settings.serving_refresh_seconds
    if not math.isfinite(refresh) or refresh <= 0:
        raise ValueError(f"CROSSFIT_SERVING_REFRESH_S={refresh}: give a number of seconds > 0")
    limits = default_limits(max_batch if max_batch is not None else settings.serving_max_batch, env)
    startup_wait = _env_seconds(env, "CROSSFIT_SERVING_STARTUP_WAIT_S", 10.0)
    holder = ChampionHolder(settings.mlflow_tracking_uri, settings.registered_model_name, refresh_seconds=refresh)
    reader = OnlineFeatureReader(get_store(settings), KnownAthletes(settings))
    return create_app(holder, reader, max_batch=limits.max_batch, limits=limits, startup_wait=startup_wait)
