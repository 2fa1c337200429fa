"""One local stack (MLflow + Airflow processes, LocalExecutor, own ports and state directory)
shared by the modules here that drive the pipeline through the REST API: the fault scenarios and
the human-approval flow. Started when the first test asks for it, stopped at the end. Its alerts
go to a webhook receiver of the tests (``pipeline_stack["alerts"]``)."""

from __future__ import annotations

import pytest

from crossfit_mlops.dag_contract import TRAINING_DAG
from tests.support.services import QUIET_ENV, free_port
from tests.support.webhook import webhook_receiver

APPROVAL_TIMEOUT_S = 20


@pytest.fixture(scope="package")
def pipeline_stack(tmp_path_factory):
    from crossfit_stack import config, control

    state = tmp_path_factory.mktemp("faults") / "state"
    env = {
        **QUIET_ENV,
        "CROSSFIT_STATE_DIR": str(state),
        "CROSSFIT_MLFLOW_PORT": str(free_port()),
        "CROSSFIT_AIRFLOW_PORT": str(free_port()),
        "CROSSFIT_API_PORT": str(free_port()),
        "CROSSFIT_WORKER_LOG_PORT": str(free_port()),  # the task-log server's, like every port of the stack
        # an unreachable MLflow fails a call in seconds; Airflow's task retries then govern
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
        # gate mode "human": a challenger nobody answers is rejected after this (the DAG reads it)
        "CROSSFIT_APPROVAL_TIMEOUT_S": str(APPROVAL_TIMEOUT_S),
    }
    # the stack's alerts go to a receiver of the tests (the stack hands the variable to Airflow)
    with webhook_receiver() as alerts, pytest.MonkeyPatch.context() as mp:
        env["CROSSFIT_ALERT_WEBHOOK_URL"] = alerts.url
        for name, value in env.items():
            mp.setenv(name, value)
        for name in ("MLFLOW_TRACKING_URI", "AIRFLOW_HOME", "CROSSFIT_MLFLOW_BACKEND_URI", "CROSSFIT_AIRFLOW_DB_URI"):
            mp.delenv(name, raising=False)
        cfg = config.config_from_env()  # a down MLflow is restarted only by the test itself
        try:
            client = control.up_and_connect(cfg, TRAINING_DAG)
            client.unpause(TRAINING_DAG)
            yield {"cfg": cfg, "client": client, "uri": cfg.settings.mlflow_tracking_uri, "module": control, "alerts": alerts}
        finally:
            control.down(cfg)
