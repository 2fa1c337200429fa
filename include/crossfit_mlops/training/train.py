"""One training run: fit one grid entry, measure it, log everything to an MLflow child run.

Each call is one Airflow task of the fan-out. What it logs (the run is a child of the DAG run's
parent run):

- params: the hyperparameters, the model family, the feature version, the split sizes;
- metrics: validation and test RMSE / MAE / R², fit seconds, CodeCarbon's kg CO2eq, energy (kWh)
  and duration (the tracker wraps the fit only, and has its own CSV, logged as an artifact);
- plots: predicted vs actual, residuals, top-15 feature importance (PNG);
- the model (scikit-learn flavour, cloudpickle, with signature and input example);
- the training split through ``mlflow.log_input`` (the other splits by path, as tags);
- tags: snapshot id and digest, FeatureService, git commit, Airflow dag/run/task ids.

CodeCarbon has no RAPL counters on a virtual machine: it then estimates CPU power from the CPU's
TDP times its load, and RAM power from its size. The figures are estimates, and are labelled so.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossfit_mlops.features.training_sets import TrainingSet, load_split
from crossfit_mlops.metrics import metric_intervals, regression_metrics
from crossfit_mlops.storage import TARGET, is_remote, location, publishing
from crossfit_mlops.tracking import client, fluent
from crossfit_mlops.tracking.runs import supersede_children
from crossfit_mlops.training.fan_out import ERROR_TAG, FitError, describe_error
from crossfit_mlops.training.grid import TrainingConfig, build_estimator
from crossfit_mlops.training.plots import feature_importance, predicted_vs_actual, residuals

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """Where a training run logs to and the lineage it records."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    emissions_dir: str
    country_iso_code: str = "USA"
    tags: dict[str, str] | None = None  # dag_id, run_id, task, git commit ...


