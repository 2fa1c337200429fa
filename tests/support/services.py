"""Real services for integration tests: an MLflow server and an Airflow home, in temp dirs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def mlflow_server(state_dir: Path) -> Iterator[str]:
    """A real ``mlflow server`` (SQLite + local artifacts) on a free port, stopped with its workers."""
    from crossfit_mlops import localstack

    env = {**os.environ, **QUIET_ENV, "CROSSFIT_STATE_DIR": str(state_dir), "CROSSFIT_MLFLOW_PORT": str(free_port())}
    env.pop("MLFLOW_TRACKING_URI", None)
    cfg = localstack.config_from_env(env)
    localstack.start_mlflow(cfg, {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        yield cfg.mlflow_url
    finally:
        localstack.stop_service(cfg, "mlflow")


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
