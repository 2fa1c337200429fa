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
from contextlib import contextmanager
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



def _prepare_world(settings, uri: str, rows: int = ROWS) -> dict:
    """Snapshots, Feast, two trained + registered versions, v1 promoted (the project's code paths)."""
    from crossfit_mlops.data.ingest import ingest_snapshot
    from crossfit_mlops.data.validate import validate_and_clean
    from crossfit_mlops.features.build import build_feature_table
    from crossfit_mlops.features.feast_repo import (
        apply_definitions,
        get_store,
        materialize_snapshot,
    )
    from crossfit_mlops.features.training_sets import build_training_set
    from crossfit_mlops.storage import snapshot_time
    from crossfit_mlops.tracking.runs import ensure_experiment, finish_run, start_parent_run
    from crossfit_mlops.training.grid import TrainingConfig
    from crossfit_mlops.training.train import RunContext, train_candidate

    for index, snapshot in enumerate((OLD, CUR, NEXT)):
        ingest_snapshot(snapshot, rows=rows, seed=11 + index, settings=settings)
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


@contextmanager
def serving_world(base: Path, rows: int = ROWS):
    """The world in ``base``: a real MLflow server, the snapshots, Feast and two registered versions
    (the first ``@champion``, the second ``@challenger``); also used by test_live_serving.py."""
    from crossfit_mlops.settings import get_settings

    state = base / "state"
    with mlflow_server(base / "mlflow_state") as uri:
        env = {**os.environ, **QUIET_ENV, "CROSSFIT_STATE_DIR": str(state), "MLFLOW_TRACKING_URI": uri}
        for name in ("CROSSFIT_FEAST_DIR", "CROSSFIT_FEAST_REGISTRY", "CROSSFIT_FEAST_ONLINE_STORE", "CROSSFIT_RAW_FILE"):
            env.pop(name, None)
        settings = get_settings(env)
        facts = _prepare_world(settings, uri, rows)
        assert facts["expired"] and facts["missing"], facts
        yield {"uri": uri, "env": env, "settings": settings, "base": base, **facts}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with serving_world(tmp_path_factory.mktemp("serving")) as built:
        yield built


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

    from crossfit_mlops.features.feast_repo import historical_features
    from crossfit_mlops.storage import snapshot_time
    from crossfit_mlops.tracking import client, fluent

    settings = world["settings"]
    mv = client(world["uri"]).get_model_version(settings.registered_model_name, version)
    entity = pd.DataFrame({"athlete_id": athlete_ids, "event_timestamp": snapshot_time(CUR)})
    features = historical_features(entity, mv.tags["feature_version"], settings=settings)
    with fluent(world["uri"]):  # the process-wide URI for this block only
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
    since = model["champion_since"]  # from the alias history: when, by whom and why it became champion
    assert since["event"] == "promotion" and since["actor"] == "pipeline" and since["at"].startswith("20"), since
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
    from crossfit_mlops.features.feast_repo import online_features

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


# --- under attack: bad input, oversized input, the one error shape, the documentation ------------
def _features_of(world, athlete: int) -> dict:
    """The athlete's V2 features from the online store, as a client would send them."""
    from crossfit_mlops.features.feast_repo import online_features

    row = online_features([athlete], "v2", settings=world["settings"]).drop(columns=["athlete_id"]).iloc[0]
    return {k: (int(v) if float(v).is_integer() else float(v)) for k, v in row.items()}


def _strict_json(data: bytes):
    """Parse a response body as strict JSON: NaN or Infinity in it is a failure."""
    def refuse(token):
        raise AssertionError(f"the response contains {token}, which is not JSON")

    return json.loads(data, parse_constant=refuse)


def _exchange(conn, path: str, body, content_type: str = "application/json"):
    conn.request("POST", path, body=body, headers={"Content-Type": content_type})
    response = conn.getresponse()
    return response, response.read()


