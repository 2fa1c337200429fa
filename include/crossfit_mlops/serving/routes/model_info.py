"""``GET /model``: the champion that serves, where its features come from, how it got there."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from crossfit_mlops.serving.deps import ChampionDep, HolderDep
from crossfit_mlops.serving.edge import EdgeRoute
from crossfit_mlops.serving.schemas import UNAVAILABLE, ErrorBody, ModelInfo, documented

router = APIRouter(tags=["model"], route_class=EdgeRoute)
_NO_MODEL = {name: UNAVAILABLE[name] for name in ("no_champion", "registry_unavailable")}


@router.get("/model", summary="what serves", response_model=ModelInfo,
            responses={503: documented(ErrorBody, "no champion loaded", _NO_MODEL)})  # fmt: skip
async def model(champion: ChampionDep, holder: HolderDep) -> dict[str, Any]:
    return {**champion.describe(), "refresh_seconds": holder.refresh_seconds, "refresh_error": holder.last_error}
