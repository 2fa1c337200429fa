"""The scale-out profile (``CROSSFIT_PROFILE=cluster``), run for real on this machine.

Airflow on the CeleryExecutor (broker: a Redis database of the local server; metadata and Celery
results: PostgreSQL) with the two Celery workers the stack starts, the training tasks routed to
the ``training`` queue; MLflow on PostgreSQL with basic-auth, its artifacts in SeaweedFS (S3 API)
proxied by the server; Feast with the SQL registry (PostgreSQL) and the Redis online store. The
settings are the profile's, pointed at this test's own databases, Redis databases, ports and
bucket; all of it is removed afterwards.

The training DAG runs through the REST API; the test proves that every training task ran on a
Celery worker from the ``training`` queue, that both workers ran tasks (``hostname`` of each task
instance names the worker), that ``models:/crossfit_total_lift@champion`` loads, with its bytes in
the object store (listed through the S3 API), that no client needed an S3 key, that a client
without MLflow's credential cannot move the alias, and that the prediction API serves it. It also
covers what the former production-topology test checked on the LocalExecutor: the fan-out runs in
parallel, and the registry, Airflow's runs and Feast's registry live in their PostgreSQL databases.

The stack's faults are injected into the same stack (one stack start in CI instead of two): the
MLflow server is killed (``kill -9``) as the run starts, and the run still succeeds after
supervisord restarts it; later the Airflow api-server and the prediction API's launcher are
killed, and both come back (the API's orphaned process ended first) and answer.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from datetime import datetime

import psutil
import pytest
import requests

from crossfit_mlops.dag_contract import TRAINING_DAG
from crossfit_mlops.dag_contract import TrainingTasks as T
from tests.support.services import (
    database_left_to_create,
    empty_redis_db,
    free_port_block,
    mlflow_credentials,
    postgres_database,
    running_stack,
    stack_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GRID = [
    {"model": "lightgbm", "feature_version": version, "params": {"n_estimators": n, "num_leaves": 15}}
    for version in ("v1", "v2")
    for n in (40, 80)
]


def _query(uri: str, sql: str) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(uri.replace("postgresql+psycopg2://", "postgresql://")) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


S3_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "MLFLOW_S3_ENDPOINT_URL")


def _cluster_env(state, mlflow_db, airflow_db, feast_db, broker_db, feast_redis_db, bucket, locks_db) -> dict[str, str]:
    env = stack_env(
        state,
        CROSSFIT_PROFILE="cluster",
        CROSSFIT_MLFLOW_BACKEND_URI=mlflow_db,
        CROSSFIT_AIRFLOW_DB_URI=airflow_db,
        CROSSFIT_CELERY_RESULT_BACKEND=f"db+{airflow_db}",
        CROSSFIT_FEAST_REGISTRY_URI=feast_db,
        CROSSFIT_CELERY_BROKER_URL=f"redis://127.0.0.1:6379/{broker_db}",
        CROSSFIT_FEAST_REDIS=f"127.0.0.1:6379,db={feast_redis_db}",
        CROSSFIT_S3_PORT=str(free_port_block(8)),
        CROSSFIT_ARTIFACTS_DESTINATION=f"s3://{bucket}/",
        CROSSFIT_LOCK_URI=locks_db,
        # no S3 credential given: the stack makes MLflow's (the server's alone) and the pipeline's
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
        AWS_CONFIG_FILE="/nonexistent",
    )
    return {k: v for k, v in env.items() if k not in S3_CREDENTIALS}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The cluster stack on this test's own databases, Redis databases, ports and bucket, and one
    training run on it, during which the MLflow server is killed (``kill -9``) right after the
    trigger: the fault tests below read what that did, the others what the run left."""
    from crossfit_stack import control

    state = tmp_path_factory.mktemp("cluster") / "state"
    bucket = f"crossfit-test-{uuid.uuid4().hex[:8]}"
    with (
        postgres_database("crossfit_test_cl_mlflow") as mlflow_db,
        database_left_to_create("crossfit_test_cl_airflow") as airflow_db,  # the stack creates it
        postgres_database("crossfit_test_cl_feast") as feast_db,
        empty_redis_db() as broker_db,
        empty_redis_db() as feast_redis_db,
        database_left_to_create("crossfit_test_cl_locks") as locks_db,  # the stack creates it
    ):
        env = _cluster_env(state, mlflow_db, airflow_db, feast_db, broker_db, feast_redis_db, bucket, locks_db)
        assert not set(S3_CREDENTIALS) & set(env), "the stack must be started without an S3 key"
        with running_stack(env, TRAINING_DAG) as (cfg, client), pytest.MonkeyPatch.context() as mp:
            for name, value in mlflow_credentials(cfg).items():
                mp.setenv(name, value)
            client.unpause(TRAINING_DAG)
            run_id = client.trigger(TRAINING_DAG, {"rows": 5000, "snapshot": "2026-11-04", "grid": GRID, "r2_floor": 0.0})
            killed = control.running_pid(cfg, "mlflow")
            os.kill(killed, signal.SIGKILL)  # the fault: MLflow dies as the run starts
            _wait_back(cfg, "mlflow", killed, f"{cfg.mlflow_url}/health")
            run = client.wait_for_run(TRAINING_DAG, run_id, timeout=1200, poll=3.0)
            yield {
                "cfg": cfg, "client": client, "run_id": run_id, "run": run, "bucket": bucket,
                "mlflow_db": mlflow_db, "airflow_db": airflow_db, "feast_db": feast_db, "feast_redis_db": feast_redis_db,
            }  # fmt: skip
    assert not list((state / "run").glob("*.json"))


