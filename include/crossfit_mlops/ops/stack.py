"""The local stack (no Docker): MLflow, Airflow and the prediction API as supervised processes.

``start-all.sh`` runs ``python -m crossfit_mlops stack up`` (:func:`up`) then ``pipeline``;
``stop-all.sh`` runs ``stack down`` (:func:`down`). One supervisord per state directory
(:mod:`crossfit_mlops.ops.supervisor`) runs every service, restarts one that crashes, and stops each
with its whole process tree. Everything lives under the state directory (mode 0700):
``run/`` (supervisord's configuration, socket and record), ``logs/<service>.log``, ``airflow/``
(AIRFLOW_HOME, SQLite metadata, ``secrets.json``), ``mlflow/`` (SQLite store, artifacts, the
basic-auth database), ``seaweedfs/`` (the object store's data, cluster profile).

Services (names for :func:`start_service`, :func:`stop_service`, :func:`running_pid`):
``object-store`` (cluster profile), ``mlflow``, ``airflow-api-server``, ``airflow-scheduler``,
``airflow-dag-processor``, ``airflow-triggerer``, ``airflow-worker-1`` ... (CeleryExecutor), ``api``.

Knobs (environment): ``CROSSFIT_PROFILE`` (local | cluster: defaults in
:mod:`crossfit_mlops.ops.profiles`), ``CROSSFIT_MLFLOW_PORT`` (5000), ``CROSSFIT_AIRFLOW_PORT``
(8080), ``CROSSFIT_API_PORT`` (8000), ``CROSSFIT_BIND_HOST`` (127.0.0.1),
``CROSSFIT_MLFLOW_BACKEND_URI``, ``CROSSFIT_AIRFLOW_DB_URI``, ``CROSSFIT_AIRFLOW_PARALLELISM`` (4),
``CROSSFIT_MLFLOW_AUTH`` (0), ``CROSSFIT_AIRFLOW_EXECUTOR``, ``CROSSFIT_CELERY_*``,
``CROSSFIT_OBJECT_STORE``, ``CROSSFIT_ARTIFACTS_DESTINATION``, ``CROSSFIT_S3_PORT`` (8333).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from crossfit_mlops.ops import services
from crossfit_mlops.ops.profiles import with_profile
from crossfit_mlops.ops.supervisor import (
    FATAL,
    Supervisor,
    SupervisorError,
    env_fingerprint,
    write_private,
)
from crossfit_mlops.settings import Settings, get_settings

log = logging.getLogger(__name__)

AIRFLOW_COMPONENTS: tuple[str, ...] = ("scheduler", "dag-processor", "triggerer", "api-server")
ADMIN_USER = "admin"


class StackError(RuntimeError):
    """A service could not be started or did not become healthy; the message says where to look."""


@dataclass(frozen=True)
class StackConfig:
    settings: Settings
    bin_dir: Path  # the virtualenv's bin folder (mlflow, airflow, supervisord, weed)
    host: str
    mlflow_port: int
    airflow_port: int
    api_port: int
    mlflow_backend_uri: str
    airflow_db_uri: str
    parallelism: int
    profile: str = "local"
    mlflow_auth: bool = False
    executor: str = "LocalExecutor"
    celery_workers: int = 0
    celery_broker_url: str = ""
    celery_result_backend: str = ""
    celery_queues: str = "default"
    celery_concurrency: int = 2
    object_store: str = ""  # "seaweedfs": started by the stack; "": none (or an external one)
    artifacts_destination: str = ""  # "": <state>/mlflow/artifacts
    s3_endpoint: str = ""
    s3_port: int = 8333
    worker_log_port: int = 8793

    @property
    def run_dir(self) -> Path:
        return self.settings.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.settings.state_dir / "logs"

    @property
    def airflow_home(self) -> Path:
        return self.settings.state_dir / "airflow"

    @property
    def mlflow_dir(self) -> Path:
        return self.settings.state_dir / "mlflow"

    @property
    def secrets_path(self) -> Path:
        return self.airflow_home / "secrets.json"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.airflow_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def celery(self) -> bool:
        return self.executor == "CeleryExecutor"


def _flag(env: dict[str, str], name: str) -> bool:
    value = (env.get(name) or "0").strip().lower()
    if value not in {"0", "1", "true", "false", "yes", "no"}:
        raise ValueError(f"environment variable {name}={value!r} must be 0 or 1")
    return value in {"1", "true", "yes"}


def _int(env: dict[str, str], name: str, default: int) -> int:
    value = env.get(name)
    try:
        return int(value) if value else default
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from exc


def config_from_env(environ: dict[str, str] | None = None) -> StackConfig:
    env = with_profile(dict(os.environ if environ is None else environ))
    mlflow_port = _int(env, "CROSSFIT_MLFLOW_PORT", 5000)
    # the tracking URI follows the port of the server we start, unless the user points elsewhere
    if not env.get("MLFLOW_TRACKING_URI"):
        env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{mlflow_port}"
    settings = get_settings(env)
    home = settings.state_dir / "airflow"
    executor = env.get("CROSSFIT_AIRFLOW_EXECUTOR") or "LocalExecutor"
    if executor not in {"LocalExecutor", "CeleryExecutor"}:
        raise ValueError(f"CROSSFIT_AIRFLOW_EXECUTOR={executor!r}: choose LocalExecutor or CeleryExecutor")
    s3_port = _int(env, "CROSSFIT_S3_PORT", 8333)
    object_store = env.get("CROSSFIT_OBJECT_STORE", "").strip()
    return StackConfig(
        settings=settings,
        bin_dir=Path(sys.executable).parent,
        host=env.get("CROSSFIT_BIND_HOST") or "127.0.0.1",
        mlflow_port=mlflow_port,
        airflow_port=_int(env, "CROSSFIT_AIRFLOW_PORT", 8080),
        api_port=_int(env, "CROSSFIT_API_PORT", 8000),
        mlflow_backend_uri=env.get("CROSSFIT_MLFLOW_BACKEND_URI") or f"sqlite:///{settings.state_dir / 'mlflow' / 'mlflow.db'}",
        airflow_db_uri=env.get("CROSSFIT_AIRFLOW_DB_URI") or f"sqlite:///{home / 'airflow.db'}",
        parallelism=_int(env, "CROSSFIT_AIRFLOW_PARALLELISM", 4),
        profile=env["CROSSFIT_PROFILE"],
        mlflow_auth=_flag(env, "CROSSFIT_MLFLOW_AUTH"),
        executor=executor,
        celery_workers=_int(env, "CROSSFIT_CELERY_WORKERS", 2) if executor == "CeleryExecutor" else 0,
        celery_broker_url=env.get("CROSSFIT_CELERY_BROKER_URL", ""),
        celery_result_backend=env.get("CROSSFIT_CELERY_RESULT_BACKEND", ""),
        celery_queues=env.get("CROSSFIT_CELERY_QUEUES") or "default",
        celery_concurrency=_int(env, "CROSSFIT_CELERY_CONCURRENCY", 2),
        object_store=object_store,
        artifacts_destination=env.get("CROSSFIT_ARTIFACTS_DESTINATION", ""),
        s3_endpoint=env.get("CROSSFIT_S3_ENDPOINT") or (f"http://127.0.0.1:{s3_port}" if object_store else ""),
        s3_port=s3_port,
        worker_log_port=_int(env, "CROSSFIT_WORKER_LOG_PORT", 8793),
    )


# --- secrets and private files -------------------------------------------------------------------
def secure_state(cfg: StackConfig) -> None:
    """The state directory and the stack's folders are owner-only (0700); see also the umask 077
    under which supervisord runs every service, and :func:`private_files`."""
    for path in (cfg.settings.state_dir, cfg.airflow_home, cfg.mlflow_dir, cfg.run_dir, cfg.log_dir):
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)


def private_files(cfg: StackConfig) -> list[Path]:
    """Databases and secrets of the stack that exist: each made 0600 (returned)."""
    candidates = [
        cfg.secrets_path, cfg.airflow_home / "passwords.json", cfg.mlflow_dir / "basic_auth.ini",
        cfg.mlflow_dir / "basic_auth.db", cfg.settings.feast_registry_path, cfg.settings.feast_online_store_path,
    ]
    for uri in (cfg.mlflow_backend_uri, cfg.airflow_db_uri):
        if uri.startswith("sqlite:///"):
            db = Path(uri.removeprefix("sqlite:///"))
            candidates += [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    found = [p for p in candidates if p.is_file()]
    for path in found:
        path.chmod(0o600)
    return found


SECRET_FIELDS = (
    "jwt_secret", "fernet_key", "admin_password", "mlflow_admin_password", "flask_secret_key", "s3_access_key", "s3_secret_key",
)


def ensure_secrets(cfg: StackConfig) -> dict[str, str]:
    """Generated once per state directory into ``airflow/secrets.json`` (0600), never printed or
    committed: Airflow's JWT secret, Fernet key and admin password; MLflow's admin password
    (basic-auth); the object store's key pair. Fields added by a newer version are filled in."""
    path = cfg.secrets_path
    values = json.loads(path.read_text()) if path.is_file() else {}
    if any(name not in values for name in SECRET_FIELDS):
        from cryptography.fernet import Fernet

        fresh = {
            "jwt_secret": secrets.token_urlsafe(48),
            "fernet_key": Fernet.generate_key().decode(),
            "admin_password": secrets.token_urlsafe(12),
            "mlflow_admin_password": secrets.token_urlsafe(16),
            "flask_secret_key": secrets.token_hex(32),
            "s3_access_key": "crossfit" + secrets.token_hex(6),
            "s3_secret_key": secrets.token_urlsafe(30),
        }
        values = {**fresh, **values}
        write_private(path, json.dumps(values, indent=1))
    passwords = cfg.airflow_home / "passwords.json"
    if not passwords.is_file():
        write_private(passwords, json.dumps({ADMIN_USER: values["admin_password"]}))
    return values


