"""The local stack (no Docker): MLflow, Airflow and the prediction API as supervised processes.

``start-all.sh`` runs ``python -m crossfit_stack up`` (:func:`up`) then ``pipeline``;
``stop-all.sh`` runs ``python -m crossfit_stack down`` (:func:`down`). One supervisord per state
directory (:mod:`crossfit_stack.supervisor`) runs every service, restarts one that crashes, and stops each
with its whole process tree. Everything lives under the state directory (mode 0700):
``run/`` (supervisord's configuration, socket and record), ``logs/<service>.log``, ``airflow/``
(AIRFLOW_HOME, SQLite metadata, ``secrets.json``), ``mlflow/`` (SQLite store, artifacts, the
basic-auth database), ``seaweedfs/`` (the object store's data, cluster profile).

Services (names for :func:`start_service`, :func:`stop_service`, :func:`running_pid`):
``object-store`` (cluster profile), ``mlflow``, ``airflow-api-server``, ``airflow-scheduler``,
``airflow-dag-processor``, ``airflow-triggerer``, ``airflow-worker-1`` ... (CeleryExecutor), ``api``, ``feast-ui``
(``CROSSFIT_FEAST_UI=1``).

Knobs: the ``CROSSFIT_*`` variables of :class:`crossfit_stack.config.StackSettings` (ports, bind
host, backends, executor, Celery, object store, ...), with the defaults of ``CROSSFIT_PROFILE``
(local | cluster) filled in first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from crossfit_stack import programs, provision
from crossfit_stack.config import StackConfig
from crossfit_stack.provision import ensure_secrets
from crossfit_stack.supervisor import FATAL, Supervisor, SupervisorError, env_fingerprint

log = logging.getLogger(__name__)



class StackError(RuntimeError):
    """A service could not be started or did not become healthy; the message says where to look."""


def service_env(cfg: StackConfig) -> dict[str, str]:
    """The environment of every service and task: this process's, plus :func:`stack_environment`."""
    return {**os.environ, **stack_environment(cfg)}


def stack_environment(cfg: StackConfig) -> dict[str, str]:
    """What the stack sets for its services and tasks: the settings, quiet and bounded MLflow
    clients (credentials when basic-auth is on), the Airflow configuration of the profile."""
    secrets_ = ensure_secrets(cfg)
    return {**cfg.settings.as_env(), **programs.client_env(cfg, secrets_), **programs.airflow_env(cfg, secrets_)}


def use_stack_clients(cfg: StackConfig) -> None:
    """Give this process's MLflow clients what the stack's services get: the bounded HTTP limits
    and, when basic-auth is on, the admin credential (the CLI that follows a run, a test)."""
    needs_secrets = cfg.mlflow_auth or (cfg.object_store and cfg.settings.on_object_storage)
    os.environ.update(programs.client_env(cfg, ensure_secrets(cfg) if needs_secrets else {}))


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


# --- the supervisor and its programs --------------------------------------------------------------
def supervisor(cfg: StackConfig) -> Supervisor:
    return Supervisor(
        run_dir=cfg.run_dir, log_dir=cfg.log_dir, project_root=cfg.settings.project_root, bin_dir=cfg.bin_dir,
        launch_grace_s=cfg.stop_grace_s,
    )


