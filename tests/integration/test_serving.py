"""The prediction API over real HTTP, on a real MLflow registry and a materialized Feast store.

One module fixture builds a small world in a temp dir, with the project's own code paths:

- three generated snapshots: OLD (500 days ago: its athletes' online rows are past the 365-day
  TTL), CUR (today, materialized: what serves) and NEXT (tomorrow: engineered, not materialized, so
  its new athletes are known but have no online row);
- a real ``mlflow server``; two LightGBM runs trained on CUR's training sets (V2 and V1), registered
  as versions 1 and 2; version 1 promoted to ``@champion``;
- the API as a real process (``python -m crossfit_mlops serve``) on a free port.

Then every endpoint, every typed error, a champion switch under a stream of requests, the
tutorial's two-hop path through ``mlflow models serve``, and the batch DAG against the API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests

from crossfit_mlops.registry.promotion import promote, register_challenger
from crossfit_mlops.storage import Catalog
from tests.support.services import (
    QUIET_ENV,
    airflow_env,
    dag_test,
    free_port,
    mlflow_server,
    wait_http,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TODAY = date.today()
OLD, CUR, NEXT = (TODAY - timedelta(days=500)).isoformat(), TODAY.isoformat(), (TODAY + timedelta(days=1)).isoformat()
ROWS = 30_000
LGBM = {"n_estimators": 120, "learning_rate": 0.1, "num_leaves": 15}


def _ids(settings, snapshot: str, version: str = "v2") -> set[int]:
    import pandas as pd

    from crossfit_mlops.features.specs import feature_set

    path = Catalog(settings).feature_table_file(feature_set(version).view_name, snapshot)
    return set(pd.read_parquet(path, columns=["athlete_id"])["athlete_id"])



def _prepare_world(settings, uri: str) -> dict:
    """Snapshots, Feast, two trained + registered versions, v1 promoted (the project's code paths)."""
    from crossfit_mlops.data.ingest import ingest_snapshot
    from crossfit_mlops.data.validate import validate_and_clean
    from crossfit_mlops.features.build import build_feature_table
    from crossfit_mlops.features.store import apply_definitions, get_store, materialize_snapshot
    from crossfit_mlops.features.training_sets import build_training_set
    from crossfit_mlops.storage import snapshot_time
    from crossfit_mlops.tracking.runs import ensure_experiment, finish_run, start_parent_run
    from crossfit_mlops.training.grid import TrainingConfig
    from crossfit_mlops.training.train import RunContext, train_candidate

    for index, snapshot in enumerate((OLD, CUR, NEXT)):
        ingest_snapshot(snapshot, rows=ROWS, seed=11 + index, settings=settings)
        validate_and_clean(snapshot, settings=settings)
        for version in ("v1", "v2"):
            build_feature_table(snapshot, version, settings=settings)
    store = get_store(settings)
    apply_definitions(settings=settings, store=store)
    materialize_snapshot(snapshot_time(OLD), settings=settings, store=store)
    materialize_snapshot(snapshot_time(CUR), settings=settings, store=store)  # NEXT: not materialized

    experiment = ensure_experiment(uri, settings.mlflow_experiment)
    parent = start_parent_run(uri, experiment, "serving-test", {"pipeline": "serving-test"})
    ctx = RunContext(uri, experiment, parent, str(settings.emissions_dir), tags={"test": "serving"})
    summaries = {}
    for version in ("v2", "v1"):
        training_set = build_training_set(CUR, version, settings=settings)
        config = TrainingConfig(model="lightgbm", feature_version=version, params=LGBM)
        summaries[version] = train_candidate(config, training_set, ctx)
    finish_run(uri, parent)
    name = settings.registered_model_name
    v_first = register_challenger(uri, name, summaries["v2"], {"test": "serving"})
    promote(uri, name, v_first)
    v_second = register_challenger(uri, name, summaries["v1"], {"test": "serving"})  # promoted by a test
    cur, old, nxt = _ids(settings, CUR), _ids(settings, OLD), _ids(settings, NEXT)
    return {
        "versions": (v_first, v_second),
        "serving": sorted(cur)[:50],
        "expired": sorted(old - cur - nxt)[:3],
        "missing": sorted(nxt - cur - old)[:3],
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from crossfit_mlops.settings import get_settings

    base = tmp_path_factory.mktemp("serving")
    state = base / "state"
    with mlflow_server(base / "mlflow_state") as uri:
        env = {**os.environ, **QUIET_ENV, "CROSSFIT_STATE_DIR": str(state), "MLFLOW_TRACKING_URI": uri}
        for name in ("CROSSFIT_FEAST_DIR", "CROSSFIT_FEAST_REGISTRY", "CROSSFIT_FEAST_ONLINE_STORE", "CROSSFIT_RAW_FILE"):
            env.pop(name, None)
        settings = get_settings(env)
        facts = _prepare_world(settings, uri)
        assert facts["expired"] and facts["missing"], facts
        yield {"uri": uri, "env": env, "settings": settings, "base": base, **facts}


class Api:
    """``python -m crossfit_mlops serve`` as a real process on a free port."""

    def __init__(self, env: dict[str, str], log: Path, **overrides: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crossfit_mlops", "serve", "--port", str(self.port), "--log-level", "warning"],
            env={**env, **overrides}, stdout=log.open("w"), stderr=subprocess.STDOUT,
        )
        wait_http(f"{self.url}/health", self.proc, log)
        self.http = requests.Session()

    def post(self, path: str, body) -> requests.Response:
        return self.http.post(f"{self.url}{path}", json=body, timeout=30)

    def get(self, path: str) -> requests.Response:
        return self.http.get(f"{self.url}{path}", timeout=30)

    def wait_ready(self, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.get("/ready")
            if response.status_code == 200:
                return response.json()
            time.sleep(0.3)
        raise AssertionError(f"not ready: {response.text} {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def api(world):
    server = Api(
        world["env"], world["base"] / "api.log", CROSSFIT_SERVING_MAX_BATCH="20", CROSSFIT_SERVING_REFRESH_S="0.5"
    )
    server.wait_ready()
    yield server
    server.stop()


def _reference(world, athlete_ids: list[int], version: str) -> list[float]:
    """What the registered version predicts for the athletes' CUR features (offline, point in time)."""
    import mlflow
    import pandas as pd

    from crossfit_mlops.features.store import historical_features
    from crossfit_mlops.storage import snapshot_time
    from crossfit_mlops.tracking import client

    settings = world["settings"]
    mv = client(world["uri"]).get_model_version(settings.registered_model_name, version)
    entity = pd.DataFrame({"athlete_id": athlete_ids, "event_timestamp": snapshot_time(CUR)})
    features = historical_features(entity, mv.tags["feature_version"], settings=settings)
    mlflow.set_tracking_uri(world["uri"])
    model = mlflow.pyfunc.load_model(f"models:/{settings.registered_model_name}/{version}")
    columns = model.metadata.get_input_schema().input_names()
    return [float(v) for v in model.predict(features[columns])]


def test_health_ready_and_model_describe_the_champion(world, api):
    assert api.get("/health").json() == {"status": "ok"}
    ready = api.get("/ready").json()
    assert ready == {"ready": True, "model_version": world["versions"][0], "feature_version": "v2"}
    model = api.get("/model").json()
    assert model["version"] == world["versions"][0] and model["feature_version"] == "v2"
    assert model["feature_service"] == "model_v2" and model["snapshot_id"] == CUR
    assert model["training_metrics"]["val_rmse"] > 0 and "test_r2" in model["training_metrics"]
    assert len(model["features"]) == 34
    docs = api.get("/openapi.json").json()
    assert {"/predict", "/predict/features", "/health", "/ready", "/model"} <= set(docs["paths"])


def test_predict_one_athlete_from_the_online_store(world, api):
    athlete = world["serving"][0]
    response = api.post("/predict", {"athlete_id": athlete})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["athlete_id"] == athlete and body["model_version"] == world["versions"][0]
    assert body["feature_version"] == "v2" and body["model_name"] == world["settings"].registered_model_name
    assert body["features_at"].startswith(CUR)
    assert body["prediction"] == pytest.approx(_reference(world, [athlete], world["versions"][0])[0], rel=1e-9)


def test_predict_batch_keeps_the_order(world, api):
    athletes = list(reversed(world["serving"][:10]))
    response = api.post("/predict", {"athlete_ids": athletes})
    assert response.status_code == 200, response.text
    items = response.json()["predictions"]
    assert [i["athlete_id"] for i in items] == athletes
    assert [i["prediction"] for i in items] == pytest.approx(_reference(world, athletes, world["versions"][0]), rel=1e-9)


def test_predict_features_in_the_body_matches_the_store_path(world, api):
    from crossfit_mlops.features.store import online_features

    athlete = world["serving"][1]
    row = online_features([athlete], "v2", settings=world["settings"]).drop(columns=["athlete_id"]).iloc[0]
    features = {k: (int(v) if float(v).is_integer() else float(v)) for k, v in row.items()}
    by_body = api.post("/predict/features", {"features": features})
    assert by_body.status_code == 200, by_body.text
    by_id = api.post("/predict", {"athlete_id": athlete}).json()
    assert by_body.json()["predictions"] == [pytest.approx(by_id["prediction"], rel=1e-9)]
    two = api.post("/predict/features", {"instances": [features, features]})
    assert len(two.json()["predictions"]) == 2

    name = next(iter(features))
    missing = {k: v for k, v in features.items() if k != name}
    response = api.post("/predict/features", {"features": missing})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "features", name]
    response = api.post("/predict/features", {"features": {**features, "bench_press": 300}})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "features", "bench_press"]
    response = api.post("/predict/features", {"instances": [features, {**features, name: "heavy"}]})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "instances", 1, name]


def test_typed_errors(world, api):
    response = api.post("/predict", {"athlete_id": 987654321})
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_athlete" and "987654321" in response.json()["detail"]

    missing = world["missing"][0]
    response = api.post("/predict", {"athlete_id": missing})
    assert response.status_code == 424, response.text
    assert response.json()["error"] == "features_unavailable"
    assert response.json()["reasons"][str(missing)] == "no row in the online store"

    expired = world["expired"][0]
    response = api.post("/predict", {"athlete_ids": [world["serving"][0], expired]})
    assert response.status_code == 424, response.text
    assert response.json()["athlete_ids"] == [expired]
    assert response.json()["reasons"][str(expired)].startswith("expired")

    response = api.post("/predict", {"athlete_id": "two thousand"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "athlete_id"]
    response = api.post("/predict", {"athlete_id": 1, "athlete_ids": [2]})
    assert response.status_code == 422 and "exactly one" in response.text
    response = api.post("/predict", {"athlete_ids": world["serving"][:21]})
    assert response.status_code == 413 and response.json() == {
        "error": "batch_too_large", "detail": "21 rows in one request; the limit is 20", "limit": 20
    }


def test_no_champion_is_503_with_the_reason(world):
    server = Api(world["env"], world["base"] / "api-empty.log", CROSSFIT_REGISTERED_MODEL="no_such_model")
    try:
        assert server.get("/health").status_code == 200
        ready = server.get("/ready")
        assert ready.status_code == 503 and "no_such_model" in ready.json()["reason"]
        response = server.post("/predict", {"athlete_id": world["serving"][0]})
        assert response.status_code == 503
        assert response.json()["error"] == "no_champion" and "no_such_model" in response.json()["detail"]
    finally:
        server.stop()


def test_champion_switch_under_a_stream_of_requests(world, api):
    """@champion moves v1 (V2 features) -> v2 (V1 features) while a client keeps asking."""
    first, second = world["versions"]
    athlete = world["serving"][2]
    seen, failures, stop = [], [], threading.Event()

    def stream():
        with requests.Session() as http:
            while not stop.is_set():
                try:
                    response = http.post(f"{api.url}/predict", json={"athlete_id": athlete}, timeout=10)
                    if response.status_code != 200:
                        failures.append(response.text)
                    else:
                        seen.append((response.json()["model_version"], response.json()["prediction"]))
                except requests.RequestException as exc:
                    failures.append(repr(exc))

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        time.sleep(1.0)
        promote(world["uri"], world["settings"].registered_model_name, second)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (seen and seen[-1][0] == second):
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(timeout=30)
        promote(world["uri"], world["settings"].registered_model_name, first)  # leave v1 for the other tests
        api.wait_ready()
        deadline = time.monotonic() + 60
        while api.get("/model").json()["version"] != first and time.monotonic() < deadline:
            time.sleep(0.2)
    assert not failures, failures[:5]
    versions = [v for v, _ in seen]
    assert versions[0] == first and versions[-1] == second, versions
    switch = versions.index(second)
    assert set(versions[switch:]) == {second}, "a request went back to the old model after the switch"
    expected = _reference(world, [athlete], second)[0]
    assert seen[-1][1] == pytest.approx(expected, rel=1e-9)
    assert len(seen) > 20


def test_the_tutorials_two_hop_path_through_mlflow_models_serve(world, api):
    port = free_port()
    model_uri = f"models:/{world['settings'].registered_model_name}@champion"
    log = world["base"] / "mlflow-serve.log"
    serve = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", model_uri,
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        # it execs `uvicorn` by name: the virtualenv's bin must be on PATH, as in an activated venv
        env={**world["env"], "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", serve, log, timeout=120)
        athletes = world["serving"][3:5]
        args = [sys.executable, "-m", "crossfit_mlops", "predict-two-hop", "--endpoint", f"http://127.0.0.1:{port}/invocations"]
        for athlete in athletes:
            args += ["--athlete-id", str(athlete)]
        done = subprocess.run(args, env=world["env"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        two_hop = json.loads(done.stdout)
        assert two_hop["model_version"] == world["versions"][0] and two_hop["feature_version"] == "v2"
        one_hop = api.post("/predict", {"athlete_ids": athletes}).json()["predictions"]
        for item in one_hop:
            assert two_hop["predictions"][str(item["athlete_id"])] == pytest.approx(item["prediction"], rel=1e-6)
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, 15)
            serve.wait(timeout=30)


def test_batch_dag_scores_every_athlete_like_the_api(world, api):
    import pandas as pd

    from crossfit_mlops.serving.batch import BATCH_EXPERIMENT
    from crossfit_mlops.tracking import client

    env = airflow_env(world["base"] / "airflow", world["settings"].state_dir, world["uri"])
    env = {**env, **{k: v for k, v in world["env"].items() if k.startswith(("CROSSFIT_", "MLFLOW_"))}}
    run = dag_test(env, "crossfit_batch_inference", {"snapshot": CUR}, timeout=600)
    assert run.state == "success", run.log[-5000:]
    run_id = run.run_id

    from crossfit_mlops.serving.batch import partition_dir

    path = partition_dir(world["settings"], CUR, run_id) / "predictions.parquet"
    scored = pd.read_parquet(path)
    assert len(scored) == len(_ids(world["settings"], CUR))
    assert set(scored.columns) == {
        "athlete_id", "prediction", "model_name", "model_version", "feature_version", "snapshot_id", "scored_at"
    }
    assert set(scored["model_version"]) == {world["versions"][0]} and set(scored["snapshot_id"]) == {CUR}
    assert not any(p.name.startswith(".") for p in path.parent.parent.iterdir()), "a temp partition was left"

    athletes = world["serving"][:20]
    api_items = api.post("/predict", {"athlete_ids": athletes}).json()["predictions"]
    batch = scored.set_index("athlete_id").loc[athletes, "prediction"]
    assert list(batch) == pytest.approx([i["prediction"] for i in api_items], rel=1e-9)

    c = client(world["uri"])
    experiment = c.get_experiment_by_name(BATCH_EXPERIMENT)
    runs = c.search_runs([experiment.experiment_id], filter_string=f"tags.`airflow.run_id` = '{run_id}'")
    assert len(runs) == 1 and runs[0].data.metrics["rows_scored"] == len(scored)
    assert runs[0].data.tags["predictions_path"] == str(path)