def write_local_settings(cfg: StackConfig) -> None:
    from crossfit_mlops.ops.preload import LOCAL_SETTINGS

    config_dir = cfg.airflow_home / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)


def service_env(cfg: StackConfig) -> dict[str, str]:
    """The environment of every service and task: this process's, plus :func:`stack_environment`."""
    return {**os.environ, **stack_environment(cfg)}


def stack_environment(cfg: StackConfig) -> dict[str, str]:
    """What the stack sets for its services and tasks: the settings, quiet and bounded MLflow
    clients (credentials when basic-auth is on), the Airflow configuration of the profile."""
    secrets_ = ensure_secrets(cfg)
    return {**cfg.settings.as_env(), **services.client_env(cfg, secrets_), **services.airflow_env(cfg, secrets_)}


def use_stack_clients(cfg: StackConfig) -> None:
    """Give this process's MLflow clients what the stack's services get: the bounded HTTP limits
    and, when basic-auth is on, the admin credential (the CLI that follows a run, a test)."""
    os.environ.update(services.client_env(cfg, ensure_secrets(cfg) if cfg.mlflow_auth else {}))


# --- health --------------------------------------------------------------------------------------
def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (OSError, urllib.error.URLError):
        return False


def wait_for_url(url: str, proc: subprocess.Popen, log_file: Path, timeout: float = 90.0) -> None:
    """Wait until ``url`` answers 2xx; raise StackError with the end of ``log_file`` if the process
    exits first or the time runs out (for processes started outside the supervised services)."""
    deadline = time.monotonic() + timeout
    while not http_ok(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log_file.read_text()[-3000:] if log_file.exists() else ""
            raise StackError(f"{url} did not answer within {timeout:.0f}s:\n{tail}")
        time.sleep(0.3)


def _port_in_use(host: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host if host != "0.0.0.0" else "127.0.0.1", port)) == 0


