"""One frozen settings object: every path and URI of the project, resolved from the environment.

Nothing is resolved at import time. Call :func:`get_settings` when a value is needed; it reads the
environment afresh each call (cheap), so tests and Airflow tasks can point it elsewhere with env vars.

Defaults are relative to the project root, which is ``CROSSFIT_PROJECT_ROOT`` or, failing that, the
folder two levels above this package (``<root>/include/crossfit_mlops``). Everything generated
(raw snapshots, processed data, feature tables, Feast registry and online store, MLflow store,
Airflow home, emissions files) lives under one state directory, ``CROSSFIT_STATE_DIR``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar, get_args

from pydantic import AfterValidator, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars


def _default_root() -> Path:
    return Path(__file__).resolve().parents[2]


# --- typed environment: one pydantic-settings class per concern ----------------------------------
@dataclass(frozen=True)
class Must:
    """What a variable must be, in words: the error names the variable and says this."""

    text: str


Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False), Must("a number between 0 and 1")]
Port = Annotated[int, Field(ge=1, le=65535, strict=False), Must("a port number (1-65535)")]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False), Must("a number of seconds greater than 0")]
Count = Annotated[int, Field(ge=1), Must("a whole number of at least 1")]
Wait = Annotated[float, Field(ge=0, allow_inf_nan=False), Must("a number of seconds, 0 or more")]


def _check_http_url(value: str) -> str:
    """``value`` stripped if it is empty or an http(s) URL with a host, else a ValueError."""
    from urllib.parse import urlsplit

    value = value.strip()
    if value:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("not an http(s) URL")
    return value


HttpUrl = Annotated[str, AfterValidator(_check_http_url), Must("an http:// or https:// URL with a host (empty: off)")]

_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("crossfit_environ", default=None)


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class EnvSection(BaseSettings):
    """A group of ``CROSSFIT_*`` variables (the field name, upper-cased, after the prefix). Empty
    counts as unset. Read with :func:`read_section`, which names the variable in every error."""

    model_config = SettingsConfigDict(env_prefix="CROSSFIT_", env_ignore_empty=True, frozen=True, extra="ignore")
    title: ClassVar[str] = ""

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:  # fmt: skip
        environ = _ENVIRON.get()
        return (init_settings, env_settings if environ is None else _MappingEnvSource(settings_cls, environ))

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of ``field``."""
        alias = cls.model_fields[field].validation_alias
        return alias if isinstance(alias, str) else f"{cls.model_config['env_prefix']}{field.upper()}"


class PathSettings(EnvSection):
    """Where the project and everything it generates live. A relative path is under the root."""

    title: ClassVar[str] = "Paths"
    project_root: Path | None = Field(None, description="the project folder (default: two levels above the package)")
    state_dir: Path | None = Field(None, description="everything generated (default: `<root>/.state`)")
    raw_file: Path | None = Field(None, description="an athletes.csv to ingest; set, it must exist (default: the drop-in `<state>/data/raw/athletes.csv`)")
    feast_repo: Path | None = Field(None, description="the Feast feature repo (default: `include/feast/repo/feature_repo`)")
    feast_dir: Path | None = Field(None, description="Feast's registry and online store (default: `<state>/feast`)")
    feast_registry: Path | None = Field(None, description="Feast's file registry (default: `<feast_dir>/registry.db`)")
    feast_online_store: Path | None = Field(None, description="Feast's SQLite online store (default: `<feast_dir>/online_store.db`)")


class MlflowSettings(EnvSection):
    """The tracking server (also the model registry) and what the project names in it."""

    title: ClassVar[str] = "MLflow"
    tracking_uri: str = Field("", validation_alias="MLFLOW_TRACKING_URI", description="MLflow's own variable; default `http://127.0.0.1:<CROSSFIT_MLFLOW_PORT>`")
    mlflow_port: Port = Field(5000, description="the stack's MLflow port; the default tracking URI follows it")
    mlflow_experiment: str = Field("crossfit_athlete_airflow_run", description="the experiment of the training runs")
    registered_model: str = Field("crossfit_total_lift", description="the registered model the gate promotes")


