"""``start-all.sh`` / ``stop-all.sh`` for real: the local stack starts, the training DAG is triggered
through the REST API and succeeds, a second start reuses the running services, and stop-all leaves
no process behind. Ports and the state directory are the test's own."""

from __future__ import annotations

import json
import os
import subprocess
import time

import psutil
import pytest

from tests.support.services import QUIET_ENV, ROOT, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _sessions(state_dir) -> dict[str, int]:
    return {p.stem: json.loads(p.read_text())["pid"] for p in (state_dir / "run").glob("*.json")}


def _session_members(sid: int) -> list[int]:
    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) == sid:
                members.append(proc.pid)
        except OSError:
            continue
    return members


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
        "CROSSFIT_ROWS": "20000",
        "CROSSFIT_SNAPSHOT": "2026-11-01",
        "CROSSFIT_PIPELINE_CONF": json.dumps({"grid": grid, "r2_floor": 0.2}),
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
        sessions = _sessions(state)
        assert set(sessions) == {
            "mlflow", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-api-server", "api"
        }
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

        again = subprocess.run(
            ["bash", str(ROOT / "start-all.sh")], env={**env, "CROSSFIT_TRIGGER": "0"}, capture_output=True, text=True, timeout=300
        )
        assert again.returncode == 0, again.stderr[-3000:]
        assert "MLflow  (reused)" in again.stdout and "Airflow (reused)" in again.stdout
        assert "API     (reused)" in again.stdout
        assert _sessions(state) == sessions
    finally:
        sessions = _sessions(state) if (state / "run").exists() else {}
        stopped = subprocess.run(["bash", str(ROOT / "stop-all.sh")], env=env, capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    time.sleep(0.5)
    leftovers = {name: _session_members(sid) for name, sid in sessions.items()}
    assert all(not members for members in leftovers.values()), leftovers
    assert not list((state / "run").glob("*.json"))
    import socket

    for port in (mlflow_port, airflow_port, api_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
