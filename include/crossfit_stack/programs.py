"""The services of the local stack as supervisord programs: each one's command line, environment,
health URL and port.

Each function takes the stack's configuration (:class:`crossfit_stack.config.StackConfig`) and
the generated secrets; nothing here starts a process (that is supervisord's, through
:mod:`crossfit_stack.control`) or writes a file (that is :mod:`crossfit_stack.provision`'s).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from crossfit_stack.config import StackConfig
from crossfit_stack.supervisor import Program

log = logging.getLogger(__name__)

OBJECT_STORE = "object-store"
LOG_SERVER = "airflow-log-server"  # the LocalExecutor's task-log server (log_server.py)
FEAST_UI = "feast-ui"  # Feast's web UI (feast_ui.py), CROSSFIT_FEAST_UI=1
MLFLOW_ADMIN = "admin"

# MLflow's client retries a failed call 7 times with backoff factor 2 and a 120 s timeout: about 4
# minutes before an unreachable server fails a call. Bounded here (2 retries, factor 1, 30 s), a
# call fails in seconds and Airflow's task retries (3, exponential backoff) decide what happens next.
MLFLOW_CLIENT_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
QUIET = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    # downloads through the server too: else the client fetches each file from a presigned URL on
    # the object store's address, which a client may not reach (and need not: the server proxies)
    "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
    "FEAST_USAGE": "False",
    "CODECARBON_LOG_LEVEL": "error",
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning",
}


# --- environments --------------------------------------------------------------------------------
def client_env(cfg: StackConfig, secrets: dict[str, str]) -> dict[str, str]:
    """What every MLflow client of the stack (tasks, the API, the CLI) gets."""
    env = {**QUIET, **MLFLOW_CLIENT_LIMITS}
    if cfg.mlflow_auth:
        env["MLFLOW_TRACKING_USERNAME"] = MLFLOW_ADMIN
        env["MLFLOW_TRACKING_PASSWORD"] = secrets["mlflow_admin_password"]
    if cfg.object_store and cfg.settings.on_object_storage and secrets:  # the pipeline's own key pair
        env["AWS_ACCESS_KEY_ID"] = secrets["s3_data_access_key"]
        env["AWS_SECRET_ACCESS_KEY"] = secrets["s3_data_secret_key"]
        env["AWS_DEFAULT_REGION"] = "us-east-1"
    return env


# Latency and idle-CPU settings of the stack's Airflow (the measurements behind them:
# docs/decisions/0101-local-stack-airflow-latency.md). Each is Airflow's own variable, and one set in
# the environment of start-all.sh wins.
AIRFLOW_TUNING: dict[str, str] = {
    # an unchanged DAG file is re-parsed rarely: its periodic re-parse was most of an idle stack's
    # CPU. An edited one is still parsed within seconds (file_parsing_sort_mode modified_time, the
    # default, queues a file whose mtime is newer than its last parse)
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "300",
    # the scheduler's sleep when a loop found nothing to do (Airflow: 1 s): the next task of a chain
    # starts sooner, for some more CPU of an idle scheduler
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
    # a task's supervisor notices that its task process has exited only between heartbeats (5 s by
    # default): until then a finished task keeps its executor slot (LocalExecutor worker, Celery slot)
    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
}


def airflow_env(cfg: StackConfig, secrets: dict[str, str]) -> dict[str, str]:
    """Airflow's configuration for every component, worker and task of the stack."""
    home = cfg.airflow_home
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(cfg.settings.project_root / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": cfg.executor,
        "AIRFLOW__CORE__PARALLELISM": str(cfg.parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(cfg.parallelism),
        "AIRFLOW__CORE__FERNET_KEY": secrets["fernet_key"],
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{cfg.airflow_url}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets["jwt_secret"],
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": cfg.airflow_db_uri,
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        **{name: os.environ.get(name, default) for name, default in AIRFLOW_TUNING.items()},
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(cfg.worker_log_port),
    }
    if not cfg.celery:
        env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = "crossfit_stack.hostnames.log_server_hostname"
        env["CROSSFIT_LOG_SERVER_HOST"] = cfg.host
    if cfg.celery:
        env.update(
            {
                "AIRFLOW__CELERY__BROKER_URL": cfg.celery_broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": cfg.celery_result_backend,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(cfg.celery_concurrency),
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": "default",
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "crossfit_stack.hostnames.worker_hostname",
            }
        )
    return env


# --- programs ------------------------------------------------------------------------------------
def airflow_programs(cfg: StackConfig) -> list[str]:
    workers = [f"airflow-worker-{i}" for i in range(1, cfg.celery_workers + 1)]
    # Celery workers run without a log server (the api-server reads the shared log folder)
    logs = [] if cfg.celery else [LOG_SERVER]
    return ["airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", *logs, *workers]


def names(cfg: StackConfig) -> list[str]:
    """The services of the profile, in start order."""
    store = [OBJECT_STORE] if cfg.object_store else []
    return [*store, "mlflow", *airflow_programs(cfg), "api", *([FEAST_UI] if cfg.feast_ui else [])]


def programs(cfg: StackConfig, secrets: dict[str, str]) -> list[Program]:
    """Every service of the profile, in start order (supervisord stops in the reverse order)."""
    airflow = str(cfg.bin_dir / "airflow")
    # SeaweedFS makes an AWS key pair in its own environment an *admin* identity ("Added admin
    # identity from AWS environment variables"): the pipeline's pair, which every task gets, would
    # reach MLflow's bucket too. The object store starts without any (`env -u`)
    unset = [arg for name in OBJECT_STORE_UNSET for arg in ("-u", name)]
    found = [] if not cfg.object_store else [Program(OBJECT_STORE, ["env", *unset, *object_store_argv(cfg)], priority=10, stop_wait_s=25)]
    found += [
        Program("mlflow", mlflow_argv(cfg), priority=20, environment=mlflow_server_env(cfg, secrets), stop_wait_s=20),
        Program("airflow-api-server", [airflow, "api-server", "--host", cfg.host, "--port", str(cfg.airflow_port)], priority=30),
        # Airflow's stop handler raises SystemExit wherever the signal lands; landing in a garbage
        # collector callback it is swallowed ("Exception ignored in: <function _collection_gced>")
        # and the process runs on until SIGKILL: seen for the scheduler and the dag-processor, each
        # time holding stop-all for the whole 40 s window. 10 s (+ the launcher's grace) is plenty
        # for a clean stop; a task still running is ended either way.
        # its own log server would bind every interface: the stack runs LOG_SERVER on cfg.host instead
        Program("airflow-scheduler", [airflow, "scheduler", "--skip-serve-logs"], priority=40, stop_wait_s=10),
        Program("airflow-dag-processor", [airflow, "dag-processor"], priority=40, stop_wait_s=10),
        Program("airflow-triggerer", [airflow, "triggerer"], priority=40, stop_wait_s=10),
    ]
    if not cfg.celery:
        argv = [str(cfg.bin_dir / "python"), "-m", "crossfit_stack.log_server", "--host", cfg.host, "--port", str(cfg.worker_log_port)]
        found.append(Program(LOG_SERVER, argv, priority=40, stop_wait_s=10))
    for i in range(1, cfg.celery_workers + 1):
        argv = [
            airflow, "celery", "worker", "--queues", cfg.celery_queues,
            "--concurrency", str(cfg.celery_concurrency), "--celery-hostname", f"worker{i}@%h",
            # no log server (it binds every interface): on one machine the api-server reads the
            # task logs from the shared log folder
            "--skip-serve-logs",
        ]
        env = {"CROSSFIT_WORKER_NAME": f"worker{i}"}
        # a warm shutdown lets running tasks finish: give it the length of a training task
        found.append(Program(f"airflow-worker-{i}", argv, priority=50, environment=env, stop_wait_s=90))
    api = [
        str(cfg.bin_dir / "python"), "-m", "crossfit_mlops", "serve",
        "--host", cfg.host, "--port", str(cfg.api_port), "--log-level", "warning",
    ]
    found.append(Program("api", api, priority=60, stop_wait_s=10))
    if cfg.feast_ui:
        argv = [str(cfg.bin_dir / "python"), "-m", "crossfit_stack.feast_ui", "--host", cfg.host, "--port", str(cfg.feast_ui_port)]
        found.append(Program(FEAST_UI, argv, priority=60, stop_wait_s=10))
    return found


def health_url(cfg: StackConfig, name: str) -> str | None:
    from crossfit_mlops.features.feast_repo import FEAST_PROJECT  # (pandas: not at import)

    urls = {
        "mlflow": f"{cfg.mlflow_url}/health",
        "airflow-api-server": f"{cfg.airflow_url}/api/v2/monitor/health",
        "api": f"{cfg.api_url}/ready",
        # the S3 gateway's own health (it answers before the filer takes writes: ensure_bucket
        # then waits for a real write)
        OBJECT_STORE: f"http://127.0.0.1:{cfg.s3_port}/healthz",
        # the registry's REST API behind the UI: it answers once the registry is read
        FEAST_UI: f"{cfg.feast_ui_url}/api/v1/feature_views?project={FEAST_PROJECT}",
    }
    return urls.get(name)


def port_of(cfg: StackConfig, name: str) -> int | None:
    ports = {"mlflow": cfg.mlflow_port, "airflow-api-server": cfg.airflow_port, "api": cfg.api_port, OBJECT_STORE: cfg.s3_port,
             LOG_SERVER: cfg.worker_log_port, FEAST_UI: cfg.feast_ui_port}  # fmt: skip
    return ports.get(name)


def port_variable(name: str) -> str:
    variables = {"mlflow": "CROSSFIT_MLFLOW_PORT", "airflow-api-server": "CROSSFIT_AIRFLOW_PORT", "api": "CROSSFIT_API_PORT",
                 LOG_SERVER: "CROSSFIT_WORKER_LOG_PORT", FEAST_UI: "CROSSFIT_FEAST_UI_PORT"}  # fmt: skip
    return variables.get(name, "CROSSFIT_S3_PORT")


# --- MLflow --------------------------------------------------------------------------------------
def artifacts_destination(cfg: StackConfig) -> str:
    return cfg.artifacts_destination or str(cfg.mlflow_dir / "artifacts")


def mlflow_argv(cfg: StackConfig) -> list[str]:
    argv = [
        str(cfg.bin_dir / "mlflow"), "server",
        "--backend-store-uri", cfg.mlflow_backend_uri,
        # the server proxies every artifact (mlflow-artifacts:/ URIs): clients need no store access
        "--artifacts-destination", artifacts_destination(cfg), "--serve-artifacts",
        "--host", cfg.host, "--port", str(cfg.mlflow_port), "--workers", "2",
    ]
    # the project's app (tracking/server_app.py): MLflow's own, with a 507 for a full artifact store
    return [*argv, "--app-name", "crossfit-basic-auth" if cfg.mlflow_auth else "crossfit"]


def mlflow_metrics_dir(cfg: StackConfig) -> Path:
    """Where the MLflow server's workers keep their Prometheus metrics (``GET /metrics`` sums them)."""
    return cfg.mlflow_dir / "metrics"


def mlflow_server_env(cfg: StackConfig, secrets: dict[str, str]) -> dict[str, str]:
    """The server's own environment: its Prometheus metrics folder, the object store's keys (only
    the server holds them) and the basic-auth configuration. Written into supervisord.conf (0600),
    not into the shared env: every process that imports prometheus_client (Airflow, Feast,
    CodeCarbon) would otherwise write its metrics into the server's folder."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(mlflow_metrics_dir(cfg))}
    if cfg.mlflow_auth:
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(cfg.mlflow_dir / "basic_auth.ini")
        # the CSRF key basic-auth refuses to start without; one value for both workers
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets["flask_secret_key"]
    if artifacts_destination(cfg).startswith("s3://"):
        env.update(
            {
                "MLFLOW_S3_ENDPOINT_URL": cfg.s3_endpoint,
                "AWS_ACCESS_KEY_ID": secrets["s3_access_key"],
                "AWS_SECRET_ACCESS_KEY": secrets["s3_secret_key"],
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        )
    return env


# --- the object store (SeaweedFS, cluster profile) -----------------------------------------------
OBJECT_STORE_PORTS = 8  # S3, master, volume, filer and their gRPC ports
OBJECT_STORE_UNSET = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")  # see programs()


def object_store_argv(cfg: StackConfig) -> list[str]:
    """``weed server`` with every port given (its volume server would take 8080, Airflow's, and
    gRPC ports default to port + 10000): S3 on ``CROSSFIT_S3_PORT`` = P, master P+1, volume P+2,
    filer P+3, their gRPC ports P+4 to P+7; Iceberg and Lance endpoints off."""
    if cfg.object_store != "seaweedfs":
        raise ValueError(f"CROSSFIT_OBJECT_STORE={cfg.object_store!r}: the stack can run 'seaweedfs' (or leave it empty)")
    p = cfg.s3_port
    data = cfg.settings.state_dir / "seaweedfs"
    return [
        str(cfg.bin_dir / "weed"), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-s3", f"-s3.port={p}", f"-s3.port.grpc={p + 4}", f"-s3.config={cfg.run_dir / 's3.json'}",
        f"-master.port={p + 1}", f"-master.port.grpc={p + 5}", f"-volume.port={p + 2}", f"-volume.port.grpc={p + 6}",
        "-filer", f"-filer.port={p + 3}", f"-filer.port.grpc={p + 7}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
        # each bucket is a collection that grows 7 volumes at its first write: 8 held one bucket
        # (MLflow's), 32 hold the pipeline's too with room to grow (volumes are sparse files)
        "-master.volumeSizeLimitMB=256", "-volume.max=32",
        # a restart on existing data waits out the election timeout (10 s by default) before the
        # first write; the volume server's 10 s pre-stop pause would only slow a stop
        "-master.electionTimeout=2s", "-volume.preStopSeconds=0",
    ]


def remove_object_store_sockets(cfg: StackConfig) -> None:
    """SeaweedFS leaves ``/tmp/seaweedfs-<service>-<port>.sock`` behind when it stops."""
    for port in range(cfg.s3_port, cfg.s3_port + OBJECT_STORE_PORTS):
        for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
            sock.unlink(missing_ok=True)