class FeastSettings(EnvSection):
    """Feast's stores when they are servers (the cluster profile), instead of local files."""

    title: ClassVar[str] = "Feast"
    feast_redis: str = Field("", description="`host:port[,db=N,password=...]`: Redis online store instead of SQLite")
    feast_registry_uri: str = Field("", description="SQLAlchemy URI: Feast's SQL registry (e.g. PostgreSQL) instead of the file")


class StorageSettings(EnvSection):
    """Where the pipeline's data lives when hosts share no disk (object storage), and the lock
    that serializes a snapshot's writers across hosts."""

    title: ClassVar[str] = "Object storage"
    data_url: str = Field("", description="`s3://bucket[/prefix]`: the pipeline's data (raw snapshots, processed data, feature tables, training sets, emissions, predictions, monitoring) in that bucket instead of `<state>/data`; unset: the local state directory")
    s3_endpoint: str = Field("", description="the S3 endpoint URL (SeaweedFS, MinIO; unset: AWS); the key pair is `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`")
    lock_uri: str = Field("", description="PostgreSQL URI whose advisory locks serialize a snapshot's writers on every host; required with an `s3://` data URL (`flock` locks one host only)")


class DataSettings(EnvSection):
    """The data half's floors and the emissions' country."""

    title: ClassVar[str] = "Data and training"
    min_valid_share: Share = Field(0.80, description="share of raw rows that must pass the contract")
    min_clean_rows: Count = Field(200, description="fewest clean athletes a snapshot keeps to be trained on (see MIN_CLEAN_ROWS)")
    codecarbon_country: str = Field("USA", description="ISO 3166-1 alpha-3 code CodeCarbon estimates emissions for")
    approval_timeout_s: Seconds = Field(86400.0, description="gate mode `human`: a challenger nobody answers is rejected after this (read where the DAG is parsed)")


class ServingSettings(EnvSection):
    """The prediction API's polling, batch and request limits."""

    title: ClassVar[str] = "Serving"
    serving_refresh_s: Seconds = Field(5.0, description="how often `@champion` is polled")
    serving_max_batch: Count = Field(100, description="athletes per request (413 above)")
    serving_max_body_bytes: Count | None = Field(None, description="request body limit (default: 1 MiB, or twice the largest valid request)")
    serving_max_items: Count | None = Field(None, description="JSON keys per request (default: 10,000, or twice the largest valid request)")
    serving_startup_wait_s: Wait = Field(10.0, description="how long a request waits for the first champion load at start")
    serving_log: bool = Field(True, description="log every `/predict` and `/predict/features` answer to `<predictions>/live/` (off: `false`)")
    serving_log_flush_s: Seconds = Field(5.0, description="the prediction log's writer publishes a part file at least this often")
    serving_log_batch: Count = Field(1000, description="... or as soon as this many answers wait")
    serving_log_queue: Count = Field(20_000, description="answers waiting to be written; more are dropped and counted (`/metrics`)")
    serving_metrics: bool = Field(True, description="`GET /metrics` (Prometheus text) and the request counters behind it (off: `false`)")
    shadow_share: Share = Field(0.25, description="share of 200 answers the shadow `@challenger` also scores, off the response path (0: no shadow; 1: every one)")
    shadow_queue: Count = Field(1000, description="requests waiting for the shadow challenger; more are dropped and counted")


class AlertSettings(EnvSection):
    """Where alerts go (failed DAG runs, rejected challengers, retraining triggers, rollbacks): a
    webhook that receives each as a JSON POST. Off by default."""

    title: ClassVar[str] = "Alerts"
    alert_webhook_url: HttpUrl = Field("", description="the URL each alert is POSTed to as JSON (`event`, `dag_id`, `run_id`, `task_id`, `summary`, `details`, `at`); empty: alerts are off")
    alert_timeout_s: Seconds = Field(5.0, description="how long one alert may take; a webhook that is down or slower is logged as a warning, never fails or holds a task")


class MonitoringSettings(EnvSection):
    """What monitoring may do by itself (the thresholds are the monitoring DAG's Params)."""

    title: ClassVar[str] = "Monitoring"
    auto_rollback: bool = Field(True, description="the monitoring DAG may move `@champion` back when live traffic says so (`false`: it only reports)")


