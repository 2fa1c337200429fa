"""``GET /metrics``: the API's Prometheus metrics, in the text exposition format.

Requests by route and status, the latency histogram, online-store lookups and misses, the model
versions loaded (champion and shadow challenger), the prediction log's rows written and dropped,
the shadow's outcomes (:class:`crossfit_mlops.serving.telemetry.ApiMetrics`). Not logged.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

router = APIRouter(tags=["status"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})  # fmt: skip
async def metrics(request: Request) -> Response:
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)