def _wait_back(cfg, name: str, old_pid: int, url: str | None, timeout: float = 180) -> int:
    from crossfit_stack import control

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = control.running_pid(cfg, name)
        if pid and pid != old_pid and (url is None or control.http_ok(url)):
            return pid
        time.sleep(0.5)
    raise AssertionError(f"{name} did not come back: {control.describe(cfg)}")


def test_training_on_the_cluster_profile(cluster):
    from crossfit_stack import control
    from crossfit_stack import programs as stack_programs

    cfg, client, run_id, run = cluster["cfg"], cluster["client"], cluster["run_id"], cluster["run"]
    assert cfg.executor == "CeleryExecutor" and cfg.celery_workers == 2 and cfg.mlflow_auth
    assert run["state"] == "success", f"{run}; logs in {cfg.airflow_home / 'logs'}"
    _check_data_in_the_bucket(cfg, cluster["bucket"], control.stack_environment(cfg))

    # every training task ran on a Celery worker, taken from the training queue; both workers ran tasks
    tis = client.task_instances(TRAINING_DAG, run_id)
    training = [t for t in tis if t["task_id"] == T.TRAIN]
    assert len(training) == 4 and all(t["state"] == "success" for t in training)
    assert {t["queue"] for t in training} == {"training"}, [t["queue"] for t in training]
    assert {t["queue"] for t in tis if t["task_id"] != T.TRAIN and t["state"] == "success"} == {"default"}
    workers = {t["hostname"].split(".", 1)[0] for t in tis if t["hostname"]}
    assert workers == {"worker1", "worker2"}, {t["task_id"]: t["hostname"] for t in tis}
    assert all(t["hostname"].split(".", 1)[0] in {"worker1", "worker2"} for t in training)
    # the fan-out ran in parallel: at least two training tasks at once
    spans = sorted((datetime.fromisoformat(t["start_date"]), datetime.fromisoformat(t["end_date"])) for t in training)
    assert max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans) >= 2, spans
    # Celery's own record: both nodes consume the training queue
    consumers = _celery_queues(cfg)
    assert {"worker1", "worker2"} <= {node.split("@")[0] for node, queues in consumers.items() if "training" in queues}

    _check_champion_in_object_store(cfg, cluster["bucket"])
    # MLflow's registry is in its PostgreSQL database: the alias row is there
    aliases = _query(cluster["mlflow_db"], "SELECT name, alias, version FROM registered_model_aliases")
    assert (cfg.settings.registered_model_name, "champion", 1) in aliases
    # Airflow's metadata and Celery's results in the database the stack created
    assert _query(cluster["airflow_db"], f"SELECT state FROM dag_run WHERE run_id = '{run_id}'") == [("success",)]
    assert _query(cluster["airflow_db"], "SELECT count(*) FROM celery_taskmeta")[0][0] > 0
    # Feast: SQL registry in PostgreSQL, online rows in Redis
    assert len(_query(cluster["feast_db"], "SELECT feature_view_name FROM feature_views")) == 2
    import redis

    assert redis.Redis(host="127.0.0.1", port=6379, db=cluster["feast_redis_db"]).dbsize() > 100

    # the prediction API serves the champion
    assert control.start_api(cfg) in {"started", "reused"}
    _check_api_serves(cfg)
    assert stack_programs.OBJECT_STORE in control.service_names(cfg)


