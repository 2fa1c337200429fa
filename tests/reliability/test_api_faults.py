"""The prediction API when what it depends on fails: every fault injected for real, on a real stack.

One module world (the serving test's: three generated snapshots, Feast materialized, a real
``mlflow server``, two registered LightGBM versions, version 1 ``@champion``), with the MLflow
server started here so that a test can stop it and start it again on the same port and store.
Destructive faults act on a copy of the state (feature tables + Feast registry + online store),
served through a copy of the Feast repo whose registry cache lasts 1 s instead of 60 s, so that a
deleted registry shows within a second. The API is always a real ``python -m crossfit_mlops serve``.

What the user sees is asserted: ``/ready`` says 503 with the reason whenever ``/predict`` cannot
answer, ``/predict`` answers 503/424/404 in the one error shape, never a 500, and both recover
without a restart once the fault is repaired.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.integration.test_serving import CUR, NEXT, Api, _prepare_world
from tests.support.services import QUIET_ENV, ROOT, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UNKNOWN = 987_654_321


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from crossfit_mlops.settings import get_settings
    from crossfit_stack import config, control

    base = tmp_path_factory.mktemp("api-faults")
    mlflow_env = {**os.environ, **QUIET_ENV, "CROSSFIT_STATE_DIR": str(base / "mlflow_state"),
                  "CROSSFIT_MLFLOW_PORT": str(free_port())}  # fmt: skip
    mlflow_env.pop("MLFLOW_TRACKING_URI", None)
    cfg = config.config_from_env(mlflow_env)
    start_mlflow = lambda: control.start_mlflow(cfg, {**mlflow_env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # noqa: E731
    start_mlflow()
    try:
        env = {**os.environ, **QUIET_ENV, "CROSSFIT_STATE_DIR": str(base / "state"), "MLFLOW_TRACKING_URI": cfg.mlflow_url}
        for name in ("CROSSFIT_FEAST_DIR", "CROSSFIT_FEAST_REGISTRY", "CROSSFIT_FEAST_ONLINE_STORE", "CROSSFIT_RAW_FILE",
                     "CROSSFIT_FEAST_REDIS", "CROSSFIT_FEAST_REGISTRY_URI", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):  # fmt: skip
            env.pop(name, None)
        settings = get_settings(env)
        facts = _prepare_world(settings, cfg.mlflow_url)
        repo = base / "feast_repo"  # the committed repo, with a 1 s registry cache
        repo.mkdir()
        yaml = (ROOT / "include" / "feast" / "repo" / "feature_repo" / "feature_store.yaml").read_text()
        (repo / "feature_store.yaml").write_text(yaml.replace("cache_ttl_seconds: 60", "cache_ttl_seconds: 1"))
        assert "cache_ttl_seconds: 1\n" in (repo / "feature_store.yaml").read_text()
        yield {"cfg": cfg, "start_mlflow": start_mlflow, "env": env, "base": base, "repo": repo, **facts}
    finally:
        control.stop_service(cfg, "mlflow")


def _state_copy(world, name: str) -> dict[str, str]:
    """A copy of what serving reads (feature tables, Feast registry, online store); its env."""
    source, state = Path(world["env"]["CROSSFIT_STATE_DIR"]), world["base"] / name / "state"
    shutil.copytree(source / "data" / "features", state / "data" / "features")
    shutil.copytree(source / "feast", state / "feast")
    return {**world["env"], "CROSSFIT_STATE_DIR": str(state), "CROSSFIT_FEAST_REPO": str(world["repo"])}


def _serve(world, env: dict[str, str], name: str) -> Api:
    return Api(env, world["base"] / f"api-{name}.log", CROSSFIT_SERVING_REFRESH_S="0.5")


def _eventually(probe, done, timeout: float = 90.0):
    """Call ``probe`` until ``done(result)``; the last result either way."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


