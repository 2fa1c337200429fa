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
from dataclasses import dataclass, fields
from pathlib import Path


def _default_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _path(env: dict[str, str], name: str, default: Path, root: Path) -> Path:
    value = env.get(name)
    if not value:
        return default
    path = Path(value).expanduser()
    return path if path.is_absolute() else (root / path)


def _float(env: dict[str, str], name: str, default: float) -> float:
    value = env.get(name)
    if value in (None, ""):
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={value!r} is not a number") from exc


def _share(env: dict[str, str], name: str, default: float) -> float:
    """A share in [0, 1]. NaN and values outside would silently disable the check they set."""
    value = _float(env, name, default)
    return check_share(value, f"environment variable {name}")


def _port(env: dict[str, str], name: str, default: int) -> int:
    """A TCP port from ``name``: a whole number in 1-65535."""
    value = _float(env, name, default)
    if not float(value).is_integer() or not 1 <= value <= 65535:
        raise ValueError(f"environment variable {name}={env.get(name)!r} must be a port number (1-65535)")
    return int(value)


def _positive(env: dict[str, str], name: str, default: float) -> float:
    """A finite number > 0 (a period, a size): zero, negative or NaN would spin or disable a check."""
    value = _float(env, name, default)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"environment variable {name}={env.get(name)!r} must be a number greater than 0")
    return value


def default_tracking_uri(env: dict[str, str]) -> str:
    """``MLFLOW_TRACKING_URI``, else the stack's own server on ``CROSSFIT_MLFLOW_PORT`` (5000): a
    command started by hand talks to the MLflow of this stack, not to whatever holds port 5000."""
    return env.get("MLFLOW_TRACKING_URI") or f"http://127.0.0.1:{_port(env, 'CROSSFIT_MLFLOW_PORT', 5000)}"


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


def get_settings(environ: dict[str, str] | None = None) -> Settings:
    """Resolve the settings from ``environ`` (default: ``os.environ``)."""
    env = dict(os.environ if environ is None else environ)
    root = Path(env.get("CROSSFIT_PROJECT_ROOT") or _default_root()).expanduser().resolve()
    state = _path(env, "CROSSFIT_STATE_DIR", root / ".state", root)
    data = state / "data"
    feast_dir = _path(env, "CROSSFIT_FEAST_DIR", state / "feast", root)
    return Settings(
        project_root=root,
        state_dir=state,
        raw_dir=data / "raw",
        processed_dir=data / "processed",
        features_dir=data / "features",
        raw_file_override=_path(env, "CROSSFIT_RAW_FILE", data / "raw" / "athletes.csv", root),
        raw_file_from_env=bool(env.get("CROSSFIT_RAW_FILE")),
        feast_repo_path=_path(
            env, "CROSSFIT_FEAST_REPO", root / "include" / "feast" / "repo" / "feature_repo", root
        ),
        feast_dir=feast_dir,
        feast_registry_path=_path(env, "CROSSFIT_FEAST_REGISTRY", feast_dir / "registry.db", root),
        feast_online_store_path=_path(
            env, "CROSSFIT_FEAST_ONLINE_STORE", feast_dir / "online_store.db", root
        ),
        feast_redis=env.get("CROSSFIT_FEAST_REDIS", "").strip(),
        feast_registry_uri=env.get("CROSSFIT_FEAST_REGISTRY_URI", "").strip(),
        training_dir=data / "training",
        emissions_dir=state / "emissions",
        mlflow_tracking_uri=default_tracking_uri(env),
        mlflow_experiment=env.get("CROSSFIT_MLFLOW_EXPERIMENT") or "crossfit_athlete_airflow_run",
        registered_model_name=env.get("CROSSFIT_REGISTERED_MODEL") or "crossfit_total_lift",
        codecarbon_country=env.get("CROSSFIT_CODECARBON_COUNTRY") or "USA",
        min_valid_share=_share(env, "CROSSFIT_MIN_VALID_SHARE", 0.80),
        min_clean_rows=check_min_rows(
            _float(env, "CROSSFIT_MIN_CLEAN_ROWS", MIN_CLEAN_ROWS), "environment variable CROSSFIT_MIN_CLEAN_ROWS"
        ),
        predictions_dir=data / "predictions",
        monitoring_dir=state / "monitoring",
        serving_refresh_seconds=_positive(env, "CROSSFIT_SERVING_REFRESH_S", 5.0),
        serving_max_batch=check_min_rows(
            _float(env, "CROSSFIT_SERVING_MAX_BATCH", 100), "environment variable CROSSFIT_SERVING_MAX_BATCH"
        ),
    )


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
