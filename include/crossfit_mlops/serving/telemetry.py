"""Live traffic: a request id on every answer, the Prometheus metrics, the prediction log's entries.

:class:`LiveTraffic` is the outermost ASGI middleware (around the request guard, so refused
requests are seen too). For every request it

- takes the client's ``X-Request-ID`` when it is a plain token (:data:`REQUEST_ID`: 1-64 of
  ``A-Z a-z 0-9 . _ : -``; a proxy's id then follows the request through), else makes one
  (32 hex digits), and returns it in the ``X-Request-ID`` response header;
- counts it by route and status, and its time in a latency histogram (:class:`ApiMetrics`);
- for ``/predict`` and ``/predict/features``: puts an :class:`Exchange` in the ASGI scope, which
  the route fills in (athlete ids, features, the champion, predictions); once the answer is sent,
  hands the champion's :class:`~crossfit_mlops.serving.log_writer.Answer` to the log writer (an
  error answer: its status and error code) and a 200 to the shadow challenger. Both are O(1)
  appends to bounded queues; the writing and scoring happen on their own threads.

``GET /metrics`` (:func:`metrics_response`) is not logged. Metrics live in a registry of the app
(not prometheus-client's global one), so several apps in one process (tests) do not collide.
``serve`` runs one uvicorn process (no workers), so one registry sees every request.
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from crossfit_mlops.prediction_log import CHAMPION, ROUTES
from crossfit_mlops.serving.log_writer import QUEUE_FULL, WRITE_FAILED, Answer

if TYPE_CHECKING:
    from crossfit_mlops.serving.champion import Champion, ChampionHolder
    from crossfit_mlops.serving.log_writer import PredictionLogWriter
    from crossfit_mlops.serving.shadow import ShadowScorer

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
EXCHANGE = "crossfit.exchange"  # the ASGI scope key of the request's Exchange
KNOWN_ROUTES = frozenset({*ROUTES, "/health", "/ready", "/model", "/metrics", "/docs", "/openapi.json"})
LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_ERROR_BODY_BYTES = 4096  # an error body longer than this is not parsed for its code


@dataclass(slots=True)
class Exchange:
    """What the log needs of one prediction request; the route fills it in as it goes."""

    request_id: str
    logged_at: float
    route: str
    champion: Champion | None = None
    athlete_ids: list[int] | None = None
    rows: list[list[float]] | None = None
    predictions: list[float] | None = None
    features_at: list | None = None  # /predict: each row's online-store time


class ApiMetrics:
    """The API's Prometheus metrics, in a registry of their own.

    The counts are plain numbers of this object, exposed through a collector when ``/metrics`` is
    asked for; what other parts already count (the log writer, the shadow, the models that serve)
    is read then too. Not prometheus-client's metric objects: importing Feast sets
    ``PROMETHEUS_MULTIPROC_DIR`` (``feast/metrics.py``), which turns every such object in the
    process into a file-backed multiprocess value, shared by name across apps and written to a
    temp folder on each increment.
    """

    def __init__(self, champion: ChampionHolder, challenger: ChampionHolder | None = None,
                 writer: PredictionLogWriter | None = None, shadow: ShadowScorer | None = None):  # fmt: skip
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests: dict[tuple[str, int], int] = {}  # (route, status) -> answers
        self.latency: dict[str, list] = {}  # route -> [bucket counts..., +Inf count, sum of seconds]
        self.lookups: dict[str, int] = {}  # feature version -> athletes looked up
        self.misses: dict[tuple[str, str], int] = {}  # (feature version, reason) -> athletes
        self._lock = threading.Lock()  # the online reads come from the event loop and the shadow's thread
        self.registry.register(_LiveCollector(self, champion, challenger, writer, shadow))

    def observe(self, route: str, status: int, seconds: float) -> None:
        """One answer (on the event loop only: no lock)."""
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get(route)
        if histogram is None:
            histogram = self.latency[route] = [0] * (len(LATENCY_BUCKETS) + 1) + [0.0]
        histogram[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        histogram[-1] += seconds

    def online_read(self, feature_version: str, asked: int, unknown: int, unavailable: int) -> None:
        """The online reader's hook: one lookup of ``asked`` athletes and its misses."""
        with self._lock:
            self.lookups[feature_version] = self.lookups.get(feature_version, 0) + asked
            for reason, count in (("unknown", unknown), ("unavailable", unavailable)):
                if count:
                    self.misses[(feature_version, reason)] = self.misses.get((feature_version, reason), 0) + count

    def families(self):
        """The request, latency and online-store metrics as Prometheus metric families."""
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        requests = CounterMetricFamily("crossfit_api_requests", "HTTP requests answered, by route and status",
                                       labels=["route", "status"])  # fmt: skip
        for (route, status), count in sorted(self.requests.items()):
            requests.add_metric([route, str(status)], count)
        latency = HistogramMetricFamily("crossfit_api_request_duration_seconds", "time in the API per request, by route",
                                        labels=["route"])  # fmt: skip
        for route, histogram in sorted(self.latency.items()):
            cumulative = list(itertools.accumulate(histogram[:-1]))
            bounds = [str(b) for b in LATENCY_BUCKETS] + ["+Inf"]
            latency.add_metric([route], list(zip(bounds, cumulative, strict=True)), histogram[-1])
        lookups = CounterMetricFamily("crossfit_online_store_lookups", "athletes looked up in the online store",
                                      labels=["feature_version"])  # fmt: skip
        misses = CounterMetricFamily("crossfit_online_store_misses", "athletes the online store had no fresh row "
                                     "for: unknown (404) or unavailable (424)", labels=["feature_version", "reason"])  # fmt: skip
        with self._lock:
            for version, count in sorted(self.lookups.items()):
                lookups.add_metric([version], count)
            for (version, reason), count in sorted(self.misses.items()):
                misses.add_metric([version, reason], count)
        return [requests, latency, lookups, misses]

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _LiveCollector:
    """Gauges and counters read at scrape time from the holders, the writer and the shadow."""

    def __init__(self, metrics, champion, challenger, writer, shadow):
        self.metrics, self.champion, self.challenger, self.writer, self.shadow = metrics, champion, challenger, writer, shadow

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield from self.metrics.families()
        info = GaugeMetricFamily("crossfit_model_info", "the model versions loaded: role champion (answers) "
                                 "and challenger (shadow)", labels=["role", "model_name", "version", "feature_version"])  # fmt: skip
        version = GaugeMetricFamily("crossfit_model_version", "the registry version of each role (absent: none)", labels=["role"])
        for holder in (self.champion, self.challenger):
            model = holder.current if holder is not None else None
            if model is not None:
                info.add_metric([model.alias, model.model_name, model.version, model.feature_version], 1)
                if model.version.isdigit():
                    version.add_metric([model.alias], float(model.version))
        yield info
        yield version
        if self.writer is not None:
            yield CounterMetricFamily("crossfit_prediction_log_records_written", "prediction log rows written",
                                      value=self.writer.written)  # fmt: skip
            dropped = CounterMetricFamily("crossfit_prediction_log_records_dropped", "prediction log rows dropped: "
                                          "queue_full, write_failed (full disk, store down)", labels=["reason"])  # fmt: skip
            for reason in (QUEUE_FULL, WRITE_FAILED):
                dropped.add_metric([reason], self.writer.dropped[reason])
            yield dropped
            yield GaugeMetricFamily("crossfit_prediction_log_queue", "answers waiting to be written", value=self.writer.waiting)
        if self.shadow is not None:
            shadow = CounterMetricFamily("crossfit_shadow_requests", "requests offered to the shadow challenger, by outcome",
                                         labels=["outcome"])  # fmt: skip
            for outcome, count in self.shadow.counts.items():
                shadow.add_metric([outcome], count)
            yield shadow