class Stream:
    """A client posting ``/predict`` for one athlete until stopped; the statuses it got."""

    def __init__(self, url: str, athlete: int):
        self.url, self.athlete = url, athlete
        self.statuses: list[int | str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with requests.Session() as http:
            while not self._stop.is_set():
                try:
                    answer = http.post(f"{self.url}/predict", json={"athlete_id": self.athlete}, timeout=30)
                    self.statuses.append(answer.status_code)
                except requests.RequestException as exc:
                    self.statuses.append(type(exc).__name__)
                time.sleep(0.02)

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def test_feast_registry_deleted_makes_ready_and_predict_503_never_500(world):
    env = _state_copy(world, "registry-deleted")
    registry = Path(env["CROSSFIT_STATE_DIR"]) / "feast" / "registry.db"
    api = _serve(world, env, "registry-deleted")
    athlete = world["serving"][0]
    try:
        api.wait_ready()
        with Stream(api.url, athlete) as stream:
            registry.rename(registry.with_name("registry.gone"))  # the fault: the file is deleted
            ready = _eventually(lambda: api.get("/ready"), lambda r: r.status_code == 503)
            assert ready.status_code == 503, ready.text
            assert ready.json()["error"] == "feature_store_unavailable" and ready.json()["ready"] is False
            assert "Registry not found" in ready.json()["detail"]
            answer = api.post("/predict", {"athlete_id": athlete})
            assert answer.status_code == 503 and answer.json()["error"] == "feature_store_unavailable", answer.text
            assert "Registry not found" in answer.json()["detail"] and "Retry-After" in answer.headers
            # the stream meets the fault too before the repair (on a loaded machine its next request
            # could otherwise come only after it: CI saw a run whose stream got 200s only)
            _eventually(lambda: list(stream.statuses), lambda seen: 503 in seen, timeout=30)
            registry.with_name("registry.gone").rename(registry)  # repaired: ready again, no restart
            api.wait_ready()
            time.sleep(0.5)
        assert api.post("/predict", {"athlete_id": athlete}).status_code == 200
    finally:
        api.stop()
    assert 503 in stream.statuses and 200 in stream.statuses, stream.statuses[:20]
    assert set(stream.statuses) <= {200, 503}, sorted(set(map(str, stream.statuses)))


def test_online_store_missing_at_start_is_not_ready_and_424_until_materialized(world):
    from crossfit_mlops.features.feast_repo import (
        apply_definitions,
        get_store,
        materialize_snapshot,
    )
    from crossfit_mlops.settings import get_settings
    from crossfit_mlops.storage import snapshot_time

    env = _state_copy(world, "no-online-store")
    (Path(env["CROSSFIT_STATE_DIR"]) / "feast" / "online_store.db").unlink()  # the fault
    api = _serve(world, env, "no-online-store")
    known, unknown = world["serving"][0], UNKNOWN
    try:
        ready = _eventually(lambda: api.get("/ready"), lambda r: r.json().get("error") == "feature_store_unavailable")
        assert ready.status_code == 503 and ready.json()["error"] == "feature_store_unavailable", ready.text
        assert "no athlete_features_v2 table" in ready.json()["detail"]
        answer = api.post("/predict", {"athlete_id": known})
        assert answer.status_code == 424 and answer.json()["error"] == "features_unavailable", answer.text
        assert "nothing materialized" in answer.json()["reasons"][str(known)]
        answer = api.post("/predict", {"athlete_id": unknown})
        assert answer.status_code == 404 and answer.json()["error"] == "unknown_athlete", answer.text

        settings = get_settings(env)  # repaired as the pipeline does it: apply, materialize
        store = get_store(settings)
        apply_definitions(settings=settings, store=store)
        materialize_snapshot(snapshot_time(CUR), settings=settings, store=store)
        assert api.wait_ready()["ready"] is True
        answer = api.post("/predict", {"athlete_id": known})
        assert answer.status_code == 200 and answer.json()["features_at"].startswith(CUR), answer.text
    finally:
        api.stop()


def test_registry_down_at_start_and_while_serving(world):
    """Down while serving: still ready, still answering, the refresh error reported. Down at the
    start: the port answers at once, and both /ready and /predict blame the registry, not a
    missing champion. MLflow back: both serve, without a restart."""
    from crossfit_stack import control

    athlete = world["serving"][0]
    serving = _serve(world, world["env"], "registry-down-serving")
    starting = None
    try:
        serving.wait_ready()
        control.stop_service(world["cfg"], "mlflow")  # the fault: the registry's server is gone
        try:
            ready = _eventually(lambda: serving.get("/ready"), lambda r: "refresh_error" in r.json())
            assert ready.status_code == 200 and "unreachable" in ready.json()["refresh_error"], ready.text
            assert serving.post("/predict", {"athlete_id": athlete}).status_code == 200

            starting = _serve(world, world["env"], "registry-down-start")  # answers /health
            ready = _eventually(lambda: starting.get("/ready"), lambda r: r.json().get("error") != "starting")
            assert ready.status_code == 503 and ready.json()["error"] == "registry_unavailable", ready.text
            assert "unreachable" in ready.json()["detail"] and "@champion yet" not in ready.json()["detail"]
            answer = starting.post("/predict", {"athlete_id": athlete})
            assert answer.status_code == 503 and answer.json()["error"] == "registry_unavailable", answer.text
        finally:
            world["start_mlflow"]()
        assert starting.wait_ready(timeout=120)["model_version"] == world["versions"][0]
        assert starting.post("/predict", {"athlete_id": athlete}).status_code == 200
        ready = _eventually(lambda: serving.get("/ready"), lambda r: "refresh_error" not in r.json())
        assert ready.status_code == 200 and "refresh_error" not in ready.json(), ready.text
    finally:
        serving.stop()
        if starting is not None:
            starting.stop()


def test_a_corrupt_feature_table_never_fails_a_request(world):
    env = _state_copy(world, "corrupt-table")
    api = _serve(world, env, "corrupt-table")
    corrupt = Path(env["CROSSFIT_STATE_DIR"]) / "data" / "features" / "athlete_features_v2" / "snapshot_2099-01-01.parquet"
    try:
        api.wait_ready()
        corrupt.write_bytes(b"PAR1" + os.urandom(4096))  # the fault: a table that is not parquet
        answer = _eventually(lambda: api.post("/predict", {"athlete_id": UNKNOWN}),
                             lambda r: "unreadable_feature_tables" in r.json())  # fmt: skip
        assert answer.status_code == 404 and answer.json()["error"] == "unknown_athlete", answer.text
        assert answer.json()["unreadable_feature_tables"] == [corrupt.name]
        assert api.post("/predict", {"athlete_id": world["serving"][0]}).status_code == 200
        assert api.post("/predict", {"athlete_id": world["missing"][0]}).status_code == 424
        ready = api.get("/ready")
        assert ready.status_code == 200 and corrupt.name in ready.json()["warnings"][0], ready.text
        corrupt.unlink()  # repaired
        answer = _eventually(lambda: api.post("/predict", {"athlete_id": UNKNOWN}),
                             lambda r: "unreadable_feature_tables" not in r.json())  # fmt: skip
        assert answer.status_code == 404 and "unreadable_feature_tables" not in answer.json()
        assert "warnings" not in api.get("/ready").json()
    finally:
        api.stop()


def test_a_new_feature_table_is_indexed_while_serving(world):
    """An athlete only in a table that appears later: 404 before, 424 (known, not materialized) after."""
    from crossfit_mlops.features.specs import feature_set

    env = _state_copy(world, "new-table")
    folder = Path(env["CROSSFIT_STATE_DIR"]) / "data" / "features" / feature_set("v2").view_name
    table = folder / f"snapshot_{NEXT}.parquet"
    aside = folder.parent / table.name
    table.rename(aside)
    api = _serve(world, env, "new-table")
    athlete = world["missing"][0]  # in NEXT only
    try:
        api.wait_ready()
        assert api.post("/predict", {"athlete_id": athlete}).status_code == 404
        aside.rename(table)
        answer = _eventually(lambda: api.post("/predict", {"athlete_id": athlete}), lambda r: r.status_code != 404)
        assert answer.status_code == 424 and answer.json()["reasons"][str(athlete)] == "no row in the online store"
    finally:
        api.stop()