S = TypeVar("S", bound=EnvSection)
SECTIONS: tuple[type[EnvSection], ...] = (
    PathSettings, MlflowSettings, FeastSettings, StorageSettings, DataSettings, ServingSettings, AlertSettings,
    MonitoringSettings,
)  # fmt: skip


def read_section(section: type[S], environ: Mapping[str, str] | None = None) -> S:
    """``section`` from ``environ`` (default: ``os.environ``). A bad value is a ValueError that
    names the variable, its value and what it must be."""
    token = _ENVIRON.set(environ)
    try:
        return section()
    except ValidationError as exc:
        raise ValueError("; ".join(_explain(section, error, environ) for error in exc.errors())) from None
    finally:
        _ENVIRON.reset(token)


def must_of(field: Any) -> str | None:
    """The :class:`Must` of a field, also inside ``X | None``."""
    metadata = [*field.metadata, *(m for arg in get_args(field.annotation) for m in getattr(arg, "__metadata__", ()))]
    return next((m.text for m in metadata if isinstance(m, Must)), None)


def _explain(section: type[EnvSection], error: Any, environ: Mapping[str, str] | None) -> str:
    field = str(error["loc"][0]) if error["loc"] else ""
    info = section.model_fields.get(field)
    name = section.variable(field) if info else field
    must = must_of(info) if info else None
    value = (os.environ if environ is None else environ).get(name)
    return f"environment variable {name} must be {must}, got {value!r}" if must else f"environment variable {name}={value!r}: {error['msg']}"


def default_tracking_uri(env: Mapping[str, str]) -> str:
    """``MLFLOW_TRACKING_URI``, else the stack's own server on ``CROSSFIT_MLFLOW_PORT`` (5000): a
    command started by hand talks to the MLflow of this stack, not to whatever holds port 5000."""
    mlflow = read_section(MlflowSettings, env)
    return mlflow.tracking_uri or f"http://127.0.0.1:{mlflow.mlflow_port}"


def check_share(value: float, name: str) -> float:
    """``value`` if it is a number in [0, 1], else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
    return float(value)


def check_min_rows(value: int, name: str) -> int:
    """``value`` if it is a whole number >= 1, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value < 1 or value % 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    return int(value)


# The smallest cleaned snapshot worth training on (CROSSFIT_MIN_CLEAN_ROWS). The athlete split
# sends 15% to validation and 15% to test; 200 athletes give about 30 in each, the fewest for
# which the gate's test RMSE / R^2 mean something (R^2's standard error at R^2 = 0.75 is about
# 0.08 with 30 rows, about the gap between a V1 and a V2 model) and model selection on
# validation is not a coin toss; 140 training rows still let LightGBM (20 rows a leaf) grow a
# few leaves. Fewer athletes than this is refused at validation, not trained on.
MIN_CLEAN_ROWS = 200