@dataclass
class Stopwatch:
    """Seconds spent in each named phase of a task, so a run shows where its time went."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 4)


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("scikit-learn", "lightgbm", "cloudpickle", "pandas", "numpy")]


def emissions_tracker(run_name: str, country_iso_code: str, output_dir: str | Path, output_file: str):
    """The CodeCarbon tracker every training run uses (offline: no network call, ever)."""
    os.environ.setdefault("CODECARBON_LOG_LEVEL", "error")
    from codecarbon import OfflineEmissionsTracker

    return OfflineEmissionsTracker(
        project_name=run_name,
        country_iso_code=country_iso_code,
        output_dir=str(output_dir),
        output_file=output_file,
        tracking_mode="process",  # this task's process only: parallel tasks share the machine
        measure_power_secs=5,
        log_level="error",
    )


def fit_refusals() -> tuple[type[Exception], ...]:
    """What the model libraries raise when they refuse a grid entry's hyperparameters on this data:
    scikit-learn's checks (``ValueError``; its ``InvalidParameterError`` is a ``ValueError`` and a
    ``TypeError``) and LightGBM's own (``LightGBMError``, e.g. a ``subsample`` that bags no row).
    The same entry on the same data fails the same way on every try, so these end the task at once
    (:class:`~crossfit_mlops.training.fan_out.FitError`). Nothing else is one: a ``MemoryError``,
    a killed worker process or a full disk is the machine's state, and the task's retries apply."""
    from lightgbm.basic import LightGBMError

    return (ValueError, TypeError, LightGBMError)


def _measure_fit(
    estimator, X, y, ctx: RunContext, run_name: str, watch: Stopwatch
) -> tuple[float, dict[str, Any], Path]:
    """Fit inside a CodeCarbon tracker; return fit seconds, emissions figures and the local CSV
    path. With the emissions folder in a bucket, CodeCarbon writes to a local scratch folder and
    the CSV is then published to the bucket (the caller removes the scratch copy once logged)."""
    destination = location(ctx.emissions_dir)
    out_dir = Path(tempfile.mkdtemp(prefix="crossfit-emissions-")) if is_remote(destination) else destination
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = f"emissions_{run_name}_{os.getpid()}_{time.time_ns()}.csv"  # one file per task
    with watch.phase("codecarbon_start"):
        tracker = emissions_tracker(run_name, ctx.country_iso_code, out_dir, out_file)
        tracker.start()
    started = time.perf_counter()
    try:
        estimator.fit(X, y)
    except fit_refusals() as exc:  # fixed data and hyperparameters: the library refuses them every time
        raise FitError(f"{type(exc).__name__} in the fit of {run_name}: {exc}") from exc
    finally:  # anything else (no memory, a dead worker process, a full disk) passes unchanged: the task's retries apply
        fit_seconds = time.perf_counter() - started
        with watch.phase("codecarbon_stop"):
            kg = tracker.stop()
    data = tracker.final_emissions_data
    emissions = {
        "emissions_kg_co2eq": float(kg or 0.0),
        "energy_kwh": float(getattr(data, "energy_consumed", 0.0) or 0.0),
        "emissions_duration_s": float(getattr(data, "duration", fit_seconds) or fit_seconds),
        "cpu_power_w": float(getattr(data, "cpu_power", 0.0) or 0.0),
    }
    if is_remote(destination):
        with publishing(destination / out_file, directory=False) as tmp:
            shutil.copyfile(out_dir / out_file, tmp)
    return fit_seconds, emissions, out_dir / out_file


def _log_training_input(ctx: RunContext, run_id: str, training_set: TrainingSet, train_frame) -> None:
    """The training split as an MLflow dataset input (schema, digest, source path) of the run.

    Validation and test are recorded by path only (tags). The description is the one computed when
    the training set was built (same digest and schema as ``mlflow.data.from_pandas``)."""
    import mlflow
    from mlflow.entities import Dataset, DatasetInput, InputTag

    described = training_set.mlflow_dataset()
    if described is None:
        dataset = mlflow.data.from_pandas(
            train_frame, source=str(training_set.path("train")), name=training_set.dataset_name, targets=TARGET
        )
        mlflow.log_input(dataset, context="training")
        return
    entity = Dataset(**{k: described.get(k) for k in ("name", "digest", "source_type", "source", "schema", "profile")})
    client(ctx.tracking_uri).log_inputs(
        run_id, datasets=[DatasetInput(entity, tags=[InputTag(key="mlflow.data.context", value="training")])]
    )


@dataclass(frozen=True)
class Splits:
    """The three splits of a training set: features in the spec's order, and the target."""

    X_train: Any
    y_train: Any
    X_val: Any
    y_val: Any
    X_test: Any
    y_test: Any
    train_frame: Any

    @classmethod
    def load(cls, training_set: TrainingSet) -> Splits:
        X_train, y_train, train_frame = load_split(training_set, "train")
        X_val, y_val, _ = load_split(training_set, "validation")
        X_test, y_test, _ = load_split(training_set, "test")
        return cls(X_train, y_train, X_val, y_val, X_test, y_test, train_frame)


def _evaluate(estimator, data: Splits) -> tuple[dict[str, float], Any]:
    """Validation and test metrics (``val_*``, ``test_*``); returns them and the validation predictions."""
    val_pred, test_pred = estimator.predict(data.X_val), estimator.predict(data.X_test)
    metrics = {f"val_{k}": v for k, v in regression_metrics(data.y_val, val_pred).items()}
    metrics |= {f"test_{k}": v for k, v in regression_metrics(data.y_test, test_pred).items()}
    # the test figures' 95% bootstrap intervals (resampling test athletes): how far a split's luck goes
    metrics |= {f"test_{k}": v for k, v in metric_intervals(data.y_test, test_pred).items()}
    return metrics, val_pred


def _run_tags(config: TrainingConfig, training_set: TrainingSet, ctx: RunContext) -> dict[str, str]:
    return {
        **(ctx.tags or {}),
        "snapshot_id": training_set.snapshot_id,
        "snapshot_sha256": training_set.snapshot_sha256,
        "feature_version": config.feature_version,
        "feature_service": training_set.feature_service,
        "model_family": config.model,
        "emissions_method": "codecarbon OfflineEmissionsTracker (process mode; TDP x load estimate without RAPL)",
        **{f"dataset.{split}": str(training_set.path(split)) for split in ("train", "validation", "test")},
    }


