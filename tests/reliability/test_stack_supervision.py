"""The supervision of the local stack, piece by piece and for real, without starting the whole stack:
the generated supervisord.conf as supervisord itself reads it, the launcher against a real process
tree killed with SIGKILL, settings that are refused with a clear message, a stack started with other
settings, a port held by another program, and a service that cannot start."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from contextlib import contextmanager

import psutil
import pytest

from tests.support.services import QUIET_ENV, stack_env


def _cfg(tmp_path, **overrides):
    from crossfit_stack import config

    return config.config_from_env(stack_env(tmp_path / "state", **overrides))


# --- configuration --------------------------------------------------------------------------------
def test_generated_configuration_is_what_supervisord_reads(tmp_path):
    from supervisor.datatypes import RestartUnconditionally
    from supervisor.options import ServerOptions

    from crossfit_stack import control, provision
    from crossfit_stack import programs as stack_programs

    cfg = _cfg(tmp_path, CROSSFIT_PROFILE="cluster", CROSSFIT_S3_PORT="21000")
    sup = control.supervisor(cfg)
    cfg.run_dir.mkdir(parents=True)
    cfg.log_dir.mkdir(parents=True)
    conf = sup.conf_path
    conf.write_text(sup.render(stack_programs.programs(cfg, provision.ensure_secrets(cfg))))
    options = ServerOptions()
    options.realize(["-c", str(conf)])
    programs = {group.name: group.process_configs[0] for group in options.process_group_configs}
    assert set(programs) == {
        "object-store", "mlflow", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
        "airflow-triggerer", "airflow-worker-1", "airflow-worker-2", "api",
    }
    # supervisord stops in the reverse order: the API and the workers first, the object store last
    order = sorted(programs, key=lambda name: programs[name].priority)
    assert order[0] == "object-store" and order[1] == "mlflow" and order[-1] == "api"
    for name, program in programs.items():
        assert program.autorestart is RestartUnconditionally and program.stopasgroup and program.killasgroup, name
        assert program.stopsignal == signal.SIGTERM and program.stopwaitsecs >= 20, name
        assert program.stdout_logfile == str(cfg.log_dir / f"{name}.log") and program.redirect_stderr, name
        assert program.command.split()[1:4] == ["-m", "crossfit_stack.launch", name], program.command
    assert options.umask == 0o077
    # the object store's key pair only in the MLflow server's environment, never in the shared one
    secrets = provision.ensure_secrets(cfg)
    assert programs["mlflow"].environment["AWS_SECRET_ACCESS_KEY"] == secrets["s3_secret_key"]
    assert not any(secrets["s3_secret_key"] in v for v in control.stack_environment(cfg).values())
    assert programs["airflow-worker-2"].environment["CROSSFIT_WORKER_NAME"] == "worker2"
    assert "--queues default,training" in programs["airflow-worker-1"].command
    assert stat.S_IMODE(cfg.secrets_path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CROSSFIT_PROFILE", "huge", "CROSSFIT_PROFILE='huge' is not a profile"),
        ("CROSSFIT_AIRFLOW_EXECUTOR", "KubernetesExecutor", "choose LocalExecutor or CeleryExecutor"),
        ("CROSSFIT_MLFLOW_AUTH", "maybe", "CROSSFIT_MLFLOW_AUTH='maybe' must be 0 or 1"),
        ("CROSSFIT_MLFLOW_PORT", "five", "CROSSFIT_MLFLOW_PORT='five' is not an integer"),
    ],
)
def test_bad_settings_are_refused_naming_the_variable(tmp_path, variable, value, message):
    with pytest.raises(ValueError, match=message):
        _cfg(tmp_path, **{variable: value})


def test_profile_defaults_yield_to_the_environment(tmp_path):
    cfg = _cfg(tmp_path, CROSSFIT_PROFILE="cluster", CROSSFIT_CELERY_WORKERS="3", CROSSFIT_MLFLOW_AUTH="0")
    assert cfg.executor == "CeleryExecutor" and cfg.celery_workers == 3 and not cfg.mlflow_auth
    assert cfg.mlflow_backend_uri.endswith("/crossfit_mlflow") and cfg.artifacts_destination.startswith("s3://")
    local = _cfg(tmp_path)
    assert (local.profile, local.executor, local.celery_workers, local.object_store) == ("local", "LocalExecutor", 0, "")
    assert local.mlflow_backend_uri.startswith("sqlite:///")


def test_secrets_are_generated_once_owner_only_and_completed(tmp_path):
    from crossfit_stack import provision

    cfg = _cfg(tmp_path)
    first = provision.ensure_secrets(cfg)
    assert stat.S_IMODE(cfg.secrets_path.stat().st_mode) == 0o600
    old = {k: v for k, v in first.items() if k != "flask_secret_key"}  # as an older version wrote it
    cfg.secrets_path.write_text(json.dumps(old))
    again = provision.ensure_secrets(cfg)
    assert {k: again[k] for k in old} == old and again["flask_secret_key"]
    assert stat.S_IMODE(cfg.secrets_path.stat().st_mode) == 0o600


# --- the launcher, on a real process tree ---------------------------------------------------------
TREE = "sleep 300 & sleep 300 & wait"


def _launch(record, *argv):
    return subprocess.Popen(
        [sys.executable, "-m", "crossfit_stack.launch", "test", str(record), "--", *argv],
        stderr=subprocess.PIPE, text=True, start_new_session=True,  # a group of its own, as supervisord gives
    )


def _descendants(pid) -> list[psutil.Process]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        kids = psutil.Process(pid).children(recursive=True)
        if len(kids) >= 3:  # bash + two sleeps
            return kids
        time.sleep(0.1)
    raise AssertionError("the service tree did not start")


def test_launcher_ends_what_a_killed_service_left(tmp_path):
    launcher = _launch(tmp_path / "rec.json", "bash", "-c", TREE)
    tree = _descendants(launcher.pid)
    service = next(p for p in tree if p.name() == "bash")
    service.send_signal(signal.SIGKILL)  # the crash: its two children are orphaned
    assert launcher.wait(timeout=60) == 128 + signal.SIGKILL  # supervisord sees the crash
    assert "service exited (-9); ending 2 processes it left" in launcher.stderr.read()
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_next_launcher_ends_what_a_killed_launcher_left(tmp_path):
    record = tmp_path / "rec.json"
    first = _launch(record, "bash", "-c", TREE)
    tree = _descendants(first.pid)
    first.send_signal(signal.SIGKILL)  # the launcher itself: the whole tree is orphaned
    first.wait(timeout=30)
    assert all(p.is_running() for p in tree)
    second = _launch(record, "bash", "-c", "exit 3")
    assert second.wait(timeout=60) == 3
    assert "ending 3 processes left by the previous instance" in second.stderr.read()
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_launcher_passes_a_stop_on_and_ends_the_rest(tmp_path):
    launcher = _launch(tmp_path / "rec.json", "bash", "-c", "trap 'exit 0' TERM; " + TREE)
    tree = _descendants(launcher.pid)
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=60) == 0
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


# --- supervisord itself ---------------------------------------------------------------------------
def test_a_running_stack_with_other_settings_is_not_reused(tmp_path):
    from crossfit_stack import config, control

    env = stack_env(tmp_path / "state")
    cfg = config.config_from_env(env)
    try:
        assert control.ensure_supervisor(cfg) == "started"
        assert control.ensure_supervisor(cfg) == "reused"
        other = config.config_from_env({**env, "CROSSFIT_MLFLOW_AUTH": "1"})
        with pytest.raises(control.StackError, match=r"started with other settings \(.*MLFLOW_TRACKING_PASSWORD.*\): stop it first"):
            control.ensure_supervisor(other)
    finally:
        control.down(cfg)
    assert not control.supervisor(cfg).is_running()


@contextmanager
def _held_port():
    """A port another program listens on (this test's socket), for as long as the block runs."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_port_held_by_another_program_is_named(tmp_path):
    from crossfit_stack import control

    with _held_port() as port:
        cfg = _cfg(tmp_path, CROSSFIT_MLFLOW_PORT=str(port))
        try:
            with pytest.raises(control.StackError, match=f"port {port} \\(mlflow\\) is used by another program: stop it or set CROSSFIT_MLFLOW_PORT"):
                control.start_mlflow(cfg)
        finally:
            control.down(cfg)


def test_a_service_that_cannot_start_is_reported_with_its_log(tmp_path):
    from crossfit_stack import control

    cfg = _cfg(tmp_path, CROSSFIT_MLFLOW_BACKEND_URI="bogus://nowhere")
    env = {**os.environ, **QUIET_ENV}
    try:
        with pytest.raises(control.StackError, match=r"mlflow exited while starting \(.*\); see .*mlflow\.log") as failure:
            control.start_mlflow(cfg, env)
        assert len(str(failure.value).splitlines()) > 3, "the end of its log is shown"
        # not left restarting: supervisord gave up, or the stack stopped it
        assert [row["state"] for row in control.describe(cfg) if row["service"] == "mlflow"] in (["FATAL"], ["STOPPED"])
    finally:
        control.down(cfg)


# --- the task-log server and two starts at once ------------------------------------------------------
def test_the_task_log_server_listens_on_the_stack_host_only(tmp_path):
    """Airflow's scheduler started its own log server on 0.0.0.0 and [::]; the stack runs the
    scheduler with --skip-serve-logs and Airflow's log app on the bind host instead."""
    from crossfit_stack import control, provision
    from crossfit_stack import programs as stack_programs
    from tests.support.services import free_port

    cfg = _cfg(tmp_path)
    programs = {p.name: p for p in stack_programs.programs(cfg, provision.ensure_secrets(cfg))}
    assert "--skip-serve-logs" in programs["airflow-scheduler"].argv
    argv = programs[stack_programs.LOG_SERVER].argv
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert stack_programs.airflow_env(cfg, provision.ensure_secrets(cfg))["CROSSFIT_LOG_SERVER_HOST"] == "127.0.0.1"
    port = free_port()
    argv[argv.index("--port") + 1] = str(port)
    server = subprocess.Popen(argv, env={**os.environ, **control.service_env(cfg)})
    try:
        deadline, listening = time.monotonic() + 60, []
        while not listening and time.monotonic() < deadline:
            assert server.poll() is None, "the log server exited"
            time.sleep(0.5)
            listening = [c.laddr for c in psutil.Process(server.pid).net_connections("inet") if c.status == psutil.CONN_LISTEN]
        assert listening and {addr.ip for addr in listening} == {"127.0.0.1"}, listening
    finally:
        server.terminate()
        server.wait(20)


def test_a_task_log_port_held_by_another_program_is_named(tmp_path):
    from crossfit_stack import control
    from crossfit_stack import programs as stack_programs

    with _held_port() as port:
        cfg = _cfg(tmp_path, CROSSFIT_WORKER_LOG_PORT=str(port))
        try:
            control.ensure_supervisor(cfg)
            message = f"port {port} \\(airflow-log-server\\) is used by another program: stop it or set CROSSFIT_WORKER_LOG_PORT"
            with pytest.raises(control.StackError, match=message):
                control._launch(cfg, [stack_programs.LOG_SERVER])
        finally:
            control.down(cfg)


def test_two_starts_at_once_run_one_after_the_other(tmp_path, monkeypatch):
    """Two start-all.sh on a stopped stack: the second waits for the first (then finds the stack
    running and reuses it) instead of starting a second supervisord and failing."""
    import threading

    from crossfit_stack import control

    cfg = _cfg(tmp_path)
    spans = []

    def slow_start(cfg):
        began = time.monotonic()
        time.sleep(1.0)
        spans.append((began, time.monotonic()))
        return {}

    monkeypatch.setattr(control, "_up", slow_start)
    starts = [threading.Thread(target=control.up, args=(cfg,)) for _ in range(2)]
    for thread in starts:
        thread.start()
    for thread in starts:
        thread.join(10)
    (a_start, a_end), (b_start, b_end) = sorted(spans)
    assert b_start >= a_end, f"the two starts overlapped: {spans}"
    lock = cfg.settings.state_dir / ".stack-start.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
