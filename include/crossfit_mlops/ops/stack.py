"""The local stack (no Docker): MLflow server + Airflow components as processes of this machine.

``start-all.sh`` runs ``python -m crossfit_mlops stack up`` (:func:`up`) then ``pipeline``;
``stop-all.sh`` runs ``stack down`` (:func:`down`).
Everything lives under the state directory: ``run/<service>.json`` (pid, command), ``logs/``,
``airflow/`` (AIRFLOW_HOME, SQLite metadata, generated secrets), ``mlflow/`` (SQLite store and
artifacts). Each service is started in its own session (process group), so stopping it ends the
whole tree it forked (LocalExecutor workers, uvicorn workers, task processes) and nothing else.

Knobs (environment): ``CROSSFIT_MLFLOW_PORT`` (5000), ``CROSSFIT_AIRFLOW_PORT`` (8080),
``CROSSFIT_BIND_HOST`` (127.0.0.1), ``CROSSFIT_MLFLOW_BACKEND_URI`` (SQLite under the state dir; a
``postgresql+psycopg2://`` URI for PostgreSQL), ``CROSSFIT_AIRFLOW_PARALLELISM`` (4),
``CROSSFIT_AIRFLOW_DB_URI`` (SQLite under AIRFLOW_HOME).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from crossfit_mlops.settings import Settings, get_settings

log = logging.getLogger(__name__)

AIRFLOW_COMPONENTS: tuple[str, ...] = ("scheduler", "dag-processor", "triggerer", "api-server")
ADMIN_USER = "admin"


class StackError(RuntimeError):
    """A service could not be started or did not become healthy; the message says where to look."""


@dataclass(frozen=True)
class StackConfig:
    settings: Settings
    bin_dir: Path  # the virtualenv's bin folder (mlflow, airflow)
    host: str
    mlflow_port: int
    airflow_port: int
    api_port: int
    mlflow_backend_uri: str
    airflow_db_uri: str
    parallelism: int

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
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.airflow_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


def config_from_env(environ: dict[str, str] | None = None) -> StackConfig:
    env = dict(os.environ if environ is None else environ)
    settings = get_settings(env)
    mlflow_port = int(env.get("CROSSFIT_MLFLOW_PORT") or 5000)
    home = settings.state_dir / "airflow"
    # the tracking URI follows the port of the server we start, unless the user points elsewhere
    if not env.get("MLFLOW_TRACKING_URI"):
        env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{mlflow_port}"
        settings = get_settings(env)
    return StackConfig(
        settings=settings,
        bin_dir=Path(sys.executable).parent,
        host=env.get("CROSSFIT_BIND_HOST") or "127.0.0.1",
        mlflow_port=mlflow_port,
        airflow_port=int(env.get("CROSSFIT_AIRFLOW_PORT") or 8080),
        api_port=int(env.get("CROSSFIT_API_PORT") or 8000),
        mlflow_backend_uri=env.get("CROSSFIT_MLFLOW_BACKEND_URI")
        or f"sqlite:///{settings.state_dir / 'mlflow' / 'mlflow.db'}",
        airflow_db_uri=env.get("CROSSFIT_AIRFLOW_DB_URI") or f"sqlite:///{home / 'airflow.db'}",
        parallelism=int(env.get("CROSSFIT_AIRFLOW_PARALLELISM") or 4),
    )


# --- secrets -------------------------------------------------------------------------------------
def ensure_secrets(cfg: StackConfig) -> dict[str, str]:
    """Generated once per state directory (mode 0600), never committed: JWT secret, Fernet key, admin password."""
    path = cfg.airflow_home / "secrets.json"
    if path.is_file():
        return json.loads(path.read_text())
    from cryptography.fernet import Fernet

    cfg.airflow_home.mkdir(parents=True, exist_ok=True)
    values = {
        "jwt_secret": secrets.token_urlsafe(48),
        "fernet_key": Fernet.generate_key().decode(),
        "admin_password": secrets.token_urlsafe(12),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(values, handle)
    passwords = cfg.airflow_home / "passwords.json"
    fd = os.open(passwords, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({ADMIN_USER: values["admin_password"]}, handle)
    return values


def write_local_settings(cfg: StackConfig) -> None:
    from crossfit_mlops.ops.preload import LOCAL_SETTINGS

    config_dir = cfg.airflow_home / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)


def service_env(cfg: StackConfig) -> dict[str, str]:
    """The environment of every service and task: settings, quiet clients, Airflow configuration."""
    secrets_ = ensure_secrets(cfg)
    env = dict(os.environ)
    env.update(cfg.settings.as_env())
    env.update(
        {
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "FEAST_USAGE": "False",
            "CODECARBON_LOG_LEVEL": "error",
            "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning",
            "AIRFLOW_HOME": str(cfg.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(cfg.settings.project_root / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(cfg.parallelism),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(cfg.parallelism),
            "AIRFLOW__CORE__FERNET_KEY": secrets_["fernet_key"],
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(cfg.airflow_home / "passwords.json"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{cfg.airflow_url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets_["jwt_secret"],
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": cfg.airflow_db_uri,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(cfg.airflow_home / "logs"),
        }
    )
    return env


# --- processes -----------------------------------------------------------------------------------
def _record_path(cfg: StackConfig, name: str) -> Path:
    return cfg.run_dir / f"{name}.json"


def running_pid(cfg: StackConfig, name: str) -> int | None:
    """The pid of our running ``name`` service, or None (a stale record is removed)."""
    import psutil

    path = _record_path(cfg, name)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    try:
        proc = psutil.Process(record["pid"])
        if proc.create_time() == record["create_time"] and proc.status() != psutil.STATUS_ZOMBIE:
            return record["pid"]
    except psutil.Error:
        pass
    path.unlink(missing_ok=True)
    return None


def _start(cfg: StackConfig, name: str, argv: list[str], env: dict[str, str]) -> int:
    import psutil

    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    log_file = cfg.log_dir / f"{name}.log"
    with log_file.open("ab") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=cfg.settings.project_root,
        )
    record = {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(), "argv": argv, "log": str(log_file)}
    _record_path(cfg, name).write_text(json.dumps(record, indent=2))
    log.info("started %s (pid %d), log %s", name, proc.pid, log_file)
    return proc.pid


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (OSError, urllib.error.URLError):
        return False


def wait_for_url(url: str, proc: subprocess.Popen, log_file: Path, timeout: float = 90.0) -> None:
    """Wait until ``url`` answers 2xx; raise StackError with the end of ``log_file`` if the process
    exits first or the time runs out (for processes started outside the recorded services)."""
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


def _wait_healthy(cfg: StackConfig, name: str, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_ok(url):
            return
        if running_pid(cfg, name) is None:
            raise StackError(f"{name} exited while starting; see {cfg.log_dir / (name + '.log')}")
        time.sleep(0.5)
    raise StackError(f"{name} did not answer {url} within {timeout:.0f}s; see {cfg.log_dir / (name + '.log')}")


def sqlite_wal(uri: str) -> bool:
    """Put a SQLite backend store in write-ahead-log mode (a no-op for other databases).

    MLflow leaves its SQLite file in the default rollback-journal mode, where every write locks out
    readers: with parallel training tasks logging at once, requests queue on the lock. In WAL mode
    readers and one writer proceed together (Airflow sets it on its own SQLite database). The mode
    is stored in the file, so it is set once, before the server opens it.
    """
    if not uri.startswith("sqlite:///"):
        return False
    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    return mode == "wal"


def start_mlflow(cfg: StackConfig, env: dict[str, str]) -> str:
    url = f"{cfg.mlflow_url}/health"
    if running_pid(cfg, "mlflow") and http_ok(url):
        return "reused"
    if _port_in_use(cfg.host, cfg.mlflow_port):
        raise StackError(f"port {cfg.mlflow_port} is used by another program: stop it or set CROSSFIT_MLFLOW_PORT")
    artifacts = cfg.mlflow_dir / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    sqlite_wal(cfg.mlflow_backend_uri)
    argv = [
        str(cfg.bin_dir / "mlflow"), "server",
        "--backend-store-uri", cfg.mlflow_backend_uri,
        "--artifacts-destination", str(artifacts),
        "--host", cfg.host, "--port", str(cfg.mlflow_port), "--workers", "2",
    ]
    _start(cfg, "mlflow", argv, env)
    _wait_healthy(cfg, "mlflow", url, timeout=90)
    return "started"


def start_airflow(cfg: StackConfig, env: dict[str, str]) -> str:
    health = f"{cfg.airflow_url}/api/v2/monitor/health"
    if all(running_pid(cfg, f"airflow-{c}") for c in AIRFLOW_COMPONENTS) and http_ok(health):
        return "reused"
    for component in AIRFLOW_COMPONENTS:  # a partial stack from a crash: restart it cleanly
        stop_service(cfg, f"airflow-{component}")
    if _port_in_use(cfg.host, cfg.airflow_port):
        raise StackError(f"port {cfg.airflow_port} is used by another program: stop it or set CROSSFIT_AIRFLOW_PORT")
    airflow = str(cfg.bin_dir / "airflow")
    migrate = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, cwd=cfg.settings.project_root)
    if migrate.returncode != 0:
        raise StackError(f"airflow db migrate failed:\n{migrate.stdout[-2000:]}\n{migrate.stderr[-2000:]}")
    for component in AIRFLOW_COMPONENTS:
        argv = [airflow, component]
        if component == "api-server":
            argv += ["--host", cfg.host, "--port", str(cfg.airflow_port)]
        _start(cfg, f"airflow-{component}", argv, env)
    _wait_healthy(cfg, "airflow-api-server", health, timeout=120)
    return "started"


def start_api(cfg: StackConfig, env: dict[str, str] | None = None) -> str:
    """The prediction API (``python -m crossfit_mlops serve``) on :8000: "started" or "reused"."""
    url = f"{cfg.api_url}/health"
    if running_pid(cfg, "api") and http_ok(url):
        return "reused"
    if _port_in_use(cfg.host, cfg.api_port):
        raise StackError(f"port {cfg.api_port} is used by another program: stop it or set CROSSFIT_API_PORT")
    env = env or service_env(cfg)
    argv = [
        str(cfg.bin_dir / "python"), "-m", "crossfit_mlops", "serve",
        "--host", cfg.host, "--port", str(cfg.api_port), "--log-level", "warning",
    ]
    _start(cfg, "api", argv, env)
    _wait_healthy(cfg, "api", f"{cfg.api_url}/ready", timeout=90)
    return "started"


def stop_service(cfg: StackConfig, name: str, timeout: float = 20.0) -> bool:
    """End a service and everything it forked (its session). True if something was running."""
    import psutil

    pid = running_pid(cfg, name)
    path = _record_path(cfg, name)
    if pid is None:
        path.unlink(missing_ok=True)
        return False
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        tree = []
    session = {p for p in psutil.process_iter(["pid"]) if _sid(p.pid) == pid}
    procs = {p.pid: p for p in [*tree, *session]}.values()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
        _, alive = psutil.wait_procs(list(procs), timeout=timeout if sig == signal.SIGTERM else 5)
        if not alive:
            break
        procs = alive
        log.warning("%s: %d processes ignored SIGTERM, killing", name, len(alive))
    path.unlink(missing_ok=True)
    log.info("stopped %s (pid %d)", name, pid)
    return True


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def up(cfg: StackConfig) -> dict[str, str]:
    """Start (or reuse) MLflow and Airflow; apply the Feast definitions. Returns what happened."""
    env = service_env(cfg)
    if env.get("CROSSFIT_PRELOAD", "1") != "0":
        write_local_settings(cfg)
    status = {"mlflow": start_mlflow(cfg, env), "airflow": start_airflow(cfg, env)}
    from crossfit_mlops.features.store import apply_definitions

    apply_definitions(cfg.settings)
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


SERVICES: tuple[str, ...] = ("mlflow", *(f"airflow-{c}" for c in AIRFLOW_COMPONENTS), "api")


def status(cfg: StackConfig) -> dict[str, int | None]:
    """The recorded pid of every service (None: not running)."""
    return {name: running_pid(cfg, name) for name in SERVICES}


def task_log_hint(cfg: StackConfig) -> str:
    return f"the Airflow UI ({cfg.airflow_url}) or {cfg.airflow_home / 'logs'}"


def down(cfg: StackConfig) -> list[str]:
    """Stop what :func:`up` started (Airflow first, so no task is left talking to MLflow)."""
    stopped = []
    for name in ("api", *(f"airflow-{c}" for c in ("scheduler", "triggerer", "dag-processor", "api-server")), "mlflow"):
        if stop_service(cfg, name):
            stopped.append(name)
    return stopped
