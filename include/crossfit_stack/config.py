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
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationError
from pydantic_settings import SettingsConfigDict

from crossfit_mlops.dag_contract import TRAINING_QUEUE
from crossfit_mlops.settings import EnvSection, Port, Settings, get_settings

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
        # the pipeline's data in the object store's own bucket, no file passed through a local disk
        # (the endpoint is the object store the stack runs; the key pair is the pipeline's own)
        "CROSSFIT_DATA_URL": "s3://crossfit-data",
        "CROSSFIT_LOCK_URI": f"{PG}/crossfit_locks",
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


class StackSettings(EnvSection):
    """The stack's ``CROSSFIT_<FIELD>`` variables (an empty one counts as unset).

    ``StackSettings()`` reads the process environment; :meth:`from_environ` reads a given one
    (a test's, a profile's); :func:`config_from_env` applies the profile first."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_ignore_empty=True, extra="ignore", frozen=True, str_strip_whitespace=True,
    )
    title: ClassVar[str] = "The local stack"
    profiles: ClassVar[dict[str, dict[str, str]]] = PROFILES

    profile: Literal["local", "cluster"] = Field("local", description="`cluster`: the scale-out defaults (each overridable)")
    mlflow_port: Port = Field(5000, description="where the stack runs MLflow (the package's tracking URI follows it)")
    airflow_port: Port = Field(8080, description="Airflow's api-server and UI")
    api_port: Port = Field(8000, description="the prediction API (`serve --port` by hand)")
    s3_port: Port = Field(8333, description="the object store's S3 port; it takes the 7 above it too")
    worker_log_port: Port = Field(8793, description="the task-log server (LocalExecutor), on the bind host")
    bind_host: str = Field("127.0.0.1", description="the interface every service listens on")
    mlflow_backend_uri: str = Field("", description="MLflow's backend store (unset: SQLite in `<state>/mlflow`)")
    airflow_db_uri: str = Field("", description="Airflow's metadata DB (unset: SQLite in `<state>/airflow`)")
    airflow_parallelism: Annotated[int, Field(ge=1)] = Field(4, description="task slots (Airflow's default of 32 meant 5 GB of idle workers)")
    airflow_executor: Literal["LocalExecutor", "CeleryExecutor"] = Field("LocalExecutor", description="the only two accepted")
    mlflow_auth: bool = Field(False, description="MLflow's basic-auth app; the credential is in the secrets file")
    celery_workers: Annotated[int, Field(ge=0)] = Field(2, description="Celery workers the stack starts (CeleryExecutor only)")
    celery_broker_url: str = Field("", description="Celery's broker")
    celery_result_backend: str = Field("", description="Celery's result backend")
    celery_queues: str = Field("default", description="queues every worker consumes")
    celery_concurrency: Annotated[int, Field(ge=1)] = Field(2, description="task slots of each Celery worker")
    object_store: Literal["", "seaweedfs"] = Field("", description="`seaweedfs`: an object store the stack runs; unset: none, or an external one")
    artifacts_destination: str = Field("", description="MLflow's `--artifacts-destination` (unset: `<state>/mlflow/artifacts`)")
    s3_endpoint: str = Field("", description="the S3 endpoint the MLflow server uses (unset: the stack's object store, if it runs one)")
    stop_grace_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(10.0, description="the launcher's `--grace`: SIGTERM -> SIGKILL for what a stopped or crashed service left")
    preload: bool = Field(True, description='warm the task imports in the scheduler (LocalExecutor)')
    feast_ui: bool = Field(False, description="Feast's web UI over the stack's feature registry, a service of the stack (off: 260 MB and a CPU-bound start the pipeline does not need)")
    feast_ui_port: Port = Field(8888, description="Feast's web UI (`CROSSFIT_FEAST_UI=1`)")

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
    celery_broker_url: str = Field("", description="Celery's broker")
    celery_result_backend: str = Field("", description="Celery's result backend")
    celery_queues: str = Field("default", description="queues every worker consumes")
    celery_concurrency: int = 2
    object_store: str = Field("", description='"seaweedfs": started by the stack; "": none (or an external one)')
    artifacts_destination: str = Field("", description="MLflow's `--artifacts-destination` (unset: `<state>/mlflow/artifacts`)")
    s3_endpoint: str = ""
    s3_port: int = 8333
    worker_log_port: int = 8793
    stop_grace_s: float = 10.0
    preload: bool = True
    feast_ui: bool = False
    feast_ui_port: int = 8888

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
    def feast_ui_url(self) -> str:
        return f"http://127.0.0.1:{self.feast_ui_port}"

    @property
    def celery(self) -> bool:
        return self.executor == "CeleryExecutor"


def config_from_env(environ: Mapping[str, str] | None = None) -> StackConfig:
    """The stack of ``environ`` (default: this process's environment), its profile applied.

    Raises :class:`StackSettingsError` (a ValueError) naming a refused variable."""
    env = with_profile(dict(os.environ if environ is None else environ))
    stack = StackSettings.from_environ(env)
    if stack.object_store and not (env.get("CROSSFIT_S3_ENDPOINT") or "").strip():
        env["CROSSFIT_S3_ENDPOINT"] = f"http://127.0.0.1:{stack.s3_port}"  # the data's endpoint too
    # its tracking URI follows CROSSFIT_MLFLOW_PORT, the port of the server the stack starts,
    # unless MLFLOW_TRACKING_URI points elsewhere (MlflowSettings derives it, for every command)
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
        feast_ui=stack.feast_ui,
        feast_ui_port=stack.feast_ui_port,
    )


class ProcessSettings(EnvSection):
    """What the stack sets in its own processes' environment for Airflow's hostname callables
    (:mod:`crossfit_stack.hostnames`); not for users to set."""

    title: ClassVar[str] = "Set by the stack for its own processes"
    worker_name: str = Field("", description="a Celery worker's name (`worker1` ...) in its tasks' `hostname`")
    log_server_host: str = Field("", description="the task-log server's address (the bind host) in a LocalExecutor task's `hostname`")


SECTIONS = (StackSettings, ProcessSettings)  # the configuration page's table (scripts/config_reference.py)
