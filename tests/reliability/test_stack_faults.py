"""Faults of the supervised local stack, injected for real while it runs (MLflow's basic-auth on).

1. ``kill -9`` of the MLflow server right after a training run is triggered: supervisord restarts
   it (its log says so), the launcher ends the uvicorn workers the dead server left holding the
   port, MLflow answers again, and the run still succeeds (bounded MLflow client calls fail in
   seconds, Airflow's task retries carry the run over the gap).
2. With auth on, a client without the credential cannot move ``@champion``: 401, alias unchanged.
3. ``kill -9`` of the Airflow api-server (its own process) and of the prediction API (the pid
   supervisord reports, i.e. its launcher): both come back, ``stack status`` shows every service
   RUNNING, a second run succeeds and the API serves the champion.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
import requests

from crossfit_mlops.contract import TRAINING_DAG
from tests.support.services import mlflow_credentials, running_stack, stack_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GRID = [
    {"model": "lightgbm", "feature_version": version, "params": {"n_estimators": 40, "num_leaves": 15}}
    for version in ("v1", "v2")
]
CONF = {"rows": 5000, "snapshot": "2026-11-03", "grid": GRID, "r2_floor": 0.0}


def _wait_back(cfg, name: str, old_pid: int, url: str | None, timeout: float = 180) -> int:
    from crossfit_mlops.ops import stack

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = stack.running_pid(cfg, name)
        if pid and pid != old_pid and (url is None or stack.http_ok(url)):
            return pid
        time.sleep(0.5)
    raise AssertionError(f"{name} did not come back: {stack.describe(cfg)}")


def _supervisord_log(cfg) -> str:
    return (cfg.log_dir / "supervisord.log").read_text()


def test_killed_services_are_restarted_and_the_pipeline_still_succeeds(tmp_path, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from crossfit_mlops.ops import stack

    env = stack_env(tmp_path / "state", CROSSFIT_MLFLOW_AUTH="1")
    with running_stack(env, TRAINING_DAG) as (cfg, client):
        for name, value in mlflow_credentials(cfg).items():
            monkeypatch.setenv(name, value)
        client.unpause(TRAINING_DAG)

        # 1. MLflow killed as a run starts
        run_id = client.trigger(TRAINING_DAG, CONF)
        killed = stack.running_pid(cfg, "mlflow")
        os.kill(killed, signal.SIGKILL)
        _wait_back(cfg, "mlflow", killed, f"{cfg.mlflow_url}/health")
        assert "exited: mlflow (exit status 137; not expected)" in _supervisord_log(cfg)
        assert "launch[mlflow]: service exited (-9); ending" in (cfg.log_dir / "mlflow.log").read_text()
        run = client.wait_for_run(TRAINING_DAG, run_id, timeout=900, poll=2.0)
        assert run["state"] == "success", f"{run}; logs in {cfg.airflow_home / 'logs'}"

        # 2. without the credential nobody moves @champion
        name = cfg.settings.registered_model_name
        authed = MlflowClient(cfg.mlflow_url)
        champion = authed.get_model_version_by_alias(name, "champion").version
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
        with pytest.raises(MlflowException, match="401"):
            MlflowClient(cfg.mlflow_url).set_registered_model_alias(name, "champion", champion)
        with pytest.raises(MlflowException, match="401"):
            MlflowClient(cfg.mlflow_url).delete_registered_model_alias(name, "champion")
        anonymous = requests.post(
            f"{cfg.mlflow_url}/api/2.0/mlflow/registered-models/alias",
            json={"name": name, "alias": "champion", "version": champion}, timeout=30,
        )
        assert anonymous.status_code == 401
        from crossfit_mlops.ops.checks import ServiceCheckError, check_mlflow

        with pytest.raises(ServiceCheckError, match="refused the credentials"):
            check_mlflow(cfg.mlflow_url)
        for key, value in mlflow_credentials(cfg).items():
            monkeypatch.setenv(key, value)
        assert authed.get_model_version_by_alias(name, "champion").version == champion

        # 3. the Airflow api-server and the prediction API killed
        assert stack.start_api(cfg) == "started"
        api_server = stack.running_pid(cfg, "airflow-api-server")
        os.kill(api_server, signal.SIGKILL)
        api = stack.running_pid(cfg, "api")
        os.kill(stack.supervisor(cfg).info("api")["pid"], signal.SIGKILL)  # its launcher: the API is orphaned
        _wait_back(cfg, "airflow-api-server", api_server, f"{cfg.airflow_url}/api/v2/monitor/health")
        _wait_back(cfg, "api", api, f"{cfg.api_url}/ready")
        assert "exited: api (terminated by SIGKILL; not expected)" in _supervisord_log(cfg)
        assert "launch[api]: ending 1 processes left by the previous instance" in (cfg.log_dir / "api.log").read_text()
        assert not psutil.pid_exists(api), "the orphaned API process should have been ended"
        assert {row["state"] for row in stack.describe(cfg)} == {"RUNNING"}, stack.describe(cfg)

        run_id = client.trigger(TRAINING_DAG, {**CONF, "seed": 7})
        run = client.wait_for_run(TRAINING_DAG, run_id, timeout=900, poll=2.0)
        assert run["state"] == "success", run
        from crossfit_mlops.serving.features import example_athlete

        answer = requests.post(f"{cfg.api_url}/predict", json={"athlete_id": example_athlete(cfg.settings)}, timeout=30)
        assert answer.status_code == 200, answer.text
