"""The stack's own settings, typed: :class:`StackSettings` (``CROSSFIT_*`` variables, validated by
pydantic-settings, a refusal names the variable), the profiles that fill in their defaults, and
:class:`StackConfig`, what every other module of the stack is given.

Precedence, highest first: a variable set in the environment; the defaults of its profile; the
defaults of :class:`StackSettings`. The ML package's own settings (paths, URIs) are
:func:`crossfit_mlops.settings.get_settings`'s, resolved from the same environment.

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from crossfit_mlops.contract import TRAINING_QUEUE
from crossfit_mlops.settings import Settings, get_settings

PREFIX = "CROSSFIT_"
PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"


class StackSettingsError(ValueError):
    """A ``CROSSFIT_*`` variable of the stack was refused; the message names it and its value."""


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
        raise StackSettingsError(f"CROSSFIT_PROFILE={name!r} is not a profile; choose one of {sorted(PROFILES)}")
    resolved = dict(environ)
    for key, value in PROFILES[name].items():
        if not resolved.get(key):
            resolved[key] = value
    resolved["CROSSFIT_PROFILE"] = name
    return resolved


Port = Annotated[int, Field(ge=1, le=65535)]


class StackSettings(BaseSettings):
    """The stack's ``CROSSFIT_<FIELD>`` variables (an empty one counts as unset).

    ``StackSettings()`` reads the process environment; :meth:`from_environ` reads a given one
    (a test's, a profile's); :func:`config_from_env` applies the profile first."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_ignore_empty=True, extra="ignore", frozen=True, str_strip_whitespace=True,
    )

    profile: Literal["local", "cluster"] = "local"
    mlflow_port: Port = 5000
    airflow_port: Port = 8080
    api_port: Port = 8000
    s3_port: Port = 8333  # the object store's S3 port; it takes the 7 above it too (programs.py)
    worker_log_port: Port = 8793  # the task-log server's
    bind_host: str = "127.0.0.1"
    mlflow_backend_uri: str = ""  # "": SQLite in <state>/mlflow
    airflow_db_uri: str = ""  # "": SQLite in <state>/airflow
    airflow_parallelism: Annotated[int, Field(ge=1)] = 4
    airflow_executor: Literal["LocalExecutor", "CeleryExecutor"] = "LocalExecutor"
    mlflow_auth: bool = False  # MLflow's basic-auth
    celery_workers: Annotated[int, Field(ge=0)] = 2  # CeleryExecutor only
    celery_broker_url: str = ""
    celery_result_backend: str = ""
    celery_queues: str = "default"
    celery_concurrency: Annotated[int, Field(ge=1)] = 2
    object_store: Literal["", "seaweedfs"] = ""  # "seaweedfs": started by the stack; "": none or external
    artifacts_destination: str = ""  # "": <state>/mlflow/artifacts
    s3_endpoint: str = ""  # "": the stack's object store, if it runs one
    stop_grace_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 10.0  # launcher: SIGTERM -> SIGKILL
    preload: bool = True  # warm the task imports in the scheduler (LocalExecutor)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> StackSettings:
        """The settings ``environ`` gives (only it: not the process environment)."""
        given = {name: environ[PREFIX + name.upper()] for name in cls.model_fields if environ.get(PREFIX + name.upper())}
        try:
            return cls.model_validate(given)
        except ValidationError as exc:
            raise StackSettingsError("; ".join(_refusal(e) for e in exc.errors())) from None


def _refusal(error: Any) -> str:
    """One refused variable as ``CROSSFIT_X='value' <why>``."""
    variable = PREFIX + str(error["loc"][0]).upper()
    ctx = error.get("ctx", {})
    reasons = {
        "int_parsing": "is not an integer",
        "float_parsing": "is not a number",
        "bool_parsing": "must be 0 or 1",
        "finite_number": "must be a finite number",
        "literal_error": "is not supported: choose " + str(ctx.get("expected", "")).replace("''", "empty").replace("'", ""),
        "greater_than": f"must be greater than {ctx.get('gt', 0):g}",
        "greater_than_equal": f"must be at least {ctx.get('ge', 0):g}",
        "less_than_equal": f"must be at most {ctx.get('le', 0):g}",
    }
    return f"{variable}={error.get('input')!r} " + reasons.get(error["type"], f"is refused: {error['msg']}")


@dataclass(frozen=True)
class StackConfig:
    """What the stack's modules are given: its settings resolved (URIs filled in) and the ML settings."""

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
    stop_grace_s: float = 10.0
    preload: bool = True

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


def config_from_env(environ: Mapping[str, str] | None = None) -> StackConfig:
    """The stack of ``environ`` (default: this process's environment), its profile applied.

    Raises :class:`StackSettingsError` (a ValueError) naming a refused variable."""
    env = with_profile(dict(os.environ if environ is None else environ))
    stack = StackSettings.from_environ(env)
    # the tracking URI follows the port of the server we start, unless the user points elsewhere
    if not env.get("MLFLOW_TRACKING_URI"):
        env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{stack.mlflow_port}"
    settings = get_settings(env)
    state = settings.state_dir
    celery = stack.airflow_executor == "CeleryExecutor"
    return StackConfig(
        settings=settings,
        bin_dir=Path(sys.executable).parent,
        host=stack.bind_host,
        mlflow_port=stack.mlflow_port,
        airflow_port=stack.airflow_port,
        api_port=stack.api_port,
        mlflow_backend_uri=stack.mlflow_backend_uri or f"sqlite:///{state / 'mlflow' / 'mlflow.db'}",
        airflow_db_uri=stack.airflow_db_uri or f"sqlite:///{state / 'airflow' / 'airflow.db'}",
        parallelism=stack.airflow_parallelism,
        profile=stack.profile,
        mlflow_auth=stack.mlflow_auth,
        executor=stack.airflow_executor,
        celery_workers=stack.celery_workers if celery else 0,
        celery_broker_url=stack.celery_broker_url,
        celery_result_backend=stack.celery_result_backend,
        celery_queues=stack.celery_queues,
        celery_concurrency=stack.celery_concurrency,
        object_store=stack.object_store,
        artifacts_destination=stack.artifacts_destination,
        s3_endpoint=stack.s3_endpoint or (f"http://127.0.0.1:{stack.s3_port}" if stack.object_store else ""),
        s3_port=stack.s3_port,
        worker_log_port=stack.worker_log_port,
        stop_grace_s=stack.stop_grace_s,
        preload=stack.preload,
    )