@dataclass(frozen=True)
class Settings:
    """Resolved locations and knobs. Build it with :func:`get_settings`."""

    project_root: Path
    state_dir: Path
    raw_dir: Path
    processed_dir: Path
    features_dir: Path
    raw_file_override: Path  # a provided athletes.csv to ingest (CROSSFIT_RAW_FILE, else the drop-in path)
    raw_file_from_env: bool  # CROSSFIT_RAW_FILE was set: the file must exist (no fallback to the simulator)
    feast_repo_path: Path
    feast_dir: Path
    feast_registry_path: Path
    feast_online_store_path: Path
    feast_redis: str  # "host:port[,db=N,password=...]": Redis online store instead of SQLite
    feast_registry_uri: str  # SQLAlchemy URI: Feast's SQL registry (e.g. PostgreSQL) instead of the file
    training_dir: Path
    emissions_dir: Path
    mlflow_tracking_uri: str
    mlflow_experiment: str
    registered_model_name: str
    codecarbon_country: str
    min_valid_share: float  # share of raw rows that must pass the contract, in [0, 1]
    min_clean_rows: int  # fewest clean athletes a snapshot must keep to be trained on
    predictions_dir: Path
    monitoring_dir: Path  # one folder per monitoring run: Evidently report, dashboard, summary
    serving_refresh_seconds: float
    serving_max_batch: int
    data_url: str = ""  # "s3://bucket[/prefix]": the pipeline's data on object storage ("" = under state_dir)
    s3_endpoint: str = ""  # the S3 endpoint URL of data_url ("" = AWS)
    lock_uri: str = ""  # PostgreSQL URI of the cross-host snapshot locks (required with data_url)
    alert_webhook_url: str = ""  # http(s) URL alerts are POSTed to ("" = alerts off)
    alert_timeout_s: float = 5.0  # the longest one alert may take

    @property
    def on_object_storage(self) -> bool:
        """The pipeline's data is in a bucket: no task reads another's files from a local disk."""
        return bool(self.data_url)

    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options of ``data_url`` (the key pair comes from ``AWS_*`` as usual).
        Listings are never cached: another host may have written since."""
        return _storage_options(self.s3_endpoint)

    def as_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process (Feast CLI, Airflow)."""
        return {
            "CROSSFIT_PROJECT_ROOT": str(self.project_root),
            "CROSSFIT_STATE_DIR": str(self.state_dir),
            "CROSSFIT_FEAST_REPO": str(self.feast_repo_path),
            "CROSSFIT_FEAST_REGISTRY": str(self.feast_registry_path),
            "CROSSFIT_FEAST_ONLINE_STORE": str(self.feast_online_store_path),
            "CROSSFIT_FEAST_REDIS": self.feast_redis,
            "CROSSFIT_FEAST_REGISTRY_URI": self.feast_registry_uri,
            "MLFLOW_TRACKING_URI": self.mlflow_tracking_uri,
            "CROSSFIT_MLFLOW_EXPERIMENT": self.mlflow_experiment,
            "CROSSFIT_REGISTERED_MODEL": self.registered_model_name,
            "CROSSFIT_CODECARBON_COUNTRY": self.codecarbon_country,
            "CROSSFIT_DATA_URL": self.data_url,
            "CROSSFIT_S3_ENDPOINT": self.s3_endpoint,
            "CROSSFIT_LOCK_URI": self.lock_uri,
            "CROSSFIT_ALERT_WEBHOOK_URL": self.alert_webhook_url,
            "CROSSFIT_ALERT_TIMEOUT_S": str(self.alert_timeout_s),
        }

    def describe(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}


# Airflow Variables (declared in airflow_settings.yaml) that override an environment variable when a
# task resolves its settings: the deployment decides them, not the code.
AIRFLOW_VARIABLES: dict[str, str] = {
    "crossfit_mlflow_tracking_uri": "MLFLOW_TRACKING_URI",
    "crossfit_mlflow_experiment": "CROSSFIT_MLFLOW_EXPERIMENT",
    "crossfit_registered_model": "CROSSFIT_REGISTERED_MODEL",
    "crossfit_feast_repo": "CROSSFIT_FEAST_REPO",
}