def test_mlflow_killed_as_the_run_started_was_restarted_and_the_run_rode_it_out(cluster):
    cfg = cluster["cfg"]
    assert "exited: mlflow (exit status 137; not expected)" in _supervisord_log(cfg)
    assert "launch[mlflow]: service exited (-9); ending" in (cfg.log_dir / "mlflow.log").read_text()
    assert cluster["run"]["state"] == "success", cluster["run"]


def test_without_the_credential_nobody_moves_the_champion(cluster, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from crossfit_mlops.ops.connections import ServiceCheckError, check_mlflow

    cfg = cluster["cfg"]
    name = cfg.settings.registered_model_name
    authed = MlflowClient(cfg.mlflow_url)
    champion = authed.get_model_version_by_alias(name, "champion").version
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(MlflowException, match="401"):
        MlflowClient(cfg.mlflow_url).set_registered_model_alias(name, "champion", "1")
    with pytest.raises(MlflowException, match="401"):
        MlflowClient(cfg.mlflow_url).delete_registered_model_alias(name, "champion")
    anonymous = requests.post(
        f"{cfg.mlflow_url}/api/2.0/mlflow/registered-models/alias",
        json={"name": name, "alias": "champion", "version": champion}, timeout=30,
    )  # fmt: skip
    assert anonymous.status_code == 401
    with pytest.raises(ServiceCheckError, match="refused the credentials"):
        check_mlflow(cfg.mlflow_url)
    monkeypatch.undo()
    assert MlflowClient(cfg.mlflow_url).get_model_version_by_alias(name, "champion").version == champion


def test_killed_api_server_and_prediction_api_are_restarted(cluster):
    from crossfit_stack import control

    cfg = cluster["cfg"]
    assert control.start_api(cfg) in {"started", "reused"}
    api_server = control.running_pid(cfg, "airflow-api-server")
    os.kill(api_server, signal.SIGKILL)
    api = control.running_pid(cfg, "api")
    os.kill(control.supervisor(cfg).info("api")["pid"], signal.SIGKILL)  # its launcher: the API is orphaned
    _wait_back(cfg, "airflow-api-server", api_server, f"{cfg.airflow_url}/api/v2/monitor/health")
    _wait_back(cfg, "api", api, f"{cfg.api_url}/ready")
    assert "exited: api (terminated by SIGKILL; not expected)" in _supervisord_log(cfg)
    assert "launch[api]: ending 1 processes left by the previous instance" in (cfg.log_dir / "api.log").read_text()
    assert not psutil.pid_exists(api), "the orphaned API process should have been ended"
    assert {row["state"] for row in control.describe(cfg)} == {"RUNNING"}, control.describe(cfg)
    # the restarted api-server answers the REST API (a fresh login), and the API serves the champion
    assert control.airflow_client(cfg).dag_run(TRAINING_DAG, cluster["run_id"])["state"] == "success"
    _check_api_serves(cfg)


def _supervisord_log(cfg) -> str:
    return (cfg.log_dir / "supervisord.log").read_text()


def _check_api_serves(cfg) -> None:
    from crossfit_mlops.serving.online import example_athlete

    answer = requests.post(f"{cfg.api_url}/predict", json={"athlete_id": example_athlete(cfg.settings)}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == "1"


def _celery_queues(cfg) -> dict[str, list[str]]:
    """``celery inspect active_queues`` through Airflow's Celery app: node -> queue names."""
    import json
    import subprocess
    import sys

    from crossfit_stack import control

    code = (
        "import json; from airflow.providers.celery.executors.celery_executor import app; "
        "print('QUEUES=' + json.dumps({n: [q['name'] for q in qs] for n, qs in (app.control.inspect(timeout=10).active_queues() or {}).items()}))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=control.service_env(cfg), capture_output=True, text=True, timeout=120)
    line = next((x for x in done.stdout.splitlines() if x.startswith("QUEUES=")), None)
    assert line, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(line.removeprefix("QUEUES="))


def _check_data_in_the_bucket(cfg, artifacts_bucket: str, env: dict[str, str]) -> None:
    """The pipeline's data is in its bucket, read and written with the pipeline's own key pair (not
    MLflow's, which only the server holds, and which the pipeline's pair cannot stand in for); no
    data, emissions, monitoring or lock file was written under the state directory."""
    import boto3
    from botocore.exceptions import ClientError

    from crossfit_stack import provision

    secrets = provision.ensure_secrets(cfg)
    assert cfg.settings.data_url == "s3://crossfit-data" and "crossfit_test_cl_locks" in cfg.settings.lock_uri
    assert env["AWS_ACCESS_KEY_ID"] == secrets["s3_data_access_key"] != secrets["s3_access_key"]
    assert "MLFLOW_S3_ENDPOINT_URL" not in env and env["CROSSFIT_S3_ENDPOINT"] == cfg.s3_endpoint
    s3 = boto3.client("s3", endpoint_url=cfg.s3_endpoint, region_name="us-east-1",
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="crossfit-data") for o in page.get("Contents", [])]
    snapshot = "snapshot=2026-11-04"
    for prefix in (f"data/raw/{snapshot}/v-", f"data/processed/{snapshot}/v-", "data/features/athlete_features_v2/",
                   f"data/training/{snapshot}/", "emissions/"):  # fmt: skip
        assert any(k.startswith(prefix) for k in keys), (prefix, keys[:20])
    try:  # the pipeline's pair reaches its bucket only
        listed = s3.list_objects_v2(Bucket=artifacts_bucket)
        identities = json.loads((cfg.run_dir / "s3.json").read_text())["identities"]
        pytest.fail(f"the pipeline's key pair listed {artifacts_bucket}: {listed.get('KeyCount')} keys; "
                    f"identities: {[(i['name'], i['credentials'][0]['accessKey'], i['actions']) for i in identities]}; "
                    f"key used: {env['AWS_ACCESS_KEY_ID']}")
    except ClientError as exc:
        assert "AccessDenied" in str(exc), exc
    state = cfg.settings.state_dir
    assert not [p for p in ("data", "emissions", "monitoring", "locks") if (state / p).exists()], sorted(p.name for p in state.iterdir())


def _check_champion_in_object_store(cfg, bucket: str) -> None:
    import boto3
    import mlflow
    from mlflow import MlflowClient

    from crossfit_mlops.tracking import fluent
    from crossfit_stack import provision

    name = cfg.settings.registered_model_name
    version = MlflowClient(cfg.mlflow_url).get_model_version_by_alias(name, "champion")
    with fluent(cfg.mlflow_url):
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert model.metadata is not None
    model_id = version.model_id or version.source.removeprefix("models:/")
    secrets = provision.ensure_secrets(cfg)
    s3 = boto3.client(
        "s3", endpoint_url=cfg.s3_endpoint, region_name="us-east-1",
        aws_access_key_id=secrets["s3_access_key"], aws_secret_access_key=secrets["s3_secret_key"],
    )
    objects = [o for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page.get("Contents", [])]
    model_files = {o["Key"].rsplit("/", 1)[-1]: o["Size"] for o in objects if f"/models/{model_id}/artifacts/" in f"/{o['Key']}"}
    assert "MLmodel" in model_files and sum(model_files.values()) > 10_000, sorted(model_files)