def test_non_finite_and_overflowing_numbers_are_422_and_the_connection_stays(world, api):
    import http.client

    athlete = world["serving"][0]
    features = json.dumps({"features": {**_features_of(world, athlete), "age": 1234567}})
    cases = [
        ("/predict", '{"athlete_id": NaN}', ["body", "athlete_id"]),
        ("/predict", '{"athlete_id": Infinity}', ["body", "athlete_id"]),
        ("/predict", '{"athlete_ids": [1, -Infinity]}', ["body", "athlete_ids", 1]),
        ("/predict", '{"athlete_id": ' + "9" * 5000 + "}", ["body", "athlete_id"]),  # past Python's int limit
        ("/predict", json.dumps({"athlete_id": 2**64}), ["body", "athlete_id"]),  # past int64
        ("/predict/features", features.replace("1234567", "NaN"), ["body", "features", "age"]),
        ("/predict/features", features.replace("1234567", "-Infinity"), ["body", "features", "age"]),
        ("/predict/features", features.replace("1234567", "1e400"), ["body", "features", "age"]),
        ("/predict/features", features.replace("1234567", "9" * 400), ["body", "features", "age"]),  # float() overflows
    ]
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    try:
        for path, body, loc in cases:
            response, data = _exchange(conn, path, body)
            assert response.status == 422, (body[:60], data[:300])
            answer = _strict_json(data)
            assert answer["error"] == "invalid_input" and answer["detail"][0]["loc"] == loc, (body[:60], answer)
            assert len(data) < 1000, "an error echoed a huge input"
            sock = conn.sock
            response, data = _exchange(conn, "/predict", json.dumps({"athlete_id": athlete}))
            assert response.status == 200, data[:300]
            assert conn.sock is sock, f"the connection was dropped after {body[:60]!r}"
    finally:
        conn.close()


def test_implausible_features_are_422_naming_the_bound(world, api):
    features = _features_of(world, world["serving"][0])
    survey = next(name for name in features if "__" in name)
    refused = {
        "age": [-5, 17, 91, 1e308], "height_in": [48, 96, 0.5], "weight_lb": [69.9, 501], "bmi": [0, 200],
        "is_male": [2, -1], "region_code": [-2, 17], survey: [2, -1],
    }  # fmt: skip
    for name, values in refused.items():
        for value in values:
            response = api.post("/predict/features", {"features": {**features, name: value}})
            assert response.status_code == 422, (name, value, response.text)
            error = response.json()["detail"][0]
            assert error["loc"] == ["body", "features", name] and error["type"] == "out_of_range", (name, value, error)
            assert error["msg"].startswith("must be between") and error["input"] == value
    accepted = {"age": [18, 90], "height_in": [48.5, 95.5], "weight_lb": [70, 500], "region_code": [-1, 16]}
    for name, values in accepted.items():
        for value in values:
            response = api.post("/predict/features", {"features": {**features, name: value}})
            assert response.status_code == 200, (name, value, response.text)
    response = api.post("/predict/features", {"features": {**features, "is_male": 0.5}})
    assert response.status_code == 422 and response.json()["detail"][0]["msg"] == "must be an integer"


def test_the_bounds_hold_every_engineered_feature_value(world):
    """No real athlete's features are refused: every value of every table is inside its bounds."""
    import pandas as pd

    from crossfit_mlops.features.specs import feature_bounds, feature_set

    for snapshot in (OLD, CUR, NEXT):
        for version in ("v1", "v2"):
            table = pd.read_parquet(Catalog(world["settings"]).feature_table_file(feature_set(version).view_name, snapshot))
            for name, bounds in feature_bounds(version).items():
                outside = table[~table[name].map(bounds.contains)][name]
                assert outside.empty, f"{snapshot} {version} {name}: {outside.head().tolist()} not {bounds.describe()}"