def sqlite_wal(uri: str) -> bool:
    """Put a SQLite backend store in write-ahead-log mode (a no-op for other databases).

    MLflow leaves its SQLite file in the default rollback-journal mode, where every write locks out
    readers: with parallel training tasks logging at once, requests queue on the lock. In WAL mode
    readers and one writer proceed together (Airflow sets it on its own SQLite database). The mode
    is stored in the file, so it is set once, before the server opens it. A new file is created
    owner-only (0600).
    """
    if not uri.startswith("sqlite:///"):
        return False
    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    return mode == "wal"


# --- the supervisor and its programs --------------------------------------------------------------
def supervisor(cfg: StackConfig) -> Supervisor:
    return Supervisor(run_dir=cfg.run_dir, log_dir=cfg.log_dir, project_root=cfg.settings.project_root, bin_dir=cfg.bin_dir)


def ensure_supervisor(cfg: StackConfig, env: dict[str, str] | None = None) -> str:
    """Start this state directory's supervisord (no service started yet), or reuse it if it runs
    with the same settings; "started" / "reused". ``env`` (default :func:`service_env`) is the
    environment every service inherits."""
    secure_state(cfg)
    ours = stack_environment(cfg)
    if env is not None:
        ours.update({k: v for k, v in env.items() if os.environ.get(k) != v})
    try:
        return supervisor(cfg).start(services.programs(cfg, ensure_secrets(cfg)), {**os.environ, **ours}, env_fingerprint(ours))
    except SupervisorError as exc:
        raise StackError(str(exc)) from exc


