"""What a route receives: the champion holder, the feature reader and the limits of this app.

:func:`crossfit_mlops.serving.app.create_app` puts them on ``app.state``; routes ask for them with
the ``Annotated`` aliases below (``holder: HolderDep``), so a test or another deployment injects its
own by building the app around them. The dependencies are ``async``: FastAPI would run a plain
``def`` dependency in its thread pool, a thread hop on every request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from crossfit_mlops.serving.champion import Champion, ChampionHolder
from crossfit_mlops.serving.edge import Limits
from crossfit_mlops.serving.errors import ApiError
from crossfit_mlops.serving.online import OnlineFeatureReader


async def get_holder(request: Request) -> ChampionHolder:
    return request.app.state.holder


async def get_reader(request: Request) -> OnlineFeatureReader:
    return request.app.state.reader


async def get_limits(request: Request) -> Limits:
    return request.app.state.limits


HolderDep = Annotated[ChampionHolder, Depends(get_holder)]
ReaderDep = Annotated[OnlineFeatureReader, Depends(get_reader)]
LimitsDep = Annotated[Limits, Depends(get_limits)]


def current_champion(holder: ChampionHolder) -> Champion:
    """The champion that answers this request (read once: the whole request uses this model), or
    a 503 saying why there is none."""
    champion = holder.current
    if champion is None:
        code, message = holder.problem or ("no_champion", "no champion loaded")
        raise ApiError(503, code, message)
    return champion


async def get_champion(holder: HolderDep) -> Champion:
    return current_champion(holder)


ChampionDep = Annotated[Champion, Depends(get_champion)]