def get_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve the settings from ``environ`` (default: ``os.environ``)."""
    env = dict(os.environ if environ is None else environ)
    paths, mlflow, feast = (read_section(c, env) for c in (PathSettings, MlflowSettings, FeastSettings))
    data, serving, alerts = read_section(DataSettings, env), read_section(ServingSettings, env), read_section(AlertSettings, env)
    root = (paths.project_root or _default_root()).expanduser().resolve()

    def under_root(path: Path | None, default: Path) -> Path:
        path = path.expanduser() if path else None
        return default if path is None else path if path.is_absolute() else root / path

    state = under_root(paths.state_dir, root / ".state")
    storage = read_section(StorageSettings, env)
    data_url = _check_storage(storage, feast)
    data_dir = _bucket_root(data_url, storage.s3_endpoint) / "data" if data_url else state / "data"
    data_home = data_dir.parent  # emissions and monitoring beside data/, as under the state dir
    feast_dir = under_root(paths.feast_dir, state / "feast")
    return Settings(
        project_root=root,
        state_dir=state,
        raw_dir=data_dir / "raw",
        processed_dir=data_dir / "processed",
        features_dir=data_dir / "features",
        raw_file_override=under_root(paths.raw_file, data_dir / "raw" / "athletes.csv"),
        raw_file_from_env=paths.raw_file is not None,
        feast_repo_path=under_root(paths.feast_repo, root / "include" / "feast" / "repo" / "feature_repo"),
        feast_dir=feast_dir,
        feast_registry_path=under_root(paths.feast_registry, feast_dir / "registry.db"),
        feast_online_store_path=under_root(paths.feast_online_store, feast_dir / "online_store.db"),
        feast_redis=feast.feast_redis.strip(),
        feast_registry_uri=feast.feast_registry_uri.strip(),
        training_dir=data_dir / "training",
        emissions_dir=data_home / "emissions",
        mlflow_tracking_uri=mlflow.tracking_uri or f"http://127.0.0.1:{mlflow.mlflow_port}",
        mlflow_experiment=mlflow.mlflow_experiment,
        registered_model_name=mlflow.registered_model,
        codecarbon_country=data.codecarbon_country,
        min_valid_share=data.min_valid_share,
        min_clean_rows=data.min_clean_rows,
        predictions_dir=data_dir / "predictions",
        monitoring_dir=data_home / "monitoring",
        serving_refresh_seconds=serving.serving_refresh_s,
        serving_max_batch=serving.serving_max_batch,
        data_url=data_url,
        s3_endpoint=storage.s3_endpoint.strip(),
        lock_uri=storage.lock_uri.strip(),
        alert_webhook_url=alerts.alert_webhook_url,
        alert_timeout_s=alerts.alert_timeout_s,
    )


def _check_storage(storage: StorageSettings, feast: FeastSettings) -> str:
    """``CROSSFIT_DATA_URL`` normalised (no trailing slash), or a ValueError naming what is missing:
    on object storage nothing may rely on a disk that only one host sees."""
    url = storage.data_url.strip().rstrip("/")
    if not url:
        return ""
    name = StorageSettings.variable("data_url")
    if not url.startswith("s3://") or not url.removeprefix("s3://").split("/")[0]:
        raise ValueError(f"environment variable {name} must be an s3://bucket[/prefix] URL, got {storage.data_url!r}")
    needs = {
        StorageSettings.variable("lock_uri"): (storage.lock_uri, "a PostgreSQL URI (the snapshot locks must hold on every host)"),
        FeastSettings.variable("feast_registry_uri"): (feast.feast_registry_uri, "Feast's SQL registry (a file registry is one host's)"),
        FeastSettings.variable("feast_redis"): (feast.feast_redis, "Feast's Redis online store (SQLite is one host's file)"),
    }  # fmt: skip
    missing = [f"{var} ({why})" for var, (value, why) in needs.items() if not value.strip()]
    if missing:
        raise ValueError(f"{name}={url} puts the pipeline's data on object storage; it also needs " + "; ".join(missing))
    lock = storage.lock_uri.strip()
    if not lock.split(":", 1)[0].startswith("postgresql"):
        raise ValueError(f"environment variable {StorageSettings.variable('lock_uri')} must be a postgresql:// URI, got {lock!r}")
    return url


def _bucket_root(url: str, endpoint: str) -> Path:
    """The data URL as a path object (universal-pathlib over s3fs): ``/``, ``exists()``,
    ``read_text()``, ``glob()`` work as on a local folder. Typed as Path for the callers; it is a UPath."""
    from upath import UPath

    return UPath(url, **_storage_options(endpoint))  # type: ignore[return-value]


def _storage_options(endpoint: str) -> dict[str, Any]:
    options: dict[str, Any] = {"use_listings_cache": False}
    if endpoint.strip():
        options["endpoint_url"] = endpoint.strip()
    return options


def task_settings() -> Settings:
    """Settings inside an Airflow task: the environment, overridden by the Airflow Variables that
    ``airflow_settings.yaml`` declares (see :data:`AIRFLOW_VARIABLES`). Call it at run time only:
    reading a Variable at DAG-parse time is an anti-pattern."""
    from airflow.sdk import Variable

    env = dict(os.environ)
    for variable, env_name in AIRFLOW_VARIABLES.items():
        value = Variable.get(variable, default=None)
        if value:
            env[env_name] = value
    return get_settings(env)
