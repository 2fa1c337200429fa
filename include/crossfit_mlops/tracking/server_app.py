"""The project's MLflow server app: MLflow's own, plus one answer MLflow does not give and its
Prometheus metrics.

``mlflow server --app-name crossfit`` (or ``crossfit-basic-auth`` when the stack turns basic-auth
on) loads these factories through the ``mlflow.app`` entry points in ``pyproject.toml``. They
return MLflow's FastAPI app unchanged except for one exception handler: an artifact upload that
hits a full disk (ENOSPC, a quota, a file too large) is answered ``507 Insufficient Storage`` with
a message that says so. MLflow itself answers it with a bare 500, which its client retries as a
transient failure until it gives up with ``MaxRetryError``, and "No space left on device" was only
in the server's log. The client does not retry a 507; the training task turns it into a failure
without retries (see :func:`crossfit_mlops.tracking.store_full`).

With ``PROMETHEUS_MULTIPROC_DIR`` set (the stack sets it in the server's own environment, to a
folder of its state directory), the app also answers ``GET /metrics`` in Prometheus' text format:
requests by method, status and endpoint, and their latency, summed over the server's uvicorn
workers (prometheus_client's multiprocess mode, one file per worker in that folder). MLflow's
own ``--expose-prometheus`` needs ``prometheus-flask-exporter``, which the lock does not hold;
``prometheus_client`` it does.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from crossfit_mlops.storage import is_disk_full

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

INSUFFICIENT_STORAGE = 507
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable
METRICS_PATH = "/metrics"


def create_app() -> FastAPI:
    """MLflow's tracking server (tracking, registry, proxied artifacts), without authentication."""
    from mlflow.server.fastapi_app import app

    return _with_project_additions(app)


def create_app_with_auth() -> FastAPI:
    """The same with MLflow's basic-auth (users database, permissions): ``--app-name basic-auth``."""
    from mlflow.server.auth import create_app as with_basic_auth

    return _with_project_additions(with_basic_auth())


def _with_project_additions(app: FastAPI) -> FastAPI:
    """The 507 for a full store; the metrics when their folder is given (created if missing, as
    MLflow's own exporter does: a missing folder would fail every request)."""
    app.add_exception_handler(OSError, _store_full)
    if os.environ.get(METRICS_DIR_ENV):
        os.makedirs(os.environ[METRICS_DIR_ENV], exist_ok=True)
        app.add_middleware(PrometheusMetrics)
    return app


def endpoint_of(path: str) -> str:
    """A bounded label for a request path: the REST endpoint (``/api/2.0/mlflow/runs/search``), the
    artifact proxy without the artifact's path, else the first segment (``/static-files``)."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] in {"api", "ajax-api"}:
        if parts[2] == "mlflow-artifacts":
            return "/" + "/".join(parts[:4])
        return "/" + "/".join(parts[:5])
    return "/" + (parts[0] if parts else "")


class PrometheusMetrics:
    """ASGI middleware: counts every HTTP request and its latency, and answers ``GET /metrics``
    with the metrics of every worker (MLflow's app mounts its Flask part at ``/``, so a route added
    after it would never be reached)."""

    def __init__(self, app: Any) -> None:
        from prometheus_client import Counter, Histogram

        self.app = app
        labels = ("method", "status", "endpoint")
        # named mlflow_server_*: MLflow's --expose-prometheus (prometheus-flask-exporter) writes
        # mlflow_http_request_* into the same folder, and the two would merge into one metric.
        # no registry: in multiprocess mode the values go to the worker's file, and /metrics reads
        # every worker's files (a second app in one process would not collide on names either)
        self.requests = Counter("mlflow_server_http_requests_total", "HTTP requests to the MLflow server", labels, registry=None)
        self.latency = Histogram(
            "mlflow_server_http_request_duration_seconds", "latency of the MLflow server's HTTP requests", labels, registry=None
        )

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == METRICS_PATH and scope["method"] == "GET":
            await self._answer_metrics(send)
            return
        method, endpoint = scope["method"], endpoint_of(scope["path"])
        status = {"code": 500, "counted": False}

        async def record_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                # counted before the client can see the answer: a /metrics read after a response
                # always includes it (the other worker may answer that read)
                status["code"] = message["status"]
                self.requests.labels(method, str(status["code"]), endpoint).inc()
                status["counted"] = True
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, record_status)
        finally:
            if not status["counted"]:  # the app raised before answering: a 500
                self.requests.labels(method, "500", endpoint).inc()
            self.latency.labels(method, str(status["code"]), endpoint).observe(time.perf_counter() - started)

    @staticmethod
    async def _answer_metrics(send: Any) -> None:
        from prometheus_client import (
            CONTENT_TYPE_LATEST,
            CollectorRegistry,
            generate_latest,
            multiprocess,
        )

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())]})
        await send({"type": "http.response.body", "body": body})


async def _store_full(request: Request, exc: Exception) -> JSONResponse:
    """507 with the reason for a full disk; any other OS error stays MLflow's own 500."""
    from fastapi.responses import JSONResponse

    if not (isinstance(exc, OSError) and is_disk_full(exc)):
        raise exc
    return JSONResponse(
        status_code=INSUFFICIENT_STORAGE,
        content={
            "error_code": "RESOURCE_EXHAUSTED",
            "message": f"MLflow's artifact store is full: no space left on device "
            f"(writing {request.url.path}): {exc}",
        },
    )