def _state(cfg: StackConfig, name: str) -> str | None:
    info = supervisor(cfg).info(name)
    return info["statename"] if info else None


def running_pid(cfg: StackConfig, name: str) -> int | None:
    """The pid of the running service ``name`` (the service's own process, below its launcher), or
    None. Killing it is a crash: supervisord restarts the service."""
    import psutil

    info = supervisor(cfg).info(name)
    if not info or info["statename"] != "RUNNING" or not info["pid"]:
        return None
    try:
        children = psutil.Process(info["pid"]).children()
    except psutil.Error:
        return None
    return children[0].pid if children else None


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def warm_execution_api(cfg: StackConfig) -> bool:
    """Answer the api-server's first Execution API request now, not in the first task.

    The api-server builds its Execution API (the versioned app every task talks to) on the first
    request that reaches it: 3.8 s on this machine (2026-12-02), which the first task of the first
    run paid (resolve_run 3.9 s, 0.3 s in the run after). Its health endpoint needs no token."""
    return http_ok(f"{cfg.airflow_url}/execution/health", timeout=60)


def _wait_healthy(cfg: StackConfig, name: str, url: str | None, timeout: float, max_restarts: int = 3) -> None:
    """Wait until ``name`` runs (and ``url`` answers). A service that keeps exiting is reported
    with the end of its log: when supervisord gives up (FATAL), or once it was restarted
    ``max_restarts`` times (one that exits after its start time would be restarted forever)."""
    log_file = cfg.log_dir / f"{name}.log"
    deadline, pids = time.monotonic() + timeout, set()
    while time.monotonic() < deadline:
        info = supervisor(cfg).info(name) or {}
        if info.get("statename") == FATAL:
            raise StackError(f"{name} exited while starting (supervisord gave up); see {log_file}:\n{_log_tail(log_file)}")
        if info.get("pid"):
            pids.add(info["pid"])
        if len(pids) > max_restarts:
            supervisor(cfg).stop_program(name)
            raise StackError(
                f"{name} exited while starting (restarted {len(pids) - 1} times); see {log_file}:\n{_log_tail(log_file)}"
            )
        if info.get("statename") == "RUNNING" and (url is None or http_ok(url)):
            return
        time.sleep(0.5)
    raise StackError(f"{name} did not answer {url} within {timeout:.0f}s; see {log_file}:\n{_log_tail(log_file)}")


def _healthy(cfg: StackConfig, name: str) -> bool:
    url = services.health_url(cfg, name)
    return _state(cfg, name) == "RUNNING" and (url is None or http_ok(url))


def _launch(cfg: StackConfig, names: list[str]) -> None:
    """Ask supervisord to start ``names`` (not waiting), after checking that their ports are free."""
    for name in names:
        port = services.port_of(cfg, name)
        if _state(cfg, name) != "RUNNING" and port and _port_in_use(cfg.host, port):
            raise StackError(f"port {port} ({name}) is used by another program: stop it or set {services.port_variable(name)}")
    for name in names:
        try:
            supervisor(cfg).start_program(name)
        except SupervisorError as exc:
            raise StackError(str(exc)) from exc


def _await(cfg: StackConfig, names: list[str], timeout: float) -> None:
    for name in names:
        _wait_healthy(cfg, name, services.health_url(cfg, name), timeout)


