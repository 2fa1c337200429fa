"""``POST /predict`` (features from the online store) and ``POST /predict/features`` (in the body).

The handlers return a ``JSONResponse`` they build themselves: the ``response_model`` documents the
answer, and FastAPI does not validate and re-encode a returned response (it would, for a dict,
on the hot path). They are ``async`` and do their short, CPU-bound work on the event loop.

The champion is read after the body is validated (not as a dependency, which FastAPI would solve
first): an invalid request is a 422 whatever the registry does, as it always was.

Each handler fills in the request's :class:`~crossfit_mlops.serving.telemetry.Exchange` (when the
prediction log or the shadow is on): the champion, the athletes, the feature values it was given
and its predictions. The middleware logs them once the answer is sent.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from crossfit_mlops.serving.deps import HolderDep, LimitsDep, ReaderDep, current_champion
from crossfit_mlops.serving.edge import EdgeRoute
from crossfit_mlops.serving.errors import ApiError
from crossfit_mlops.serving.inputs import rows_from_body
from crossfit_mlops.serving.schemas import (
    BatchPredictions,
    FeaturePredictions,
    FeaturesRequest,
    Prediction,
    PredictRequest,
    error_responses,
)
from crossfit_mlops.serving.telemetry import EXCHANGE, Exchange

router = APIRouter(prefix="/predict", tags=["predict"], route_class=EdgeRoute)


def _check_batch(size: int, limit: int) -> None:
    if size > limit:
        raise ApiError(413, "batch_too_large", f"{size} rows in one request; the limit is {limit}", limit=limit)


@router.post(
    "",
    summary="predict from the online store",
    response_model=Prediction | BatchPredictions,
    responses={200: {"description": "one prediction, or one per athlete"}, **error_responses(404, 413, 422, 424, 503)},
)
async def predict(
    body: PredictRequest, holder: HolderDep, reader: ReaderDep, limits: LimitsDep, request: Request
) -> JSONResponse:
    """The athletes' features from Feast's online store, through the FeatureService of the feature
    version the champion was trained on, then the champion's prediction."""
    exchange: Exchange | None = request.scope.get(EXCHANGE)
    ids = [body.athlete_id] if body.athlete_id is not None else body.athlete_ids
    if exchange is not None:
        exchange.athlete_ids = ids
    champion = current_champion(holder)
    if exchange is not None:
        exchange.champion = champion
    _check_batch(len(ids), limits.max_batch)
    features = reader.read(ids, champion.feature_version, champion.columns)
    rows = [f.values for f in features]
    predictions = champion.predict(rows)
    if exchange is not None:
        exchange.rows, exchange.predictions = rows, predictions
        exchange.features_at = [f.event_timestamp for f in features]
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


@router.post(
    "/features",
    summary="predict from features in the body",
    response_model=FeaturePredictions,
    responses={200: {"description": "one prediction per row"}, **error_responses(413, 422, 503)},
)
async def predict_features(body: FeaturesRequest, holder: HolderDep, limits: LimitsDep, request: Request) -> JSONResponse:
    """The features in the body, checked against the champion's signature and each feature's
    plausible range (:func:`crossfit_mlops.features.specs.feature_bounds`), then its prediction."""
    exchange: Exchange | None = request.scope.get(EXCHANGE)
    champion = current_champion(holder)
    if exchange is not None:
        exchange.champion = champion
    _check_batch(1 if body.features is not None else len(body.instances), limits.max_batch)
    rows = rows_from_body(body, champion)
    predictions = champion.predict(rows)
    if exchange is not None:
        exchange.rows, exchange.predictions = rows, predictions
    return JSONResponse(
        {
            "predictions": predictions,
            "model_name": champion.model_name,
            "model_version": champion.version,
            "feature_version": champion.feature_version,
            "scored_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
    )
