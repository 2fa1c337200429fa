"""The live-traffic parts' own logic with small fakes: the log writer's queue, batches and failures,
the shadow's sampling and bound, the request id, per-app metrics. Over real HTTP, on a real
registry and online store: tests/integration/test_live_serving.py."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from crossfit_mlops import prediction_log
from crossfit_mlops.serving.log_writer import (
    QUEUE_FULL,
    WRITE_FAILED,
    Answer,
    PredictionLogWriter,
    features_json,
    log_columns,
)
from crossfit_mlops.serving.shadow import FAILED, NO_FEATURES, NOT_SAMPLED, SCORED, ShadowScorer
from crossfit_mlops.serving.shadow import QUEUE_FULL as SHADOW_FULL
from crossfit_mlops.serving.telemetry import request_id_of


def _answer(i: int = 0, items: int = 1, status: int = 200, at: float | None = None) -> Answer:
    return Answer(
        request_id=f"r{i}", logged_at=at if at is not None else datetime.now(UTC).timestamp(), route="/predict",
        status=status, athlete_ids=list(range(items)), feature_version="v1", columns=("age", "bmi"),
        rows=[[30.0 + k, 22.5] for k in range(items)], model_name="m", model_version="3",
        predictions=[float(k) for k in range(items)] if status < 400 else None, latency_ms=1.5,
        error=None if status < 400 else "unknown_athlete",
    )  # fmt: skip


def _rows(answers) -> list[dict]:
    table = prediction_log.to_table(log_columns(answers))
    return table.to_pylist()


def test_log_rows_one_per_item_with_the_features_and_one_per_error():
    rows = _rows([_answer(items=2)])
    assert [r["item"] for r in rows] == [0, 1] and [r["athlete_id"] for r in rows] == [0, 1]
    assert rows[1]["features"] == '{"age": 31.0, "bmi": 22.5}' and rows[1]["prediction"] == 1.0
    assert rows[0]["request_id"] == rows[1]["request_id"] == "r0" and rows[1]["logged_at"].tzinfo is not None
    error = _rows([_answer(status=404)])
    assert len(error) == 1 and error[0]["status"] == 404 and error[0]["error"] == "unknown_athlete"
    assert error[0]["prediction"] is None and error[0]["athlete_id"] == 0
    by_features = Answer(request_id="f", logged_at=1.0, route="/predict/features", status=200, feature_version="v1",
                         columns=("age",), rows=[[30.0], [31.0]], predictions=[1.0, 2.0])  # fmt: skip
    mixed = _rows([_answer(1), by_features, _answer(2, status=404)])
    assert [(r["request_id"], r["item"], r["athlete_id"]) for r in mixed] == [("r1", 0, 0), ("f", 0, None), ("f", 1, None), ("r2", 0, 0)]
    assert mixed[2]["features"] == '{"age": 31.0}' and mixed[2]["features_at"] is None
    assert mixed[1]["logged_at"] == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "values",
    [
        [30.0, 22.5],
        [1e-05, -0.0],
        [1.0000000000000002, 123456789012345680.0],
        [float("nan"), 1.0],
        [float("inf"), float("-inf")],
        [None, 2.0],
        [3, 2.0],
        [True, 2.0],
    ],
)
def test_the_features_json_is_the_text_json_writes(values):
    import json

    import numpy as np

    columns = ("age", 'odd "name"')
    template = "{" + ", ".join(f"{json.dumps(c)}: %s" for c in columns) + "}"
    assert features_json(template, values) == json.dumps(dict(zip(columns, values, strict=True)))
    if all(type(v) is float for v in values):  # numpy's float64 is a float: the same text
        assert features_json(template, list(np.array(values))) == json.dumps(dict(zip(columns, values, strict=True)))


def test_the_writer_publishes_parts_that_read_log_reads_back(tmp_path):
    writer = PredictionLogWriter(tmp_path / "live", flush_seconds=60, batch=3, queue_bound=100)
    started = datetime.now(UTC)
    for i in range(5):
        assert writer.submit(_answer(i, items=2))
    assert writer.flush() == 10 and writer.parts == 2  # 3 answers a part file
    frame = prediction_log.read_log(tmp_path / "live", started - timedelta(seconds=1), datetime.now(UTC) + timedelta(seconds=1))
    assert len(frame) == 10 and set(frame["request_id"]) == {f"r{i}" for i in range(5)}
    assert str(frame["prediction"].dtype) == "float64" and set(frame["model_version"]) == {"3"}


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path):
    writer = PredictionLogWriter(tmp_path, flush_seconds=60, batch=1000, queue_bound=2)
    assert writer.submit(_answer(0)) and writer.submit(_answer(1))
    assert not writer.submit(_answer(2, items=5))
    assert writer.dropped[QUEUE_FULL] == 5 and writer.waiting == 2


def test_a_failing_write_drops_the_batch_counts_it_and_warns(tmp_path, caplog):
    def broken(root, frame, seq):
        raise OSError(28, "No space left on device")

    writer = PredictionLogWriter(tmp_path, flush_seconds=60, batch=10, queue_bound=100, write=broken)
    for i in range(3):
        writer.submit(_answer(i, items=2))
    with caplog.at_level("WARNING"):
        assert writer.flush() == 0
    assert writer.dropped[WRITE_FAILED] == 6 and writer.written == 0 and writer.waiting == 0
    assert "No space left" in caplog.text and "6 records dropped" in caplog.text


def test_the_thread_flushes_when_a_batch_is_full_and_close_writes_the_rest(tmp_path):
    written, done = [], threading.Event()

    def write(root, frame, seq):
        written.append(len(frame))
        done.set()

    writer = PredictionLogWriter(tmp_path, flush_seconds=60, batch=2, queue_bound=100, write=write)
    writer.start()
    writer.submit(_answer(0))
    writer.submit(_answer(1))
    assert done.wait(5), "a full batch did not wake the writer"
    writer.submit(_answer(2))
    writer.close(timeout=5)
    assert sum(written) == 3


def test_a_flush_writes_what_was_queued_when_it_began_not_what_arrives_meanwhile(tmp_path):
    # under steady traffic, answers arrive during every write: a flush that drained "until empty"
    # never ended and wrote a part file of a few answers over and over
    parts = []

    def write(root, frame, seq):
        parts.append(len(frame))
        writer.submit(_answer(100 + seq))  # traffic during the write

    writer = PredictionLogWriter(tmp_path, flush_seconds=60, batch=2, queue_bound=100, write=write)
    for i in range(5):
        writer.submit(_answer(i))
    assert writer.flush() == 5 and parts == [2, 2, 1]
    assert writer.waiting == 3  # the next flush's


def _model(version: str, feature_version: str, columns: tuple[str, ...]):
    return SimpleNamespace(
        version=version, feature_version=feature_version, columns=columns, model_name="m", alias="x",
        predict=lambda rows: [sum(r) for r in rows],
    )  # fmt: skip


class _Reader:
    def __init__(self):
        self.asked = []

    def read(self, ids, version, columns):
        self.asked.append((ids, version))
        return [SimpleNamespace(athlete_id=i, values=[float(i)] * len(columns), event_timestamp=None) for i in ids]


def _shadow(challenger, share=1.0, bound=10, draws=(0.0,)):
    answers, reader = [], _Reader()
    draw = iter(draws * 100)
    shadow = ShadowScorer(SimpleNamespace(current=challenger), reader, answers.append, share, bound, lambda: next(draw))
    return shadow, answers, reader


CHAMPION = _model("1", "v2", ("age", "bmi", "survey"))


def test_the_shadow_samples_its_share_and_never_shadows_the_champion_itself():
    shadow, _, _ = _shadow(_model("2", "v2", CHAMPION.columns), share=0.5, draws=(0.2, 0.7))
    offered = [shadow.offer(f"r{i}", 0.0, "/predict", CHAMPION, [[1.0, 2.0, 3.0]], [7]) for i in range(4)]
    assert offered == [True, False, True, False] and shadow.counts[NOT_SAMPLED] == 2
    same, _, _ = _shadow(_model("1", "v2", CHAMPION.columns))
    assert not same.offer("r", 0.0, "/predict", CHAMPION, [[1.0, 2.0, 3.0]], [7])
    off, _, _ = _shadow(_model("2", "v2", CHAMPION.columns), share=0.0)
    assert not off.offer("r", 0.0, "/predict", CHAMPION, [[1.0, 2.0, 3.0]], [7])


def test_a_full_shadow_queue_drops_and_counts():
    shadow, _, _ = _shadow(_model("2", "v2", CHAMPION.columns), bound=2)  # never started: nothing drains
    assert [shadow.offer(f"r{i}", 0.0, "/predict", CHAMPION, [[1.0, 2.0, 3.0]], [7]) for i in range(3)] == [True, True, False]
    assert shadow.counts[SHADOW_FULL] == 1


def test_the_shadow_reads_its_own_features_or_takes_its_columns_from_the_body():
    v1 = _model("2", "v1", ("bmi", "age"))
    shadow, answers, reader = _shadow(v1)
    shadow.offer("a", 0.0, "/predict", CHAMPION, [[30.0, 22.0, 1.0]], [7])
    shadow.offer("b", 0.0, "/predict/features", CHAMPION, [[30.0, 22.0, 1.0]], None)
    shadow.start()
    shadow.close(timeout=5)
    assert reader.asked == [([7], "v1")]  # /predict: its own FeatureService; the body: its columns of it
    by_id = {a.request_id: a for a in answers}
    assert by_id["a"].role == "challenger" and by_id["a"].model_version == "2" and by_id["a"].rows == [[7.0, 7.0]]
    assert by_id["b"].rows == [[22.0, 30.0]] and by_id["b"].predictions == [52.0]
    wider = _model("3", "v3", ("age", "unknown_feature"))
    shadow, answers, _ = _shadow(wider)
    shadow.offer("c", 0.0, "/predict/features", CHAMPION, [[30.0, 22.0, 1.0]], None)
    shadow.start()
    shadow.close(timeout=5)
    assert not answers and shadow.counts[NO_FEATURES] == 1 and shadow.counts[SCORED] == 0


@pytest.mark.parametrize(
    "sent, kept",
    [(b"abc-123_X.y:z", True), (b"a" * 64, True), (b"a" * 65, False), (b"a b", False), (b"", False), (b"\xff", False)],
)
def test_a_client_request_id_is_kept_only_when_it_is_a_plain_token(sent, kept):
    got = request_id_of([(b"host", b"x"), (b"x-request-id", sent)])
    assert (got == sent.decode("latin-1")) is kept
    assert len(request_id_of([])) == 32


def test_each_app_has_its_own_metrics_registry():
    """Also after Feast's import, which sets PROMETHEUS_MULTIPROC_DIR for the whole process (the API
    imports it): the counts are the app's own."""
    import feast  # noqa: F401
    from fastapi.testclient import TestClient

    from crossfit_mlops.serving.app import create_app
    from crossfit_mlops.serving.champion import ChampionHolder

    clients = [TestClient(create_app(ChampionHolder("http://127.0.0.1:9", "m"), None, start_refresh=False)) for _ in range(2)]
    with clients[0] as first, clients[1] as second:
        first.get("/health")
        first.get("/health")
        second.get("/health")
        assert 'crossfit_api_requests_total{route="/health",status="200"} 2.0' in first.get("/metrics").text
        assert 'crossfit_api_requests_total{route="/health",status="200"} 1.0' in second.get("/metrics").text
        assert len(first.get("/health").headers["x-request-id"]) == 32
        text = first.get("/metrics").text
        assert 'crossfit_api_request_duration_seconds_bucket{le="+Inf",route="/health"} 3.0' in text
        assert 'crossfit_api_request_duration_seconds_count{route="/health"} 3.0' in text