def start_service(cfg: StackConfig, name: str, timeout: float = 120.0) -> str:
    """Start one service (the rest keeps running) and wait until it answers: "started" or
    "reused". supervisord must run (:func:`up` or :func:`ensure_supervisor`)."""
    if _healthy(cfg, name):
        return "reused"
    _launch(cfg, [name])
    _await(cfg, [name], timeout)
    if name == services.OBJECT_STORE:
        services.ensure_bucket(cfg, ensure_secrets(cfg))
    return "started"


def stop_service(cfg: StackConfig, name: str, timeout: float = 20.0) -> bool:
    """Stop one service with its whole process tree (the rest keeps running); True if it was
    running. When nothing of the stack runs any more, supervisord itself is shut down too."""
    sup = supervisor(cfg)
    if not sup.is_running():
        return False
    stopped = sup.stop_program(name)
    if not any(p["statename"] not in {"STOPPED", "EXITED", "FATAL"} for p in sup.all_info()):
        down(cfg)
    return stopped


def _mlflow_names(cfg: StackConfig) -> list[str]:
    """Prepare MLflow's files (SQLite in WAL mode, basic-auth, the object store's keys)."""
    sqlite_wal(cfg.mlflow_backend_uri)
    services.prepare_mlflow(cfg, ensure_secrets(cfg))
    if cfg.object_store:
        services.write_s3_config(cfg, ensure_secrets(cfg))
        return [services.OBJECT_STORE, "mlflow"]
    return ["mlflow"]


def _launch_mlflow(cfg: StackConfig) -> tuple[str, list[str]]:
    names = _mlflow_names(cfg)
    if all(_healthy(cfg, n) for n in names):
        return "reused", []
    _launch(cfg, names)
    return "started", names


def _finish_mlflow(cfg: StackConfig, names: list[str]) -> None:
    _await(cfg, names, timeout=180)
    if services.OBJECT_STORE in names:  # its S3 gateway answers before the filer takes writes
        services.ensure_bucket(cfg, ensure_secrets(cfg))


def start_mlflow(cfg: StackConfig, env: dict[str, str] | None = None) -> str:
    """The MLflow server (and the object store it writes to, if the stack runs one)."""
    ensure_supervisor(cfg, env)
    result, names = _launch_mlflow(cfg)
    _finish_mlflow(cfg, names)
    return result