def request_id_of(headers) -> str:
    """The client's ``X-Request-ID`` when it is a plain token, else a new one."""
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if REQUEST_ID.fullmatch(text) else uuid.uuid4().hex
    return uuid.uuid4().hex


def _error_code(body: bytes) -> str | None:
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    error = answer.get("error") if isinstance(answer, dict) else None
    return error if isinstance(error, str) else None


class LiveTraffic:
    """Pure ASGI middleware: request id, metrics, prediction log and shadow (see the module)."""

    def __init__(self, app, metrics: ApiMetrics | None = None, writer: PredictionLogWriter | None = None,
                 shadow: ShadowScorer | None = None):  # fmt: skip
        self.app, self.metrics, self.writer, self.shadow = app, metrics, writer, shadow
        self._logged = ROUTES if (writer is not None or shadow is not None) else ()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        request_id = request_id_of(scope["headers"])
        header = (b"x-request-id", request_id.encode("latin-1"))
        exchange = None
        if path in self._logged:
            exchange = scope[EXCHANGE] = Exchange(request_id, time.time(), path)
        status, error_body = 500, []

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            elif exchange is not None and status >= 400 and sum(map(len, error_body)) < _ERROR_BODY_BYTES:
                error_body.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            if self.metrics is not None:
                self.metrics.observe(path if path in KNOWN_ROUTES else "other", status, seconds)
            if exchange is not None:
                self._after(exchange, status, error_body, seconds)

    def _after(self, exchange: Exchange, status: int, error_body: list[bytes], seconds: float) -> None:
        """The champion's answer to the log, a 200 to the shadow (both O(1) queue appends)."""
        champion = exchange.champion
        if self.writer is not None:
            error = _error_code(b"".join(error_body)) if status >= 400 else None
            self.writer.submit(Answer(
                request_id=exchange.request_id, logged_at=exchange.logged_at, route=exchange.route, status=status,
                role=CHAMPION, error=error, athlete_ids=exchange.athlete_ids,
                feature_version=champion.feature_version if champion else None,
                columns=champion.columns if champion else None, rows=exchange.rows,
                model_name=champion.model_name if champion else None, model_version=champion.version if champion else None,
                predictions=exchange.predictions if status < 400 else None, latency_ms=seconds * 1000,
                features_at=exchange.features_at,
            ))  # fmt: skip
        if self.shadow is not None and status == 200 and champion is not None and exchange.predictions is not None:
            self.shadow.offer(exchange.request_id, exchange.logged_at, exchange.route, champion,
                              exchange.rows, exchange.athlete_ids, exchange.features_at)  # fmt: skip