def test_request_limits_refuse_before_parsing(world, api):
    import socket

    # a declared 100 MB body is refused from its headers: the client has sent 64 KiB of it
    with socket.create_connection(("127.0.0.1", api.port), timeout=30) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000000\r\n\r\n" + b" " * 65536)  # fmt: skip
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, f"the server closed without an answer: {data!r}"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["error"] == "body_too_large"
    limit = json.loads(body)["limit"]

    chunked = api.http.post(f"{api.url}/predict", data=(b" " * 65536 for _ in range(limit // 65536 + 2)),
                            headers={"Content-Type": "application/json"}, timeout=60)  # fmt: skip
    assert chunked.status_code == 413 and chunked.json()["error"] == "body_too_large"

    features = _features_of(world, world["serving"][0])
    flood = api.post("/predict/features", {"features": {**features, **{f"unknown_{i}": 1 for i in range(100_000)}}})
    assert flood.status_code == 413 and flood.json()["error"] == "body_too_large" and len(flood.content) < 500

    keys = api.post("/predict/features", {"features": {str(i): 1 for i in range(20_000)}})
    assert keys.status_code == 413 and keys.json()["error"] == "too_many_items", keys.text[:300]

    # within the limits, a body of 5,000 unknown keys gets a short answer: 20 errors and the count
    many = api.post("/predict/features", {"features": {**features, **{f"unknown_{i}": 1 for i in range(5000)}}})
    assert many.status_code == 422 and len(many.json()["detail"]) == 20
    assert many.json()["errors_total"] == 5000 and len(many.content) < 10_000
    assert api.get("/health").status_code == 200


def test_every_bad_request_gets_the_one_error_shape(api):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    cases = [
        ("POST", "/predict", b'{"athlete_id": ', "application/json", 422),  # truncated JSON
        ("POST", "/predict", b"\xff\xfe\xfa\x00", "application/json", 422),  # not UTF-8
        ("POST", "/predict", b"[" * 100_000 + b"]" * 100_000, "application/json", 422),  # nesting
        ("POST", "/predict", b"athlete_id=1", "application/x-www-form-urlencoded", 422),
        ("POST", "/predict", b"[1, 2]", "application/json", 422),
        ("POST", "/predict", b"", "application/json", 422),
        ("POST", "/predict", b'{"athlete_id": "' + b"7" * 500_000 + b'"}', "application/json", 422),
        ("GET", "/predict", None, None, 405),
        ("GET", "/no/such/path", None, None, 404),
    ]
    try:
        for method, path, body, content_type, status in cases:
            conn.request(method, path, body=body, headers={"Content-Type": content_type} if content_type else {})
            response = conn.getresponse()
            data = response.read()
            answer = _strict_json(data)
            assert response.status == status, (path, body[:40] if body else None, data[:300])
            assert {"error", "detail"} <= set(answer), answer
            assert len(data) < 2000, "an error echoed the input"
    finally:
        conn.close()


def test_openapi_lists_every_response_with_real_examples(world, api):
    paths = api.get("/openapi.json").json()["paths"]
    expected = {("/predict", "post"): {"200", "404", "413", "422", "424", "503"},
                ("/predict/features", "post"): {"200", "413", "422", "503"},
                ("/ready", "get"): {"200", "503"}, ("/model", "get"): {"200", "503"}}  # fmt: skip
    for (path, method), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert statuses <= set(responses), (path, sorted(responses))
        for status in statuses - {"200"}:
            examples = responses[status]["content"]["application/json"]["examples"]
            assert examples and all("error" in e["value"] for e in examples.values()), (path, status)

    for path in ("/predict", "/predict/features"):
        operation = paths[path]["post"]
        requests_ = operation["requestBody"]["content"]["application/json"]["examples"]
        answers = operation["responses"]["200"]["content"]["application/json"]["examples"]
        for name, example in requests_.items():
            response = api.post(path, example["value"])
            assert response.status_code == 200, (path, example, response.text)
            documented = answers[name]["value"]
            assert response.json()["predictions" if "predictions" in documented else "prediction"] == (
                documented["predictions" if "predictions" in documented else "prediction"]
            ), (path, name)
    one = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]["examples"]["one athlete"]["value"]
    assert one["athlete_id"] in _ids(world["settings"], CUR)