def _log_params(config: TrainingConfig, data: Splits, ctx: RunContext) -> None:
    import mlflow

    mlflow.log_params(
        {
            **config.params,
            "model": config.model,
            "feature_version": config.feature_version,
            "n_features": data.X_train.shape[1],
            "rows_train": len(data.X_train),
            "rows_validation": len(data.X_val),
            "rows_test": len(data.X_test),
            "codecarbon_country": ctx.country_iso_code,
        }
    )


def _log_plots(config: TrainingConfig, estimator, data: Splits, val_pred, metrics: dict[str, float]) -> None:
    import mlflow

    title = f"{config.name}\nvalidation RMSE {metrics['val_rmse']:.1f} lb, R² {metrics['val_r2']:.3f}"
    mlflow.log_figure(predicted_vs_actual(data.y_val, val_pred, title), "plots/predicted_vs_actual.png")
    mlflow.log_figure(residuals(data.y_val, val_pred, config.name), "plots/residuals.png")
    mlflow.log_figure(
        feature_importance(list(data.X_train.columns), estimator.feature_importances_, f"top-15 features: {config.name}"),
        "plots/feature_importance.png",
    )


def _log_model(estimator, data: Splits):
    import mlflow.sklearn
    from mlflow.models import infer_signature

    example = data.X_train.head(5)
    return mlflow.sklearn.log_model(
        estimator,
        name="model",
        signature=infer_signature(example, estimator.predict(example)),
        input_example=example,
        pip_requirements=_pip_requirements(),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
    )


def _as_config(config: TrainingConfig | dict) -> TrainingConfig:
    if isinstance(config, dict):
        return TrainingConfig(model=config["model"], feature_version=config["feature_version"], params=config["params"])
    return config


@dataclass
class FittedCandidate:
    """One grid entry after its fit: everything its MLflow run records."""

    config: TrainingConfig
    training_set: TrainingSet
    estimator: Any
    data: Splits
    val_pred: Any
    metrics: dict[str, float]
    emissions: dict[str, float]
    emissions_csv: Path
    fit_seconds: float


def fit_candidate(config: TrainingConfig, training_set: TrainingSet, ctx: RunContext, watch: Stopwatch) -> FittedCandidate:
    """Load the splits, fit inside the emissions tracker, evaluate on validation and test."""
    with watch.phase("load"):
        data = Splits.load(training_set)
    estimator = build_estimator(config)
    fit_seconds, emissions, emissions_csv = _measure_fit(estimator, data.X_train, data.y_train, ctx, config.name, watch)
    watch.seconds["fit"] = round(fit_seconds, 4)
    with watch.phase("evaluate"):
        metrics, val_pred = _evaluate(estimator, data)
    return FittedCandidate(config, training_set, estimator, data, val_pred, metrics, emissions, emissions_csv, fit_seconds)


# the tags that tell the tries of one fan-out task apart from the other tasks' runs
TASK_KEYS = ("airflow.task_id", "airflow.map_index")


def train_candidate(config: TrainingConfig | dict, training_set: TrainingSet | dict, ctx: RunContext) -> dict[str, Any]:
    """Train one grid entry on its feature version's training set; return a summary for XCom.

    The MLflow child run opens before the fit and closes after the model is logged: a fit that
    raises leaves a FAILED run tagged with the error (:data:`~crossfit_mlops.training.fan_out.ERROR_TAG`,
    which the leaderboard shows; a fit the library refuses is a :class:`~crossfit_mlops.training.fan_out.FitError`),
    and a process killed mid-fit leaves a RUNNING one that the next try of the same task marks
    FAILED (:func:`~crossfit_mlops.tracking.runs.supersede_children`).
    """
    config = _as_config(config)
    training_set = TrainingSet(**training_set) if isinstance(training_set, dict) else training_set
    if training_set.feature_version != config.feature_version:
        raise ValueError(f"{config.name} needs a {config.feature_version} training set, got {training_set.feature_version}")
    started, watch = time.perf_counter(), Stopwatch()
    task_tags = {k: ctx.tags[k] for k in TASK_KEYS if ctx.tags and k in ctx.tags}
    if len(task_tags) == len(TASK_KEYS):
        supersede_children(ctx.tracking_uri, ctx.experiment_id, ctx.parent_run_id, task_tags)
    with fluent(ctx.tracking_uri):
        run_id, fitted, model_info = _fit_in_run(config, training_set, ctx, watch, started)
    metrics, emissions = fitted.metrics, fitted.emissions
    log.info(
        "%s: validation RMSE %.1f R² %.3f, fit %.1fs, %.3g g CO2eq (run %s)",
        config.name, metrics["val_rmse"], metrics["val_r2"], fitted.fit_seconds, emissions["emissions_kg_co2eq"] * 1000, run_id,
    )
    return {
        "run_id": run_id,
        "run_name": config.name,
        "model": config.model,
        "feature_version": config.feature_version,
        "params": config.params,
        "model_uri": model_info.model_uri,
        "model_id": model_info.model_id,
        "training_set": training_set.as_dict(),
        **metrics,
        **emissions,
        "fit_seconds": fitted.fit_seconds,
        "task_seconds": time.perf_counter() - started,
        "phase_seconds": watch.seconds,
    }