def _launch_airflow(cfg: StackConfig, env: dict[str, str] | None = None) -> tuple[str, list[str]]:
    names = services.airflow_programs(cfg)
    if all(_state(cfg, n) == "RUNNING" for n in names) and http_ok(services.health_url(cfg, "airflow-api-server")):
        return "reused", []
    for name in names:  # a partial stack from a crash: restart it cleanly
        supervisor(cfg).stop_program(name)
    env = service_env(cfg) if env is None else {**service_env(cfg), **env}
    migrate = subprocess.run(
        [str(cfg.bin_dir / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True,
        cwd=cfg.settings.project_root, umask=0o077,
    )
    if migrate.returncode != 0:
        raise StackError(f"airflow db migrate failed:\n{migrate.stdout[-2000:]}\n{migrate.stderr[-2000:]}")
    _launch(cfg, names)
    return "started", names


def start_airflow(cfg: StackConfig, env: dict[str, str] | None = None) -> str:
    ensure_supervisor(cfg, env)
    result, names = _launch_airflow(cfg, env)
    _await(cfg, names, timeout=180)
    return result


def start_api(cfg: StackConfig, env: dict[str, str] | None = None) -> str:
    """The prediction API (``python -m crossfit_mlops serve``) on :8000: "started" or "reused"."""
    ensure_supervisor(cfg, env)
    return start_service(cfg, "api", timeout=120)


@contextlib.contextmanager
def start_lock(cfg: StackConfig):
    """Held while a stack starts: a second ``start-all.sh`` (or ``stack up``) on the same state
    directory waits for the first, then finds the stack running and reuses it. Without it, two
    starts on a stopped stack both started a supervisord and the second exited 2 ("Another
    program is already listening"). The lock is the kernel's (flock): a killed start releases it."""
    import fcntl

    cfg.settings.state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(cfg.settings.state_dir / ".stack-start.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another start of this stack is under way: waiting for it, then reusing the stack")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def up(cfg: StackConfig) -> dict[str, str]:
    """Start (or reuse) MLflow (with the object store of the profile) and Airflow, all at once, and
    wait until each answers; apply the Feast definitions. Returns what happened. One start at a
    time per state directory (:func:`start_lock`)."""
    with start_lock(cfg):
        return _up(cfg)


def _up(cfg: StackConfig) -> dict[str, str]:
    services.ensure_databases(cfg)
    # the preload warms the scheduler, whose forks run the tasks under the LocalExecutor only
    if service_env(cfg).get("CROSSFIT_PRELOAD", "1") != "0" and not cfg.celery:
        write_local_settings(cfg)
    status = {"supervisor": ensure_supervisor(cfg)}
    status["mlflow"], mlflow_names = _launch_mlflow(cfg)
    status["airflow"], airflow_names = _launch_airflow(cfg)
    _finish_mlflow(cfg, mlflow_names)
    _await(cfg, airflow_names, timeout=180)
    from crossfit_mlops.features.store import apply_definitions

    warm = threading.Thread(target=warm_execution_api, args=(cfg,), daemon=True)
    warm.start()
    apply_definitions(cfg.settings)
    warm.join(timeout=60)
    private_files(cfg)
    return status


def airflow_client(cfg: StackConfig):
    """A REST client logged in as the generated admin user of this stack."""
    from crossfit_mlops.ops.airflow_client import AirflowClient

    return AirflowClient(cfg.airflow_url, ADMIN_USER, ensure_secrets(cfg)["admin_password"])


def set_declared_variables(cfg: StackConfig, client) -> dict[str, str]:
    """Set the Variables of ``airflow_settings.yaml``; the tracking URI becomes the local server's."""
    from crossfit_mlops.ops.airflow_client import declared_variables

    variables = declared_variables(cfg.settings.project_root / "airflow_settings.yaml")
    variables["crossfit_mlflow_tracking_uri"] = cfg.settings.mlflow_tracking_uri
    for key, value in variables.items():
        client.set_variable(key, value, "set by start-all.sh from airflow_settings.yaml (local mode)")
    return variables


def up_and_connect(cfg: StackConfig, dag_id: str):
    """Start (or reuse) the stack, set the declared Variables, wait until ``dag_id`` is parsed;
    return the logged-in REST client (what the benchmark and the stack tests start from)."""
    up(cfg)
    client = airflow_client(cfg)
    set_declared_variables(cfg, client)
    client.wait_for_dag(dag_id)
    return client


def service_names(cfg: StackConfig) -> list[str]:
    return services.names(cfg)


def status(cfg: StackConfig) -> dict[str, int | None]:
    """The pid of every service of this profile (None: not running)."""
    return {name: running_pid(cfg, name) for name in service_names(cfg)}


def describe(cfg: StackConfig) -> list[dict[str, str]]:
    """supervisord's view of every service: name, state, its description (pid, uptime), log."""
    known = {p["name"]: p for p in supervisor(cfg).all_info()}
    return [
        {
            "service": name,
            "state": known[name]["statename"] if name in known else "not started (no supervisord)",
            "detail": known[name]["description"] if name in known else "",
            "log": str(cfg.log_dir / f"{name}.log"),
        }
        for name in service_names(cfg)
    ]


def task_log_hint(cfg: StackConfig) -> str:
    return f"the Airflow UI ({cfg.airflow_url}) or {cfg.airflow_home / 'logs'}"


def down(cfg: StackConfig) -> list[str]:
    """Stop everything :func:`up` started (reverse start order: the API and Airflow before MLflow
    and the object store) and supervisord; nothing of the stack is left running."""
    sup = supervisor(cfg)
    running = [p["name"] for p in sup.all_info() if p["statename"] not in {"STOPPED", "EXITED", "FATAL"}]
    sup.shutdown()
    if cfg.object_store:
        services.remove_object_store_sockets(cfg)
        (cfg.run_dir / "s3.json").unlink(missing_ok=True)  # written anew at every start
    return running
