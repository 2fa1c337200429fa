"""Profiles of the stack: named sets of setting defaults, never code paths.

``CROSSFIT_PROFILE=local`` (default) is the laptop stack: SQLite, local files, LocalExecutor.
``CROSSFIT_PROFILE=cluster`` is the scale-out stack run on one machine: the defaults below, each of
which a variable set in the environment overrides (a test points them at its own databases).
Compose mode (``CROSSFIT_MODE=compose``) is not a profile of this stack: Docker runs it, with the
same settings written into its compose files.

The training fan-out's queue is the contract's (``TRAINING_QUEUE``): the cluster's workers consume it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from crossfit_mlops.contract import TRAINING_QUEUE
from crossfit_mlops.settings import Settings, get_settings

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"

PROFILES: dict[str, dict[str, str]] = {
    "local": {},
    "cluster": {
        "CROSSFIT_AIRFLOW_EXECUTOR": "CeleryExecutor",
        "CROSSFIT_CELERY_WORKERS": "2",
        "CROSSFIT_CELERY_BROKER_URL": "redis://127.0.0.1:6379/1",
        "CROSSFIT_CELERY_RESULT_BACKEND": f"db+{PG}/crossfit_airflow",
        "CROSSFIT_CELERY_QUEUES": f"default,{TRAINING_QUEUE}",
        "CROSSFIT_AIRFLOW_DB_URI": f"{PG}/crossfit_airflow",
        "CROSSFIT_MLFLOW_BACKEND_URI": f"{PG}/crossfit_mlflow",
        "CROSSFIT_MLFLOW_AUTH": "1",
        "CROSSFIT_OBJECT_STORE": "seaweedfs",
        "CROSSFIT_ARTIFACTS_DESTINATION": "s3://crossfit-mlflow-artifacts/",
        "CROSSFIT_FEAST_REDIS": "127.0.0.1:6379,db=0",
        "CROSSFIT_FEAST_REGISTRY_URI": f"{PG}/crossfit_feast",
    },
}


def with_profile(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` with the defaults of its ``CROSSFIT_PROFILE`` filled in where unset."""
    name = (environ.get("CROSSFIT_PROFILE") or "local").strip()
    if name not in PROFILES:
        raise ValueError(f"CROSSFIT_PROFILE={name!r} is not a profile; choose one of {sorted(PROFILES)}")
    resolved = dict(environ)
    for key, value in PROFILES[name].items():
        if not resolved.get(key):
            resolved[key] = value
    resolved["CROSSFIT_PROFILE"] = name
    return resolved


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
