"""``GET /health`` (the process answers) and ``GET /ready`` (``/predict`` can answer)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from crossfit_mlops.serving.deps import HolderDep, ReaderDep
from crossfit_mlops.serving.edge import EdgeRoute
from crossfit_mlops.serving.errors import retry_after
from crossfit_mlops.serving.schemas import UNAVAILABLE, Health, NotReady, Readiness, documented

router = APIRouter(tags=["status"], route_class=EdgeRoute)
_NOT_READY = {name: {"ready": False, **body, "reason": body["detail"]} for name, body in UNAVAILABLE.items()}


@router.get("/health", summary="the process answers", response_model=Health)
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="/predict can answer",
    response_model=Readiness,
    responses={503: documented(NotReady, "/predict cannot answer; the reason says why", _NOT_READY)},
)
async def ready(holder: HolderDep, reader: ReaderDep) -> JSONResponse:
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
        return JSONResponse(body, status_code=503, headers=retry_after(holder))
    body = {"ready": True, "model_version": champion.version, "feature_version": champion.feature_version}
    if holder.problem is not None:  # still serving what is loaded; say what the last refresh hit
        body["refresh_error"] = holder.last_error
    unreadable = reader.known.problems(champion.feature_version)
    if unreadable:
        body["warnings"] = [f"feature table {name} is not indexed: {why}" for name, why in sorted(unreadable.items())]
    return JSONResponse(body)
