"""Live traffic over real HTTP: the prediction log, ``/metrics`` and the shadow challenger.

The world of test_serving.py (a real MLflow server, generated snapshots, a materialized Feast
store, two LightGBM versions: v1 on V2 features is ``@champion``, v2 on V1 features
``@challenger``), built smaller, once for the module. The API runs as a real process
(``python -m crossfit_mlops serve``); the log is read back with the contract's own reader
(:func:`crossfit_mlops.prediction_log.read_log`), as live monitoring reads it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration.test_serving import Api, _features_of, _reference, serving_world

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
LIVE_ROWS = 4000  # per snapshot: enough athletes in each set the tests draw from, a quick world
FAST = {"CROSSFIT_SERVING_REFRESH_S": "0.5", "CROSSFIT_SERVING_LOG_FLUSH_S": "0.3", "CROSSFIT_SHADOW_SHARE": "1"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with serving_world(tmp_path_factory.mktemp("live-serving"), rows=LIVE_ROWS) as built:
        yield built


def _wait_shadow(api: Api, version: str | None, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shadow = api.get("/model").json().get("shadow") or {}
        challenger = shadow.get("challenger")
        if (challenger or {}).get("version") == version:
            return shadow
        time.sleep(0.2)
    raise AssertionError(f"the shadow challenger is not v{version}: {shadow}")


def _env(world) -> dict[str, str]:
    """The world's environment with this repository importable (the slow challenger's class)."""
    return {**world["env"], "PYTHONPATH": os.pathsep.join([str(ROOT), world["env"].get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def api(world):
    server = Api(_env(world), world["base"] / "api.log", **FAST)
    server.wait_ready()
    _wait_shadow(server, world["versions"][1])
    yield server
    server.stop()


def _log(world):
    from crossfit_mlops.prediction_log import live_root, read_log

    now = datetime.now(UTC)
    return read_log(live_root(world["settings"]), now - timedelta(days=1), now + timedelta(hours=1))


def _wait_log(world, expected: set[tuple[str, str]], timeout: float = 30):
    """The log once it holds a row for every ``(request_id, role)`` expected."""
    deadline = time.monotonic() + timeout
    while True:
        frame = _log(world)
        found = set(zip(frame["request_id"], frame["role"], strict=True))
        if expected <= found or time.monotonic() > deadline:
            assert expected <= found, sorted(expected - found)[:5]
            return frame
        time.sleep(0.2)


def _metrics(api: Api) -> dict[tuple, float]:
    from prometheus_client.parser import text_string_to_metric_families

    response = api.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _requests_of(metrics: dict, route: str, status: int) -> float:
    return metrics.get(("crossfit_api_requests_total", (("route", route), ("status", str(status)))), 0.0)


def _predict_with(world, version: str, rows: list[dict]) -> list[float]:
    """What the registered version predicts for feature rows (its pyfunc, its signature's columns)."""
    import mlflow
    import pandas as pd

    from crossfit_mlops.tracking import fluent

    with fluent(world["uri"]):
        model = mlflow.pyfunc.load_model(f"models:/{world['settings'].registered_model_name}/{version}")
    schema = model.metadata.get_input_schema()
    frame = pd.DataFrame(rows)[schema.input_names()]
    frame = frame.astype({n: "int64" if t.name == "long" else "float64" for n, t in zip(schema.input_names(), schema.input_types(), strict=True)})
    return [float(v) for v in model.predict(frame)]


def _traffic(api: Api, world) -> dict:
    """A mix of answers: single and batch /predict, /predict/features, a 404, a 422."""
    serving = world["serving"]
    sent = {"single": [], "batch": None, "features": None, "unknown": None, "invalid": None}
    for athlete in serving[:4]:
        response = api.post("/predict", {"athlete_id": athlete})
        assert response.status_code == 200, response.text
        sent["single"].append((response.headers["x-request-id"], athlete, response.json()))
    batch = api.post("/predict", {"athlete_ids": serving[4:7]})
    sent["batch"] = (batch.headers["x-request-id"], serving[4:7], batch.json())
    features = _features_of(world, serving[7])
    by_body = api.post("/predict/features", {"features": features})
    sent["features"] = (by_body.headers["x-request-id"], features, by_body.json())
    unknown = api.post("/predict", {"athlete_id": 987654321})
    assert unknown.status_code == 404
    sent["unknown"] = unknown.headers["x-request-id"]
    invalid = api.post("/predict", {"athlete_id": "two"})
    assert invalid.status_code == 422
    sent["invalid"] = invalid.headers["x-request-id"]
    return sent


def test_every_answer_is_logged_under_its_request_id_and_the_shadow_scores_it(world, api):
    from crossfit_mlops.features.feast_repo import online_features

    champion, challenger = world["versions"]
    sent = _traffic(api, world)
    ids = [rid for rid, _, _ in sent["single"]] + [sent["batch"][0], sent["features"][0]]
    assert len(set(ids + [sent["unknown"], sent["invalid"]])) == 8 and all(len(i) == 32 for i in ids)
    expected = {(i, role) for i in ids for role in ("champion", "challenger")} | {(sent["unknown"], "champion"), (sent["invalid"], "champion")}
    frame = _wait_log(world, expected)
    rows = frame.set_index(["request_id", "role", "item"]).sort_index()

    # the champion's rows: the answer, the athlete, the features used, the model, the time it took
    for rid, athlete, body in sent["single"]:
        row = rows.loc[(rid, "champion", 0)]
        assert row["athlete_id"] == athlete and row["prediction"] == body["prediction"] and row["status"] == 200
        assert row["route"] == "/predict" and row["model_version"] == champion and row["feature_version"] == "v2"
        assert row["model_name"] == world["settings"].registered_model_name and 0 < row["latency_ms"] < 5000
        assert row["features_at"].isoformat() == body["features_at"]  # the online row's time: labels join on it
        online = online_features([athlete], "v2", settings=world["settings"]).drop(columns=["athlete_id"]).iloc[0]
        assert json.loads(row["features"]) == pytest.approx({k: float(v) for k, v in online.items()})
    rid, athletes, body = sent["batch"]
    batch = rows.loc[(rid, "champion")]
    assert list(batch["athlete_id"]) == athletes
    assert list(batch["prediction"]) == [item["prediction"] for item in body["predictions"]]
    rid, features, body = sent["features"]
    row = rows.loc[(rid, "champion", 0)]
    assert row["route"] == "/predict/features" and pd_isna(row["athlete_id"]) and row["prediction"] == body["predictions"][0]
    assert pd_isna(row["features_at"])
    assert json.loads(row["features"]) == pytest.approx({k: float(v) for k, v in features.items()})

    # error answers: one row with the status and the error code
    unknown = rows.loc[(sent["unknown"], "champion", 0)]
    assert unknown["status"] == 404 and unknown["error"] == "unknown_athlete" and unknown["athlete_id"] == 987654321
    assert pd_isna(unknown["prediction"])
    invalid = rows.loc[(sent["invalid"], "champion", 0)]
    assert invalid["status"] == 422 and invalid["error"] == "invalid_input"

    # the shadow: the challenger's own predictions under the same ids, from its own V1 features
    athletes = [a for _, a, _ in sent["single"]] + sent["batch"][1]
    mine = frame["request_id"].isin(ids[:-1])
    shadow = frame[mine & (frame["role"] == "challenger")].sort_values(["logged_at", "item"])
    assert list(shadow["athlete_id"]) == athletes and set(shadow["model_version"]) == {challenger}
    assert set(shadow["feature_version"]) == {"v1"} and shadow["features_at"].notna().all()
    assert list(shadow["prediction"]) == pytest.approx(_reference(world, athletes, challenger), rel=1e-9)
    online_v1 = online_features([athletes[0]], "v1", settings=world["settings"]).drop(columns=["athlete_id"]).iloc[0]
    assert json.loads(shadow["features"].iloc[0]) == pytest.approx({k: float(v) for k, v in online_v1.items()})
    by_body = rows.loc[(sent["features"][0], "challenger", 0)]
    assert by_body["prediction"] == pytest.approx(_predict_with(world, challenger, [features])[0], rel=1e-9)
    # ... and the answers are the champion's, whatever the shadow does
    singles = [body["prediction"] for _, _, body in sent["single"]]
    assert singles == pytest.approx(_reference(world, athletes[:4], champion), rel=1e-9)
    assert not set(frame["route"]) - {"/predict", "/predict/features"}, "a route other than the predictions was logged"


def test_a_client_request_id_is_kept_when_plain_and_replaced_when_not(world, api):
    athlete = world["serving"][0]
    kept = api.http.post(f"{api.url}/predict", json={"athlete_id": athlete}, headers={"X-Request-ID": "gateway-42.a:b"})
    assert kept.headers["x-request-id"] == "gateway-42.a:b"
    replaced = api.http.post(f"{api.url}/predict", json={"athlete_id": athlete}, headers={"X-Request-ID": "x" * 65})
    assert len(replaced.headers["x-request-id"]) == 32 and replaced.headers["x-request-id"] != "x" * 65
    assert api.get("/health").headers["x-request-id"]
    _wait_log(world, {("gateway-42.a:b", "champion"), (replaced.headers["x-request-id"], "champion")})


def test_metrics_count_requests_lookups_misses_the_log_and_name_both_models(world, api):
    champion, challenger = world["versions"]
    before = _metrics(api)
    for athlete in world["serving"][:3]:
        assert api.post("/predict", {"athlete_id": athlete}).status_code == 200
    assert api.post("/predict", {"athlete_id": 987654320}).status_code == 404
    assert api.post("/predict/features", {"features": {"age": 30}}).status_code == 422
    time.sleep(1.0)  # the log's flush (0.3 s) and the shadow's scoring
    after = _metrics(api)

    def moved(name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert _requests_of(after, "/predict", 200) - _requests_of(before, "/predict", 200) == 3
    assert _requests_of(after, "/predict", 404) - _requests_of(before, "/predict", 404) == 1
    assert _requests_of(after, "/predict/features", 422) - _requests_of(before, "/predict/features", 422) == 1
    assert moved("crossfit_api_request_duration_seconds_count", route="/predict") == 4
    assert moved("crossfit_online_store_lookups_total", feature_version="v2") == 4
    assert moved("crossfit_online_store_misses_total", feature_version="v2", reason="unknown") == 1
    assert moved("crossfit_online_store_lookups_total", feature_version="v1") == 3  # the shadow's own reads
    assert moved("crossfit_prediction_log_records_written_total") >= 5 + 3  # champion rows + challenger rows
    assert moved("crossfit_shadow_requests_total", outcome="scored") == 3
    assert after[("crossfit_model_version", (("role", "champion"),))] == float(champion)
    assert after[("crossfit_model_version", (("role", "challenger"),))] == float(challenger)
    info = {dict(labels)["role"]: dict(labels) for (name, labels) in after if name == "crossfit_model_info"}
    assert info["champion"]["version"] == champion and info["challenger"]["feature_version"] == "v1"
    assert _requests_of(after, "/metrics", 200) >= 1
    shadow = api.get("/model").json()["shadow"]
    assert shadow["share"] == 1.0 and shadow["challenger"]["version"] == challenger and shadow["challenger"]["alias"] == "challenger"


def test_share_zero_has_no_shadow_the_same_answers_and_the_log_is_written_at_shutdown(world, api):
    server = Api(world["env"], world["base"] / "api-no-shadow.log", CROSSFIT_SHADOW_SHARE="0",
                 CROSSFIT_SERVING_LOG_FLUSH_S="600", CROSSFIT_SERVING_REFRESH_S="0.5")  # fmt: skip
    try:
        server.wait_ready()
        assert server.get("/model").json()["shadow"] is None
        athletes = world["serving"][10:14]
        plain = server.post("/predict", {"athlete_ids": athletes})
        shadowed = api.post("/predict", {"athlete_ids": athletes})
        assert plain.json()["predictions"] == shadowed.json()["predictions"]
        rid = plain.headers["x-request-id"]
        time.sleep(1.0)
        assert rid not in set(_log(world)["request_id"]), "written before the flush interval or the shutdown"
    finally:
        server.stop()
    frame = _log(world)
    mine = frame[frame["request_id"] == rid]
    assert list(mine["role"]) == ["champion"] * 4 and list(mine["athlete_id"]) == athletes
    assert list(mine["prediction"]) == [i["prediction"] for i in plain.json()["predictions"]]


def _register_slow_challenger(world, delay_s: float) -> str:
    """A registered version whose predict sleeps ``delay_s`` (the challenger's model inside), as
    ``@challenger``."""
    import mlflow

    from crossfit_mlops.registry.promotion import move_alias
    from crossfit_mlops.tracking import client, fluent
    from tests.support.slow_model import SlowRegressor

    name, base = world["settings"].registered_model_name, world["versions"][1]
    c = client(world["uri"])
    mv = c.get_model_version(name, base)
    with fluent(world["uri"]):
        info = mlflow.models.get_model_info(f"models:/{name}/{base}")
        slow = SlowRegressor(mlflow.sklearn.load_model(f"models:/{name}/{base}"), delay_s)
        with mlflow.start_run(run_name="slow-challenger") as run:
            logged = mlflow.sklearn.log_model(slow, name="model", signature=info.signature, serialization_format="cloudpickle")
    tags = {k: mv.tags[k] for k in ("feature_version", "feature_service", "snapshot_id")}
    version = c.create_model_version(name, source=logged.model_uri, run_id=run.info.run_id, model_id=logged.model_id,
                                     tags=tags).version  # fmt: skip
    move_alias(world["uri"], name, "challenger", str(version), "registration", "test", "a slow challenger")
    return str(version)


def test_the_answer_never_waits_for_a_slow_challenger(world, api):
    from crossfit_mlops.registry.promotion import move_alias

    name, (champion, challenger) = world["settings"].registered_model_name, world["versions"]
    slow = _register_slow_challenger(world, delay_s=0.5)
    server = Api(_env(world), world["base"] / "api-slow.log", CROSSFIT_SHADOW_QUEUE="2", **FAST)
    try:
        server.wait_ready()
        _wait_shadow(server, slow)
        athletes = world["serving"][:12]
        took, answers = [], []
        for index, athlete in enumerate(athletes):
            started = time.perf_counter()
            response = server.post("/predict", {"athlete_id": athlete})
            took.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
            answers.append((response.headers["x-request-id"], response.json()["prediction"]))
            if index == 0:
                time.sleep(0.15)  # past the shadow's 50 ms linger: its 0.5 s predict has begun
        # 0.5 s of challenger work per batch behind them: the answers did not wait for any of it
        assert sum(took) < 1.5 and max(took) < 0.4, took
        assert [p for _, p in answers] == pytest.approx(_reference(world, athletes, champion), rel=1e-9)
        metrics = _metrics(server)
        assert metrics[("crossfit_shadow_requests_total", (("outcome", "queue_full"),))] >= 8  # bounded: dropped
        first = answers[0][0]
        frame = _wait_log(world, {(first, "challenger")}, timeout=10)  # ... and it did score, slowly, later
        row = frame[(frame["request_id"] == first) & (frame["role"] == "challenger")].iloc[0]
        assert row["model_version"] == slow and row["latency_ms"] >= 500
    finally:
        server.stop()
        move_alias(world["uri"], name, "challenger", challenger, "registration", "test", "back to the trained challenger")
    _wait_shadow(api, challenger)


def _fill(folder: Path) -> None:
    try:
        with (folder / ".filler").open("wb") as out:
            while True:
                out.write(b"\0" * 4096)
                out.flush()
    except OSError:  # ENOSPC: the disk is full
        pass


def _dead_store(root: Path):
    """Make ``root`` impossible to write, for real: a full tmpfs mounted on it (as root), else a
    regular file where its folder should be. Returns the undo."""
    root.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(root)], capture_output=True, timeout=30)
    if mounted.returncode == 0:
        _fill(root)
        return "a full disk (tmpfs)", lambda: subprocess.run(["umount", str(root)], check=True, timeout=30)
    aside = root.with_name(root.name + ".aside")
    root.rename(aside)
    root.write_text("not a folder")

    def undo() -> None:
        root.unlink()
        aside.rename(root)

    return "a regular file in place of the log's folder", undo


def test_a_dead_log_store_drops_counted_records_and_never_fails_a_request(world, api):
    from crossfit_mlops.prediction_log import live_root

    root = live_root(world["settings"])
    before = _metrics(api)
    log_size = api.log.stat().st_size
    how, undo = _dead_store(root)
    try:
        took = []
        for athlete in world["serving"][:20]:
            started = time.perf_counter()
            assert api.post("/predict", {"athlete_id": athlete}).status_code == 200, how
            took.append(time.perf_counter() - started)
        assert max(took) < 0.5, (how, took)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            after = _metrics(api)
            key = ("crossfit_prediction_log_records_dropped_total", (("reason", "write_failed"),))
            if after.get(key, 0) - before.get(key, 0) >= 20:
                break
            time.sleep(0.3)
        assert after.get(key, 0) - before.get(key, 0) >= 20, (how, after.get(key))
        with api.log.open() as log:
            log.seek(log_size)
            warned = log.read()
        assert "prediction log:" in warned and "records dropped" in warned, (how, warned[-2000:])
        assert api.get("/ready").status_code == 200
    finally:
        undo()
    assert api.post("/predict", {"athlete_id": world["serving"][0]}).status_code == 200


def pd_isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))
