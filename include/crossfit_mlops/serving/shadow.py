"""The shadow challenger: ``@challenger`` scores live requests off the response path, never answers.

After the champion's 200 answer has been sent, :meth:`ShadowScorer.offer` (on the event loop, O(1),
never blocking) decides whether the challenger scores this request too: only when a challenger is
loaded and is not the version that answered, and for a sampled share of the requests
(``CROSSFIT_SHADOW_SHARE``: default 0.25, 1 = every one, 0 = no shadow). The request then waits in a bounded
queue (``CROSSFIT_SHADOW_QUEUE``; when it is full the request is dropped from the shadow and
counted), and one background thread scores what waits every :data:`LINGER_S` (up to
:data:`BATCH` requests in one online read and one predict) and hands the challenger's answer to the prediction
log under the same ``request_id`` with role ``challenger``. One thread bounds the extra CPU to one
core at most, the share and the queue bound it further; the answer never waits for it and never
changes.

Features. ``/predict``: when the challenger was trained on the champion's feature version, the
champion's rows are reused; otherwise the challenger reads its own FeatureService from the online
store, as a deployed challenger would (same athletes, its own view; a failed read is counted).
``/predict/features``: the body's values, when they hold every input the challenger needs (a V1
challenger behind a V2 champion: yes); else the request is skipped and counted.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from crossfit_mlops.prediction_log import CHALLENGER
from crossfit_mlops.serving.champion import Champion, ChampionHolder
from crossfit_mlops.serving.log_writer import Answer

log = logging.getLogger(__name__)

# outcomes counted in ShadowScorer.counts (and /metrics)
SCORED, QUEUE_FULL, NOT_SAMPLED, NO_FEATURES, FAILED = "scored", "queue_full", "not_sampled", "no_features", "failed"
BATCH = 64  # requests scored together at most: one online read and one predict for all of them
# How often the shadow's thread scores what waits, together: one online read (Feast's cost per call
# is several times its cost per athlete) and one predict for up to BATCH requests.
LINGER_S = 0.05


@dataclass(slots=True)
class ShadowRequest:
    """What the challenger needs of one answered request."""

    request_id: str
    logged_at: float
    route: str
    athlete_ids: list[int] | None
    columns: tuple[str, ...]  # the champion's columns: the names of the values in rows
    feature_version: str
    rows: list[list[float]]
    challenger: Champion
    features_at: list | None = None  # the champion's rows' online-store times (/predict)


class ShadowScorer:
    """Scores sampled requests with the challenger on one background thread.

    Args:
        holder: the ``@challenger`` holder (its :attr:`~ChampionHolder.current` is None while there
            is none, or while it is the champion's version).
        reader: the online feature reader (for a challenger of another feature version).
        submit: where the challenger's answers go (the log writer's ``submit``).
        share: share of the offered requests scored (0 to 1).
        queue_bound: requests that may wait.
    """

    def __init__(self, holder: ChampionHolder, reader, submit: Callable[[Answer], bool], share: float = 0.25,
                 queue_bound: int = 1000, sample: Callable[[], float] = random.random,
                 linger_s: float = LINGER_S):  # fmt: skip
        self.holder = holder
        self.linger_s = linger_s
        self.reader = reader
        self.share = share
        self._submit = submit
        self._sample = sample
        self.queue_bound = queue_bound
        self._queue: deque[ShadowRequest] = deque()  # append/popleft are atomic: no lock, no wake-up
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counts = dict.fromkeys((SCORED, QUEUE_FULL, NOT_SAMPLED, NO_FEATURES, FAILED), 0)
        self.last_error: str | None = None

    @property
    def challenger(self) -> Champion | None:
        return self.holder.current if self.share > 0 else None

    def offer(self, request_id: str, logged_at: float, route: str, champion: Champion,
              rows: list[list[float]], athlete_ids: list[int] | None, features_at: list | None = None) -> bool:  # fmt: skip
        """Queue an answered request for the challenger if the policy says so (on the event loop:
        O(1), never blocks); True when queued."""
        if self.share <= 0:
            return False
        challenger = self.holder.current
        if challenger is None or challenger.version == champion.version:
            return False
        if self.share < 1.0 and self._sample() >= self.share:
            self.counts[NOT_SAMPLED] += 1
            return False
        if len(self._queue) >= self.queue_bound:
            self.counts[QUEUE_FULL] += 1
            return False
        self._queue.append(ShadowRequest(request_id, logged_at, route, athlete_ids, champion.columns,
                                         champion.feature_version, rows, challenger, features_at))  # fmt: skip
        return True

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="shadow-challenger", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Score what is queued (for at most ``timeout`` seconds), then stop."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("shadow challenger: %d queued requests not scored at shutdown", len(self._queue))

    def _run(self) -> None:
        # The thread looks every linger_s; a request never wakes it. A wake-up per request handed
        # the GIL to this thread in the middle of the next answer, and on a busy machine the event
        # loop then waited for the OS to run it again (p90 at c=1 1.1 -> 4 ms in the benchmark).
        while not self._stop.wait(self.linger_s):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        while self._queue:
            items = []
            while self._queue and len(items) < BATCH:
                items.append(self._queue.popleft())
            self.score_batch(items)

    def score_batch(self, items: list[ShadowRequest]) -> None:
        """Score waiting requests together: one online read for the ``/predict`` athletes whose
        challenger needs its own features, one predict call per challenger. A failed batch read is
        retried one request at a time, so one athlete without a row fails only its request."""
        reads = [i for i in items if self._needs_read(i)]
        if len(reads) > 1:
            try:
                self._score_together(reads)
                items = [i for i in items if not self._needs_read(i)]
            except Exception:  # one athlete's missing row fails the batch read: one by one below
                log.debug("shadow batch read failed; scoring one request at a time", exc_info=True)
        for item in items:
            try:
                self.score(item)
            except Exception as exc:  # never let the shadow die; the champion's answers are unaffected
                self._failed(item, exc)

    def _failed(self, item: ShadowRequest, exc: Exception) -> None:
        self.counts[FAILED] += 1
        self.last_error = f"{type(exc).__name__}: {str(exc)[:300]}"
        log.warning("shadow challenger v%s failed on request %s: %s", item.challenger.version,
                    item.request_id, self.last_error)  # fmt: skip

    @staticmethod
    def _needs_read(item: ShadowRequest) -> bool:
        return item.route == "/predict" and item.challenger.feature_version != item.feature_version

    def _score_together(self, items: list[ShadowRequest]) -> None:
        started = time.perf_counter()
        by_challenger: dict[str, list[ShadowRequest]] = {}
        for item in items:
            by_challenger.setdefault(item.challenger.version, []).append(item)
        answers = []
        for group in by_challenger.values():
            challenger = group[0].challenger
            ids = list(dict.fromkeys(a for item in group for a in item.athlete_ids))
            features = {f.athlete_id: f for f in self.reader.read(ids, challenger.feature_version, challenger.columns)}
            rows = [[features[a].values for a in item.athlete_ids] for item in group]
            predictions = iter(challenger.predict([row for item_rows in rows for row in item_rows]))
            for item, item_rows in zip(group, rows, strict=True):
                stamps = [features[a].event_timestamp for a in item.athlete_ids]
                answers.append((item, item_rows, [next(predictions) for _ in item_rows], stamps))
        took_ms = (time.perf_counter() - started) * 1000
        for item, item_rows, predictions, stamps in answers:
            self._answer(item, item_rows, predictions, took_ms, stamps)

    def _challenger_rows(self, item: ShadowRequest) -> tuple[list[list[float]] | None, list | None]:
        """The challenger's rows and their online-store times (None rows: it cannot be scored)."""
        challenger = item.challenger
        if challenger.feature_version == item.feature_version or item.route != "/predict":
            index = {name: i for i, name in enumerate(item.columns)}
            if not all(name in index for name in challenger.columns):
                return None, None
            if tuple(challenger.columns) == tuple(item.columns):
                return item.rows, item.features_at
            picks = [index[name] for name in challenger.columns]
            return [[row[i] for i in picks] for row in item.rows], item.features_at
        features = self.reader.read(item.athlete_ids, challenger.feature_version, challenger.columns)
        return [f.values for f in features], [f.event_timestamp for f in features]

    def score(self, item: ShadowRequest) -> None:
        """Score one request with its challenger and log the answer under the request's id."""
        started = time.perf_counter()
        rows, stamps = self._challenger_rows(item)
        if rows is None:
            self.counts[NO_FEATURES] += 1
            return
        predictions = item.challenger.predict(rows)
        self._answer(item, rows, predictions, (time.perf_counter() - started) * 1000, stamps)

    def _answer(self, item: ShadowRequest, rows: list[list[float]], predictions: list[float], took_ms: float,
                features_at: list | None) -> None:  # fmt: skip
        challenger = item.challenger
        self._submit(Answer(
            request_id=item.request_id, logged_at=item.logged_at, route=item.route, status=200, role=CHALLENGER,
            athlete_ids=item.athlete_ids, feature_version=challenger.feature_version, columns=challenger.columns,
            rows=rows, model_name=challenger.model_name, model_version=challenger.version, predictions=predictions,
            latency_ms=took_ms, features_at=features_at,
        ))  # fmt: skip
        self.counts[SCORED] += 1