def _fit_in_run(config: TrainingConfig, training_set: TrainingSet, ctx: RunContext, watch: Stopwatch, started: float):
    """The MLflow child run (inside :func:`~crossfit_mlops.tracking.fluent`): params, the fit,
    emissions CSV, plots, dataset, model, then the metrics linked to the model.
    Returns ``(run_id, fitted, model_info)``."""
    import mlflow

    with watch.phase("mlflow_run"):
        run = mlflow.start_run(
            experiment_id=ctx.experiment_id,
            run_name=config.name,
            parent_run_id=ctx.parent_run_id,
            tags={**_run_tags(config, training_set, ctx), "process.pid": str(os.getpid())},
        )
    with run:
        try:
            fitted, model_info = _log_candidate(config, training_set, ctx, watch, run.info.run_id)
        except Exception as exc:  # the run ends FAILED (the context manager); its tag says why
            _tag_error(run.info.run_id, ctx, exc)
            raise
        # where this task's time went (the benchmark and curious users read it)
        mlflow.log_dict({"phases_s": watch.seconds, "task_s": round(time.perf_counter() - started, 4)}, "timings.json")
    return run.info.run_id, fitted, model_info


def _tag_error(run_id: str, ctx: RunContext, exc: BaseException) -> None:
    """Tag the child run with the error that ends it: the leaderboard reads it from there (a failed
    task leaves no XCom). Never hides the error itself (MLflow may be what failed)."""
    from mlflow.exceptions import MlflowException

    try:
        client(ctx.tracking_uri).set_tag(run_id, ERROR_TAG, describe_error(exc))
    except (MlflowException, OSError):  # the server refused or is unreachable: the run's own error is raised next
        log.warning("could not tag run %s with its error", run_id, exc_info=True)


def _log_candidate(config: TrainingConfig, training_set: TrainingSet, ctx: RunContext, watch: Stopwatch, run_id: str):
    """Inside the open child run: the fit, then everything the run records. Returns ``(fitted, model_info)``."""
    import mlflow

    fitted = fit_candidate(config, training_set, ctx, watch)
    data = fitted.data
    with watch.phase("mlflow_run"):
        _log_params(config, data, ctx)
        mlflow.log_artifact(str(fitted.emissions_csv), artifact_path="emissions")
        if is_remote(location(ctx.emissions_dir)):  # the bucket has it: drop the scratch copy
            shutil.rmtree(fitted.emissions_csv.parent, ignore_errors=True)
    with watch.phase("plots"):
        _log_plots(config, fitted.estimator, data, fitted.val_pred, fitted.metrics)
    with watch.phase("log_input"):
        _log_training_input(ctx, run_id, training_set, data.train_frame)
    with watch.phase("log_model"):
        model_info = _log_model(fitted.estimator, data)
    with watch.phase("mlflow_run"):
        # Logged after the model and linked to it by id: the run and the LoggedModel both show
        # them. Logged before, log_model would re-read every metric's history to link it (one
        # request per metric).
        metrics = {**fitted.metrics, **fitted.emissions, "fit_seconds": fitted.fit_seconds}
        mlflow.log_metrics(metrics, model_id=model_info.model_id)
    return fitted, model_info
