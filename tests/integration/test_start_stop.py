"""``start-all.sh`` / ``stop-all.sh`` for real: the local stack starts under supervisord, the training
DAG is triggered through the REST API and succeeds, a second start reuses the running services, and
stop-all leaves no process behind (none in supervisord's session, which every service and task
belongs to, and none of the services' pids). Ports and the state directory are the test's own."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time

import psutil
import pytest

from tests.support.services import QUIET_ENV, ROOT, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _sessions(state_dir) -> dict[str, int]:
    """The session of the stack's supervisord (every service and task is in it): name -> sid."""
    record = state_dir / "run" / "stack.json"
    return {"supervisord": json.loads(record.read_text())["sid"]} if record.is_file() else {}


def _service_pids(env) -> dict[str, int | None]:
    from crossfit_stack import config, control

    return control.status(config.config_from_env(env))


def _session_members(sid: int) -> list[int]:
    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) == sid:
                members.append(proc.pid)
        except OSError:
            continue
    return members


def _check_live_traffic(env: dict[str, str], request_id: str) -> None:
    """The stack's API logged the answer under its request id, and the monitoring DAG, unpaused by
    the pipeline command, ran by itself: on its schedule or on the online store's new features
    (a run nobody triggered), measuring live traffic only."""
    from datetime import UTC, datetime, timedelta

    from crossfit_mlops.dag_contract import MONITORING_DAG
    from crossfit_mlops.dag_contract import MonitoringTasks as M
    from crossfit_mlops.prediction_log import live_root, read_log
    from crossfit_stack import control
    from crossfit_stack.config import config_from_env

    cfg = config_from_env(env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the API's writer publishes a part every few seconds
        now = datetime.now(UTC)
        logged = read_log(live_root(cfg.settings), now - timedelta(hours=1), now + timedelta(minutes=1))
        if request_id in set(logged["request_id"]):
            break
        time.sleep(0.5)
    assert request_id in set(logged["request_id"]), "the answer's X-Request-ID should be in the prediction log"
    client = control.airflow_client(cfg)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = [r for r in client.dag_runs(MONITORING_DAG) if r["run_type"] in ("scheduled", "asset_triggered")]
        if any(r["state"] == "success" for r in runs):
            break
        time.sleep(2)
    done = [r for r in runs if r["state"] == "success"]
    assert done, runs
    # (these runs started before the first champion existed: each skipped, saying so; the live lane
    # on real traffic is tests/integration/test_monitoring.py's rollback test)
    states = {t["task_id"]: t["state"] for t in client.task_instances(MONITORING_DAG, done[0]["dag_run_id"])}
    assert M.MEASURE_LIVE in states and states[M.PREPARE] == "skipped", states


def test_start_all_runs_the_pipeline_and_stop_all_leaves_nothing(tmp_path):
    state = tmp_path / "state"
    mlflow_port, airflow_port, api_port = free_port(), free_port(), free_port()
    grid = [
        {"model": "lightgbm", "feature_version": "v1", "params": {"n_estimators": 50}},
        {"model": "lightgbm", "feature_version": "v2", "params": {"n_estimators": 50}},
    ]
    env = {
        **os.environ,
        **QUIET_ENV,
        "CROSSFIT_STATE_DIR": str(state),
        "CROSSFIT_MLFLOW_PORT": str(mlflow_port),
        "CROSSFIT_AIRFLOW_PORT": str(airflow_port),
        "CROSSFIT_API_PORT": str(api_port),
        "CROSSFIT_WORKER_LOG_PORT": str(free_port()),
        "CROSSFIT_ROWS": "5000",
        "CROSSFIT_SNAPSHOT": "2026-11-01",
        "CROSSFIT_PIPELINE_CONF": json.dumps({"grid": grid, "r2_floor": 0.0}),
    }
    for name in ("MLFLOW_TRACKING_URI", "AIRFLOW_HOME"):
        env.pop(name, None)
    try:
        started = subprocess.run(["bash", str(ROOT / "start-all.sh")], env=env, capture_output=True, text=True, timeout=900)
        out = started.stdout + started.stderr
        assert started.returncode == 0, out[-5000:]
        assert "triggered crossfit_training_pipeline run" in out
        assert "-> PROMOTED" in out
        assert f"http://127.0.0.1:{airflow_port}/dags/crossfit_training_pipeline" in out
        # the admin password is in the owner-only secrets file, which start-all points to, never printed
        secrets_file = state / "airflow" / "secrets.json"
        password = json.loads(secrets_file.read_text())["admin_password"]
        assert password not in out and f"password: admin_password in {secrets_file}" in out
        # the state is the owner's only: the directory 0700, databases and secrets 0600
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        for private in (secrets_file, state / "airflow" / "airflow.db", state / "mlflow" / "mlflow.db"):
            assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
        sessions = _sessions(state)
        pids = _service_pids(env)
        assert set(pids) == {
            "mlflow", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-api-server",
            "airflow-log-server", "api",
        }
        assert all(pids.values()), pids
        assert all(os.getsid(pid) == sessions["supervisord"] for pid in pids.values())
        # the prediction API started once the champion existed, and answers with it
        assert f"prediction API (started): http://127.0.0.1:{api_port}/docs" in out
        import re

        import requests

        curl = re.search(r"-d '(\{\"athlete_id\": \d+\})'", out)
        assert curl, out[-3000:]
        answer = requests.post(f"http://127.0.0.1:{api_port}/predict", data=curl.group(1), timeout=30,
                               headers={"Content-Type": "application/json"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == "1" and answer.json()["prediction"] > 0
        # MLflow's Prometheus metrics: the run's calls, counted by endpoint over both workers
        metrics = requests.get(f"http://127.0.0.1:{mlflow_port}/metrics", timeout=10)
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        assert 'endpoint="/api/2.0/mlflow/registered-models/alias"' in metrics.text, metrics.text[:2000]
        _check_live_traffic(env, answer.headers["X-Request-ID"])

        again = subprocess.run(
            ["bash", str(ROOT / "start-all.sh")], env={**env, "CROSSFIT_TRIGGER": "0"}, capture_output=True, text=True, timeout=300
        )
        assert again.returncode == 0, again.stderr[-3000:]
        assert "MLflow  (reused)" in again.stdout and "Airflow (reused)" in again.stdout
        assert "API     (reused)" in again.stdout
        assert _sessions(state) == sessions and _service_pids(env) == pids
    finally:
        sessions = _sessions(state)
        pids = _service_pids(env) if sessions else {}
        stopped = subprocess.run(["bash", str(ROOT / "stop-all.sh")], env=env, capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    time.sleep(0.5)
    assert sessions, "no supervisord session was recorded"
    leftovers = {name: _session_members(sid) for name, sid in sessions.items()}
    assert all(not members for members in leftovers.values()), leftovers
    assert not [pid for pid in pids.values() if pid and psutil.pid_exists(pid)], pids
    assert not list((state / "run").glob("*.json"))
    import socket

    for port in (mlflow_port, airflow_port, api_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
