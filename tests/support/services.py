"""Real services for integration tests: an MLflow server and an Airflow home, in temp dirs."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "FEAST_USAGE": "False",
    "CODECARBON_LOG_LEVEL": "error",
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_block(size: int) -> int:
    """The first of ``size`` consecutive ports that are all free now (SeaweedFS needs a block)."""
    import random

    for _ in range(200):
        base = random.randint(20000, 30000 - size)
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + size):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no block of {size} free ports found")


@contextmanager
def mlflow_server(state_dir: Path) -> Iterator[str]:
    """A real ``mlflow server`` (SQLite + local artifacts) on a free port, stopped with its workers."""
    from crossfit_stack import config, control

    env = {**os.environ, **QUIET_ENV, "CROSSFIT_STATE_DIR": str(state_dir), "CROSSFIT_MLFLOW_PORT": str(free_port())}
    for name in ("MLFLOW_TRACKING_URI", "CROSSFIT_PROFILE", "CROSSFIT_MLFLOW_AUTH", "CROSSFIT_OBJECT_STORE"):
        env.pop(name, None)
    cfg = config.config_from_env(env)
    control.start_mlflow(cfg, {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        yield cfg.mlflow_url
    finally:
        control.stop_service(cfg, "mlflow")


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Wait until ``url`` answers; fail with the process's log if it exits or times out."""
    from crossfit_stack.control import wait_for_url

    wait_for_url(url, proc, log, timeout)


def airflow_env(airflow_home: Path, state_dir: Path, tracking_uri: str) -> dict[str, str]:
    """Environment of an isolated Airflow (SQLite metadata DB migrated in ``airflow_home``)."""
    env = {
        **os.environ,
        **QUIET_ENV,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "CROSSFIT_STATE_DIR": str(state_dir),
        "MLFLOW_TRACKING_URI": tracking_uri,
    }
    if not (airflow_home / "airflow.db").exists():
        subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True
        )
    return env


_DAG_TEST = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=sys.argv[1]).get_dag(sys.argv[2])
run = dag.test(run_conf=json.loads(sys.argv[3]))
tis = run.get_task_instances()
states = {ti.task_id: str(ti.state) for ti in tis}
mapped = {f"{ti.task_id}[{ti.map_index}]": str(ti.state) for ti in tis if ti.map_index >= 0}
print("DAG_RUN=" + json.dumps({"state": str(run.state), "run_id": run.run_id, "tasks": states, "mapped": mapped}))
"""


@dataclass(frozen=True)
class DagTestRun:
    state: str  # "success" | "failed"
    run_id: str
    tasks: dict[str, str]  # task id -> state (a mapped task: the state of its last instance)
    log: str  # the subprocess's stdout + stderr (task logs included)
    mapped: dict[str, str] = field(default_factory=dict)  # "<task id>[<map index>]" -> state

    def map_states(self, task_id: str) -> list[str]:
        """The states of a mapped task's instances, in map index order."""
        found = {int(k[len(task_id) + 1 : -1]): v for k, v in self.mapped.items() if k.startswith(f"{task_id}[")}
        return [found[i] for i in sorted(found)]


def dag_test(env: dict[str, str], dag_id: str, conf: dict, timeout: float = 900) -> DagTestRun:
    """Run one DAG end to end with ``dag.test()`` in a subprocess with ``env`` (an Airflow home from
    :func:`airflow_env`); fails with the output's tail if the run did not even report its state."""
    import json

    done = subprocess.run(
        [sys.executable, "-c", _DAG_TEST, str(ROOT / "dags"), dag_id, json.dumps(conf)],
        env=env, capture_output=True, text=True, timeout=timeout,
    )
    out = done.stdout + done.stderr
    line = next((line for line in out.splitlines() if line.startswith("DAG_RUN=")), None)
    assert line, f"{dag_id} did not report its run:\n{out[-6000:]}"
    result = json.loads(line.split("=", 1)[1])
    return DagTestRun(state=result["state"], run_id=result["run_id"], tasks=result["tasks"], log=out, mapped=result["mapped"])


@contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A new database on the local PostgreSQL (127.0.0.1:5432, trust auth), dropped afterwards.

    Yields its SQLAlchemy URI with the psycopg2 driver (the one MLflow and Airflow need)."""
    import uuid

    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=5)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextmanager
def database_left_to_create(prefix: str) -> Iterator[str]:
    """The URI of a PostgreSQL database that does not exist yet (the code under test must create
    it); dropped afterwards if it was."""
    import uuid

    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=5)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextmanager
def empty_redis_db() -> Iterator[int]:
    """An empty database (1-15) of the local Redis, claimed with a marker key, flushed afterwards."""
    import redis

    for db in range(15, 0, -1):
        candidate = redis.Redis(host="127.0.0.1", port=6379, db=db, socket_timeout=5)
        if candidate.dbsize() != 0 or not candidate.set("crossfit-test-claim", "1", nx=True):
            continue
        if candidate.dbsize() != 1:  # someone else wrote meanwhile: leave their database alone
            candidate.delete("crossfit-test-claim")
            continue
        try:
            yield db
        finally:
            candidate.flushdb()
        return
    raise RuntimeError("no empty Redis database (1-15) on 127.0.0.1:6379")


# --- the supervised stack (crossfit_stack.control) for a test ---------------------------------
def stack_env(state_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a test's own stack: its state directory and free ports, quiet clients,
    nothing inherited that points elsewhere (a tracking URI, an Airflow home, a profile)."""
    env = {
        **os.environ,
        **QUIET_ENV,
        "CROSSFIT_STATE_DIR": str(state_dir),
        "CROSSFIT_MLFLOW_PORT": str(free_port()),
        "CROSSFIT_AIRFLOW_PORT": str(free_port()),
        "CROSSFIT_API_PORT": str(free_port()),
        "CROSSFIT_WORKER_LOG_PORT": str(free_port()),
    }
    for name in ("MLFLOW_TRACKING_URI", "AIRFLOW_HOME", "CROSSFIT_PROFILE", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(name, None)
    env.update(overrides)
    return env


@contextmanager
def running_stack(env: dict[str, str], dag_id: str) -> Iterator[tuple[object, object]]:
    """The stack of ``env`` started (:func:`crossfit_stack.control.up_and_connect`), with the
    REST client; stopped afterwards whatever happened, and checked to leave no process."""
    from crossfit_stack import config, control
    from crossfit_stack.supervisor import session_members

    cfg = config.config_from_env(env)
    sid = None
    try:
        client = control.up_and_connect(cfg, dag_id)
        sid = control.supervisor(cfg).record().get("sid")
        yield cfg, client
    finally:
        sid = sid or control.supervisor(cfg).record().get("sid")
        control.down(cfg)
    assert not session_members(sid), f"processes left after control.down: {session_members(sid)}"


def mlflow_credentials(cfg) -> dict[str, str]:
    """The MLflow client variables the stack gives its services (credentials when auth is on)."""
    from crossfit_stack import programs as stack_programs
    from crossfit_stack import provision

    return stack_programs.client_env(cfg, provision.ensure_secrets(cfg))


# --- the S3-backed profile: a real object store, a lock database, Feast's SQL registry and Redis ---
@dataclass(frozen=True)
class ObjectStore:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    log: Path

    def env(self, prefix: str = "crossfit") -> dict[str, str]:
        """The variables that put the pipeline's data under ``s3://<bucket>/<prefix>``."""
        return {
            "CROSSFIT_DATA_URL": f"s3://{self.bucket}/{prefix}",
            "CROSSFIT_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint, key=self.access_key, secret=self.secret_key, use_listings_cache=False)


@contextmanager
def object_store(state_dir: Path, bucket: str = "crossfit-data") -> Iterator[ObjectStore]:
    """A real SeaweedFS (``weed server``, the stack's own command line and S3 identity file) on a
    free block of ports, with ``bucket`` created and writable; stopped with its group afterwards."""
    import secrets
    import signal

    from crossfit_stack import config, programs, provision

    env = {**os.environ, "CROSSFIT_STATE_DIR": str(state_dir), "CROSSFIT_OBJECT_STORE": "seaweedfs",
           "CROSSFIT_ARTIFACTS_DESTINATION": f"s3://{bucket}/", "CROSSFIT_S3_PORT": str(free_port_block(programs.OBJECT_STORE_PORTS))}  # fmt: skip
    for name in ("CROSSFIT_PROFILE", "CROSSFIT_DATA_URL", "CROSSFIT_S3_ENDPOINT"):
        env.pop(name, None)
    cfg = config.config_from_env(env)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    keys = {"s3_access_key": secrets.token_hex(10), "s3_secret_key": secrets.token_hex(20)}
    provision.write_s3_config(cfg, keys)
    log = state_dir / "seaweedfs.log"
    with log.open("wb") as out:
        clean = {k: v for k, v in os.environ.items() if k not in programs.OBJECT_STORE_UNSET}  # else an admin identity
        proc = subprocess.Popen(programs.object_store_argv(cfg), env=clean, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    store = ObjectStore(cfg.s3_endpoint, keys["s3_access_key"], keys["s3_secret_key"], bucket, log)
    try:
        try:  # the stack's own step: the bucket, retried until the store takes a write
            provision.ensure_bucket(cfg, keys, timeout=90)
        except RuntimeError as exc:
            raise RuntimeError(f"SeaweedFS did not start or take a write: {exc}; see {log}") from None
        yield store
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        programs.remove_object_store_sockets(cfg)


@contextmanager
def s3_profile(state_dir: Path) -> Iterator[tuple[dict[str, str], ObjectStore]]:
    """The S3-backed profile's environment on real servers: SeaweedFS with a bucket, a PostgreSQL
    database for the locks and Feast's SQL registry, an empty Redis database for the online store."""
    with object_store(state_dir) as store, postgres_database("crossfit_s3") as db, empty_redis_db() as redis_db:
        env = {
            **store.env(),
            "CROSSFIT_LOCK_URI": db,
            "CROSSFIT_FEAST_REGISTRY_URI": db,
            "CROSSFIT_FEAST_REDIS": f"127.0.0.1:6379,db={redis_db}",
        }
        yield env, store
