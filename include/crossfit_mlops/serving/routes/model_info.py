"""``GET /model``: the champion that serves, where its features come from, how it got there; the
shadow challenger beside it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from crossfit_mlops.serving.deps import ChampionDep, HolderDep
from crossfit_mlops.serving.edge import EdgeRoute
from crossfit_mlops.serving.schemas import UNAVAILABLE, ErrorBody, ModelInfo, documented

router = APIRouter(tags=["model"], route_class=EdgeRoute)
_NO_MODEL = {name: UNAVAILABLE[name] for name in ("no_champion", "registry_unavailable")}


@router.get("/model", summary="what serves", response_model=ModelInfo,
            responses={503: documented(ErrorBody, "no champion loaded", _NO_MODEL)})  # fmt: skip
async def model(champion: ChampionDep, holder: HolderDep, request: Request) -> dict[str, Any]:
    described = {**champion.describe(), "refresh_seconds": holder.refresh_seconds, "refresh_error": holder.last_error}
    return {**described, "shadow": _shadow(request.app.state.shadow)}


def _shadow(shadow) -> dict[str, Any] | None:
    if shadow is None:
        return None
    challenger = shadow.holder.current
    keep = ("model_name", "version", "alias", "model_uri", "feature_version", "feature_service", "run_id",
            "snapshot_id", "training_metrics", "model_family", "loaded_at")  # fmt: skip
    return {
        "share": shadow.share,
        "challenger": None if challenger is None else {k: v for k, v in challenger.describe().items() if k in keep},
        "reason": shadow.holder.last_error if challenger is None else None,
        "outcomes": dict(shadow.counts),
        "last_error": shadow.last_error,
    }