def ensure_supervisor(cfg: StackConfig, env: dict[str, str] | None = None) -> str:
    """Start this state directory's supervisord (no service started yet), or reuse it if it runs
    with the same settings; "started" / "reused". ``env`` (default :func:`service_env`) is the
    environment every service inherits."""
    provision.secure_state(cfg)
    ours = stack_environment(cfg)
    if env is not None:
        ours.update({k: v for k, v in env.items() if os.environ.get(k) != v})
    try:
        return supervisor(cfg).start(programs.programs(cfg, ensure_secrets(cfg)), {**os.environ, **ours}, env_fingerprint(ours))
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
    request that reaches it, which the first task of the first run would otherwise pay for (the
    measurement: docs/decisions/0101-local-stack-airflow-latency.md). Its health endpoint needs no
    token."""
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
    url = programs.health_url(cfg, name)
    return _state(cfg, name) == "RUNNING" and (url is None or http_ok(url))


def _launch(cfg: StackConfig, names: list[str]) -> None:
    """Ask supervisord to start ``names`` (not waiting), after checking that their ports are free."""
    for name in names:
        port = programs.port_of(cfg, name)
        if _state(cfg, name) != "RUNNING" and port and _port_in_use(cfg.host, port):
            raise StackError(f"port {port} ({name}) is used by another program: stop it or set {programs.port_variable(name)}")
    for name in names:
        try:
            supervisor(cfg).start_program(name)
        except SupervisorError as exc:
            raise StackError(str(exc)) from exc


def _await(cfg: StackConfig, names: list[str], timeout: float) -> None:
    for name in names:
        _wait_healthy(cfg, name, programs.health_url(cfg, name), timeout)


def start_service(cfg: StackConfig, name: str, timeout: float = 120.0) -> str:
    """Start one service (the rest keeps running) and wait until it answers: "started" or
    "reused". supervisord must run (:func:`up` or :func:`ensure_supervisor`)."""
    if _healthy(cfg, name):
        return "reused"
    _launch(cfg, [name])
    _await(cfg, [name], timeout)
    if name == programs.OBJECT_STORE:
        provision.ensure_bucket(cfg, ensure_secrets(cfg))
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
    provision.sqlite_wal(cfg.mlflow_backend_uri)
    provision.prepare_mlflow(cfg, ensure_secrets(cfg))
    if cfg.object_store:
        provision.write_s3_config(cfg, ensure_secrets(cfg))
        return [programs.OBJECT_STORE, "mlflow"]
    return ["mlflow"]


def _launch_mlflow(cfg: StackConfig) -> tuple[str, list[str]]:
    names = _mlflow_names(cfg)
    if all(_healthy(cfg, n) for n in names):
        return "reused", []
    if _state(cfg, "mlflow") != "RUNNING":  # (a running server's workers hold their files open)
        provision.reset_mlflow_metrics(cfg)
    _launch(cfg, names)
    return "started", names


def _finish_mlflow(cfg: StackConfig, names: list[str]) -> None:
    _await(cfg, names, timeout=180)
    if programs.OBJECT_STORE in names:  # its S3 gateway answers before the filer takes writes
        provision.ensure_bucket(cfg, ensure_secrets(cfg))


def start_mlflow(cfg: StackConfig, env: dict[str, str] | None = None) -> str:
    """The MLflow server (and the object store it writes to, if the stack runs one)."""
    ensure_supervisor(cfg, env)
    result, names = _launch_mlflow(cfg)
    _finish_mlflow(cfg, names)
    return result


def _launch_airflow(cfg: StackConfig, env: dict[str, str] | None = None) -> tuple[str, list[str]]:
    names = programs.airflow_programs(cfg)
    if all(_state(cfg, n) == "RUNNING" for n in names) and http_ok(programs.health_url(cfg, "airflow-api-server")):
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
    provision.ensure_databases(cfg)
    # the preload warms the scheduler, whose forks run the tasks under the LocalExecutor only
    if cfg.preload and not cfg.celery:
        provision.write_local_settings(cfg)
    status = {"supervisor": ensure_supervisor(cfg)}
    status["mlflow"], mlflow_names = _launch_mlflow(cfg)
    status["airflow"], airflow_names = _launch_airflow(cfg)
    _finish_mlflow(cfg, mlflow_names)
    _await(cfg, airflow_names, timeout=180)
    from crossfit_mlops.features.feast_repo import apply_definitions

    warm = threading.Thread(target=warm_execution_api, args=(cfg,), daemon=True)
    warm.start()
    apply_definitions(cfg.settings)
    if cfg.feast_ui:  # after the apply: it shows the registry as it is now
        status["feast_ui"] = start_feast_ui(cfg)
    warm.join(timeout=60)
    provision.private_files(cfg)
    return status


def start_feast_ui(cfg: StackConfig) -> str:
    """Feast's web UI over the registry (``CROSSFIT_FEAST_UI=1``): "started", "reused", or why it
    did not start. An optional viewer: the stack and the pipeline run without it, so its failure is
    reported, not raised."""
    from crossfit_stack.feast_ui import missing_packages

    missing = missing_packages()
    if missing:
        return f"not started: it needs {', '.join(missing)} (feast[grpcio]), missing from this environment (requirements.lock installs them)"
    try:
        return start_service(cfg, programs.FEAST_UI, timeout=120)
    except StackError as exc:
        log.warning("Feast UI: %s", exc)
        return f"failed: see {cfg.log_dir / (programs.FEAST_UI + '.log')}"


def airflow_client(cfg: StackConfig):
    """A REST client logged in as the generated admin user of this stack."""
    from crossfit_stack.airflow_rest import AirflowClient

    return AirflowClient(cfg.airflow_url, provision.ADMIN_USER, ensure_secrets(cfg)["admin_password"])


def set_declared_variables(cfg: StackConfig, client) -> dict[str, str]:
    """Set the Variables of ``airflow_settings.yaml``; the tracking URI becomes the local server's."""
    from crossfit_stack.airflow_rest import declared_variables

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
    return programs.names(cfg)


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
        programs.remove_object_store_sockets(cfg)
        (cfg.run_dir / "s3.json").unlink(missing_ok=True)  # written anew at every start
    return running
