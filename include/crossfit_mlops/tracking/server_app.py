"""The project's MLflow server app: MLflow's own, plus one answer MLflow does not give.

``mlflow server --app-name crossfit`` (or ``crossfit-basic-auth`` when the stack turns basic-auth
on) loads these factories through the ``mlflow.app`` entry points in ``pyproject.toml``. They
return MLflow's FastAPI app unchanged except for one exception handler: an artifact upload that
hits a full disk (ENOSPC, a quota, a file too large) is answered ``507 Insufficient Storage`` with
a message that says so. MLflow itself answers it with a bare 500, which its client retries as a
transient failure until it gives up with ``MaxRetryError``, and "No space left on device" was only
in the server's log. The client does not retry a 507; the training task turns it into a failure
without retries (see :func:`crossfit_mlops.tracking.store_full`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crossfit_mlops.storage import is_disk_full

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

INSUFFICIENT_STORAGE = 507


def create_app() -> FastAPI:
    """MLflow's tracking server (tracking, registry, proxied artifacts), without authentication."""
    from mlflow.server.fastapi_app import app

    return _explain_a_full_store(app)


def create_app_with_auth() -> FastAPI:
    """The same with MLflow's basic-auth (users database, permissions): ``--app-name basic-auth``."""
    from mlflow.server.auth import create_app as with_basic_auth

    return _explain_a_full_store(with_basic_auth())


def _explain_a_full_store(app: FastAPI) -> FastAPI:
    app.add_exception_handler(OSError, _store_full)
    return app


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
