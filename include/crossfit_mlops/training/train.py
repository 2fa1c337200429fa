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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossfit_mlops.training.datasets import TrainingSet, load_split
from crossfit_mlops.training.evaluate import (
    feature_importance,
    predicted_vs_actual,
    regression_metrics,
    residuals,
)
from crossfit_mlops.training.grid import TrainingConfig, build_estimator

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


def _measure_fit(
    estimator, X, y, ctx: RunContext, run_name: str, watch: Stopwatch
) -> tuple[float, dict[str, Any], Path]:
    """Fit inside a CodeCarbon tracker; return fit seconds, emissions figures and the CSV path."""
    out_dir = Path(ctx.emissions_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = f"emissions_{run_name}_{os.getpid()}_{time.time_ns()}.csv"  # one file per task
    with watch.phase("codecarbon_start"):
        tracker = emissions_tracker(run_name, ctx.country_iso_code, out_dir, out_file)
        tracker.start()
    started = time.perf_counter()
    try:
        estimator.fit(X, y)
    finally:
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
    return fit_seconds, emissions, out_dir / out_file


def _log_training_input(run_id: str, training_set: TrainingSet, train_frame) -> None:
    """The training split as an MLflow dataset input (schema, digest, source path) of the run.

    Validation and test are recorded by path only (tags). The description is the one computed when
    the training set was built (same digest and schema as ``mlflow.data.from_pandas``)."""
    import mlflow
    from mlflow.entities import Dataset, DatasetInput, InputTag

    described = training_set.mlflow_dataset()
    if described is None:
        dataset = mlflow.data.from_pandas(
            train_frame, source=str(training_set.path("train")), name=training_set.dataset_name, targets="total_lift"
        )
        mlflow.log_input(dataset, context="training")
        return
    entity = Dataset(**{k: described.get(k) for k in ("name", "digest", "source_type", "source", "schema", "profile")})
    mlflow.MlflowClient().log_inputs(
        run_id, datasets=[DatasetInput(entity, tags=[InputTag(key="mlflow.data.context", value="training")])]
    )


def train_candidate(config: TrainingConfig | dict, training_set: TrainingSet | dict, ctx: RunContext) -> dict[str, Any]:
    """Train one grid entry on its feature version's training set; return a summary for XCom."""
    import mlflow
    from mlflow.models import infer_signature

    if isinstance(config, dict):
        config = TrainingConfig(model=config["model"], feature_version=config["feature_version"], params=config["params"])
    if isinstance(training_set, dict):
        training_set = TrainingSet(**training_set)
    if training_set.feature_version != config.feature_version:
        raise ValueError(f"{config.name} needs a {config.feature_version} training set, got {training_set.feature_version}")
    started = time.perf_counter()
    watch = Stopwatch()
    with watch.phase("load"):
        X_train, y_train, train_frame = load_split(training_set, "train")
        X_val, y_val, _ = load_split(training_set, "validation")
        X_test, y_test, _ = load_split(training_set, "test")

    estimator = build_estimator(config)
    fit_seconds, emissions, emissions_csv = _measure_fit(estimator, X_train, y_train, ctx, config.name, watch)
    watch.seconds["fit"] = round(fit_seconds, 4)
    with watch.phase("evaluate"):
        val_pred, test_pred = estimator.predict(X_val), estimator.predict(X_test)
        metrics = {f"val_{k}": v for k, v in regression_metrics(y_val, val_pred).items()}
        metrics |= {f"test_{k}": v for k, v in regression_metrics(y_test, test_pred).items()}

    tags = {
        **(ctx.tags or {}),
        "snapshot_id": training_set.snapshot_id,
        "snapshot_sha256": training_set.snapshot_sha256,
        "feature_version": config.feature_version,
        "feature_service": training_set.feature_service,
        "model_family": config.model,
        "emissions_method": "codecarbon OfflineEmissionsTracker (process mode; TDP x load estimate without RAPL)",
        **{f"dataset.{split}": str(training_set.path(split)) for split in ("train", "validation", "test")},
    }
    mlflow.set_tracking_uri(ctx.tracking_uri)
    with watch.phase("mlflow_run"):
        run = mlflow.start_run(
            experiment_id=ctx.experiment_id, run_name=config.name, parent_run_id=ctx.parent_run_id, tags=tags
        )
    with run:
        with watch.phase("mlflow_run"):
            mlflow.log_params(
                {
                    **config.params,
                    "model": config.model,
                    "feature_version": config.feature_version,
                    "n_features": X_train.shape[1],
                    "rows_train": len(X_train),
                    "rows_validation": len(X_val),
                    "rows_test": len(X_test),
                    "codecarbon_country": ctx.country_iso_code,
                }
            )
            mlflow.log_artifact(str(emissions_csv), artifact_path="emissions")
        with watch.phase("plots"):
            title = f"{config.name}\nvalidation RMSE {metrics['val_rmse']:.1f} lb, R² {metrics['val_r2']:.3f}"
            mlflow.log_figure(predicted_vs_actual(y_val, val_pred, title), "plots/predicted_vs_actual.png")
            mlflow.log_figure(residuals(y_val, val_pred, config.name), "plots/residuals.png")
            mlflow.log_figure(
                feature_importance(
                    list(X_train.columns), estimator.feature_importances_, f"top-15 features: {config.name}"
                ),
                "plots/feature_importance.png",
            )
        with watch.phase("log_input"):
            _log_training_input(run.info.run_id, training_set, train_frame)
        with watch.phase("log_model"):
            import mlflow.sklearn

            example = X_train.head(5)
            model_info = mlflow.sklearn.log_model(
                estimator,
                name="model",
                signature=infer_signature(example, estimator.predict(example)),
                input_example=example,
                pip_requirements=_pip_requirements(),
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            )
        with watch.phase("mlflow_run"):
            # Logged after the model and linked to it by id: the run and the LoggedModel both show
            # them. Logged before, log_model would re-read every metric's history to link it (one
            # request per metric).
            mlflow.log_metrics({**metrics, **emissions, "fit_seconds": fit_seconds}, model_id=model_info.model_id)
        run_id = run.info.run_id
        task_seconds = time.perf_counter() - started
        # where this task's time went (the benchmark and curious users read it)
        mlflow.log_dict({"phases_s": watch.seconds, "task_s": round(task_seconds, 4)}, "timings.json")
    summary = {
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
        "fit_seconds": fit_seconds,
        "task_seconds": task_seconds,
        "phase_seconds": watch.seconds,
    }
    log.info(
        "%s: validation RMSE %.1f R² %.3f, fit %.1fs, %.3g g CO2eq (run %s)",
        config.name, metrics["val_rmse"], metrics["val_r2"], fit_seconds, emissions["emissions_kg_co2eq"] * 1000, run_id,
    )
    return summary