def test_waiting_requests_share_one_read_and_one_bad_athlete_fails_only_its_request():
    class Reader(_Reader):
        def read(self, ids, version, columns):
            if 999 in ids:
                raise LookupError("no row for 999")
            self.asked.append((ids, version))
            return [SimpleNamespace(athlete_id=i, values=[float(i)] * len(columns), event_timestamp=None) for i in ids]

    v1 = _model("2", "v1", ("bmi", "age"))
    answers, reader = [], Reader()
    shadow = ShadowScorer(SimpleNamespace(current=v1), reader, answers.append, 1.0, 10)
    for rid, ids in (("a", [1, 2]), ("b", [3])):
        shadow.offer(rid, 0.0, "/predict", CHAMPION, [[0.0, 0.0, 0.0]] * len(ids), ids)
    shadow.start()  # both wait before the thread starts: one batch
    shadow.close(timeout=5)
    assert reader.asked == [([1, 2, 3], "v1")]
    assert {a.request_id: a.predictions for a in answers} == {"a": [2.0, 4.0], "b": [6.0]}

    answers.clear()
    reader.asked.clear()
    shadow = ShadowScorer(SimpleNamespace(current=v1), reader, answers.append, 1.0, 10)
    for rid, ids in (("c", [4]), ("d", [999])):
        shadow.offer(rid, 0.0, "/predict", CHAMPION, [[0.0, 0.0, 0.0]], ids)
    shadow.start()
    shadow.close(timeout=5)
    assert [a.request_id for a in answers] == ["c"] and shadow.counts[FAILED] == 1
