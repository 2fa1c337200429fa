"""The API's own errors, and the handlers that answer every error in the one shape.

Handlers are registered on the app (:func:`add_error_handlers`): the edge's (validation, HTTP),
:class:`ApiError` raised by the routes, and the feature reader's typed lookups (unknown athlete
404, no fresh row 424, store down 503). A 503 carries ``Retry-After``: the champion holder's
refresh period, read from ``app.state``.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from crossfit_mlops.serving.champion import ChampionHolder
from crossfit_mlops.serving.edge import add_edge_handlers, error_response
from crossfit_mlops.serving.online import (
    FeatureStoreUnavailable,
    FeaturesUnavailable,
    UnknownAthletes,
)


class ApiError(Exception):
    """An answer other than 200, raised by a route: status, stable code, message, extra fields."""

    def __init__(self, status: int, error: str, detail: str, **extra: Any):
        self.status, self.error, self.detail, self.extra = status, error, detail, extra
        super().__init__(detail)


def retry_after(holder: ChampionHolder) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(holder.refresh_seconds)))}


def add_error_handlers(app: FastAPI) -> None:
    add_edge_handlers(app)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = retry_after(request.app.state.holder) if exc.status == 503 else None
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
    async def _store_down(request: Request, exc: FeatureStoreUnavailable) -> JSONResponse:
        return error_response(503, "feature_store_unavailable", str(exc), headers=retry_after(request.app.state.holder))
