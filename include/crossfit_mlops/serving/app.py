"""The prediction API: FastAPI on Feast's online store and the registry's ``@champion``.

``python -m crossfit_mlops serve`` runs it with uvicorn on :8000. Endpoints, one router a resource
(:mod:`crossfit_mlops.serving.routes`):

- ``POST /predict`` ``{"athlete_id": N}`` or ``{"athlete_ids": [...]}``: the athlete's features
  from the online store, through the FeatureService of the feature version the champion was
  trained on, then the champion's prediction;
- ``POST /predict/features`` ``{"features": {...}}`` or ``{"instances": [{...}, ...]}``: the same
  with the features in the body, checked against the model's signature and each feature's
  plausible range (:func:`crossfit_mlops.features.specs.feature_bounds`);
- ``GET /health`` (the process answers), ``GET /ready`` (``/predict`` can answer: a champion is
  loaded and the online store answers a lookup), ``GET /model`` (what serves, and the shadow
  challenger), ``GET /metrics`` (Prometheus), ``/docs`` (OpenAPI, from the models of
  :mod:`~crossfit_mlops.serving.schemas`, with examples taken from the data this process serves).

Live traffic (:mod:`~crossfit_mlops.serving.telemetry`): every answer carries an ``X-Request-ID``;
the prediction answers go to the prediction log (:mod:`~crossfit_mlops.serving.log_writer`) and
the 200s to the shadow ``@challenger`` (:mod:`~crossfit_mlops.serving.shadow`), both off the
response path.

The champion holder, the feature reader and the limits are injected: :func:`create_app` puts them
on ``app.state`` and the routes receive them through :mod:`~crossfit_mlops.serving.deps`.

Errors have one shape, ``{"error": <code>, "detail": <message>, ...}`` (the 422's ``detail`` is
FastAPI's list naming each field): ``unknown_athlete`` 404, ``batch_too_large`` /
``body_too_large`` / ``too_many_items`` 413, ``invalid_input`` 422 (NaN, Infinity, a number out of
range, a missing or unknown field ...), ``features_unavailable`` 424 (the athlete is known but has
no fresh online row), ``no_champion`` / ``registry_unavailable`` / ``starting`` /
``feature_store_unavailable`` 503. The limits and the error shape of the edge live in
:mod:`crossfit_mlops.serving.edge`, the handlers in :mod:`crossfit_mlops.serving.errors`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI

from crossfit_mlops.features.specs import FEATURE_SETS
from crossfit_mlops.serving.champion import ChampionHolder
from crossfit_mlops.serving.edge import Limits, RequestGuard, request_limits
from crossfit_mlops.serving.errors import add_error_handlers
from crossfit_mlops.serving.live_examples import openapi_with_live_examples
from crossfit_mlops.serving.log_writer import PredictionLogWriter
from crossfit_mlops.serving.online import OnlineFeatureReader
from crossfit_mlops.serving.routes import model_info, predict, prometheus, status
from crossfit_mlops.serving.shadow import ShadowScorer
from crossfit_mlops.serving.telemetry import ApiMetrics, LiveTraffic
from crossfit_mlops.settings import ServingSettings

log = logging.getLogger(__name__)


def _warm_index(reader: OnlineFeatureReader) -> None:
    for version in FEATURE_SETS:
        try:
            reader.known.get(version)
        except Exception:  # a request will try again and say what is wrong
            log.exception("could not index the %s feature tables", version)


def default_limits(max_batch: int = 100, serving: ServingSettings | None = None) -> Limits:
    """The request limits for ``max_batch`` athletes; ``serving``: the configured body and key limits."""
    names = [s.names for s in FEATURE_SETS.values()]
    if serving is None:
        return request_limits(max_batch, names)
    return request_limits(max_batch, names, serving.serving_max_body_bytes, serving.serving_max_items)


def create_app(
    holder: ChampionHolder,
    reader: OnlineFeatureReader,
    max_batch: int = 100,
    start_refresh: bool = True,
    limits: Limits | None = None,
    startup_wait: float = 10.0,
    *,
    writer: PredictionLogWriter | None = None,
    shadow: ShadowScorer | None = None,
    with_metrics: bool = True,
) -> FastAPI:
    """The API around an injected champion holder and feature reader.

    ``startup_wait``: how long the start waits for the first registry check (it runs in the
    background: the port opens after at most this long, whatever the registry does).
    ``writer``: the prediction log (None: off); ``shadow``: the shadow challenger (None: off; its
    holder is refreshed with the champion's); ``with_metrics``: ``GET /metrics`` and its counters.
    The app starts the threads of all three with itself and, at shutdown, scores and writes what
    they still hold.
    """
    limits = limits or default_limits(max_batch)
    telemetry = ApiMetrics(holder, shadow.holder if shadow else None, writer, shadow) if with_metrics else None
    if telemetry is not None and reader is not None:
        reader.on_read = telemetry.online_read

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        _start(holder, reader, writer, shadow, start_refresh)
        if start_refresh:
            await asyncio.to_thread(holder.wait_first_check, startup_wait)
        try:
            yield
        finally:
            await asyncio.to_thread(_stop, holder, writer, shadow, start_refresh)

    app = FastAPI(
        title="crossfit-mlops prediction API",
        version="1",
        description="Total lift (lb) of CrossFit athletes from the champion model and Feast's online store.",
        lifespan=lifespan,
    )
    app.state.holder, app.state.reader, app.state.limits = holder, reader, limits
    app.state.shadow, app.state.metrics = shadow, telemetry
    app.add_middleware(RequestGuard, limits=limits)
    if telemetry is not None or writer is not None or shadow is not None:
        app.add_middleware(LiveTraffic, metrics=telemetry, writer=writer, shadow=shadow)  # outermost
    add_error_handlers(app)
    routers = [predict.router, status.router, model_info.router]  # the hot routes are matched first
    for router in routers + ([prometheus.router] if telemetry is not None else []):
        app.include_router(router)
    app.openapi = openapi_with_live_examples(app)
    return app


def _start(holder, reader, writer, shadow, start_refresh: bool) -> None:
    if writer is not None:
        writer.start()
    if shadow is not None:
        shadow.start()
    if start_refresh:
        holder.start()
        if shadow is not None:
            shadow.holder.start()
        # build the athlete index off the event loop (else the first unknown id builds it)
        threading.Thread(target=_warm_index, args=(reader,), name="athlete-index", daemon=True).start()


def _stop(holder, writer, shadow, start_refresh: bool) -> None:
    """Refreshers stopped; the shadow scores what it holds, then the log writes everything."""
    if start_refresh:
        holder.stop()
        if shadow is not None:
            shadow.holder.stop()
    if shadow is not None:
        shadow.close()
    if writer is not None:
        writer.close()


def build_app(settings=None, refresh_seconds: float | None = None, max_batch: int | None = None, env=None) -> FastAPI:
    """The app wired to the settings' MLflow registry and Feast store (what ``serve`` runs).

    Besides the settings it uses the serving section (:class:`crossfit_mlops.settings.ServingSettings`:
    the body and key limits, the startup wait) read from ``env``; a bad value is a ValueError naming
    the variable.
    """
    from crossfit_mlops.features.feast_repo import get_store
    from crossfit_mlops.serving.online import KnownAthletes
    from crossfit_mlops.settings import get_settings, read_section

    serving = read_section(ServingSettings, env)
    settings = settings or get_settings(env)
    refresh = refresh_seconds if refresh_seconds is not None else settings.serving_refresh_seconds
    if not math.isfinite(refresh) or refresh <= 0:
        raise ValueError(f"CROSSFIT_SERVING_REFRESH_S={refresh}: give a number of seconds > 0")
    limits = default_limits(max_batch if max_batch is not None else settings.serving_max_batch, serving)
    startup_wait = serving.serving_startup_wait_s
    holder = ChampionHolder(settings.mlflow_tracking_uri, settings.registered_model_name, refresh_seconds=refresh)
    reader = OnlineFeatureReader(get_store(settings), KnownAthletes(settings))
    writer, shadow = live_traffic(settings, serving, holder, reader, refresh)
    return create_app(holder, reader, max_batch=limits.max_batch, limits=limits, startup_wait=startup_wait,
                      writer=writer, shadow=shadow, with_metrics=serving.serving_metrics)  # fmt: skip


def live_traffic(settings, serving: ServingSettings, holder: ChampionHolder, reader: OnlineFeatureReader,
                 refresh: float) -> tuple[PredictionLogWriter | None, ShadowScorer | None]:  # fmt: skip
    """The prediction log's writer and the shadow challenger the serving settings ask for."""
    from functools import partial

    from crossfit_mlops.prediction_log import live_root
    from crossfit_mlops.serving.champion import load_version
    from crossfit_mlops.tracking.aliases import CHALLENGER

    writer = None
    if serving.serving_log:
        writer = PredictionLogWriter(live_root(settings), serving.serving_log_flush_s, serving.serving_log_batch,
                                     serving.serving_log_queue)  # fmt: skip
    if serving.shadow_share <= 0 or writer is None:  # the shadow's answers go to the log only
        return writer, None
    challenger = ChampionHolder(settings.mlflow_tracking_uri, settings.registered_model_name, refresh_seconds=refresh,
                                loader=partial(load_version, alias=CHALLENGER), alias=CHALLENGER,
                                unless_same_as=holder)  # fmt: skip
    return writer, ShadowScorer(challenger, reader, writer.submit, serving.shadow_share, serving.shadow_queue)
