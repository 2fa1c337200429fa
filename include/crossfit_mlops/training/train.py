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
from dataclasses import dataclass
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


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("scikit-learn", "lightgbm", "cloudpickle", "pandas", "numpy")]


def _measure_fit(estimator, X, y, ctx: RunContext, run_name: str) -> tuple[float, dict[str, Any], Path]:
    """Fit inside a CodeCarbon tracker; return fit seconds, emissions figures and the CSV path."""
    os.environ.setdefault("CODECARBON_LOG_LEVEL", "error")
    from codecarbon import OfflineEmissionsTracker

    out_dir = Path(ctx.emissions_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = f"emissions_{run_name}_{os.getpid()}_{time.time_ns()}.csv"  # one file per task
    tracker = OfflineEmissionsTracker(
        project_name=run_name,
        country_iso_code=ctx.country_iso_code,
        output_dir=str(out_dir),
        output_file=out_file,
        tracking_mode="process",  # this task's process only: parallel tasks share the machine
        measure_power_secs=5,
        log_level="error",
    )
    tracker.start()
    started = time.perf_counter()
    try:
        estimator.fit(X, y)
    finally:
        fit_seconds = time.perf_counter() - started
        kg = tracker.stop()
    data = tracker.final_emissions_data
    emissions = {
        "emissions_kg_co2eq": float(kg or 0.0),
        "energy_kwh": float(getattr(data, "energy_consumed", 0.0) or 0.0),
        "emissions_duration_s": float(getattr(data, "duration", fit_seconds) or fit_seconds),
        "cpu_power_w": float(getattr(data, "cpu_power", 0.0) or 0.0),
    }
    return fit_seconds, emissions, out_dir / out_file


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
    X_train, y_train, train_frame = load_split(training_set, "train")
    X_val, y_val, _ = load_split(training_set, "validation")
    X_test, y_test, _ = load_split(training_set, "test")

    estimator = build_estimator(config)
    fit_seconds, emissions, emissions_csv = _measure_fit(estimator, X_train, y_train, ctx, config.name)
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
    }
    mlflow.set_tracking_uri(ctx.tracking_uri)
    with mlflow.start_run(
        experiment_id=ctx.experiment_id, run_name=config.name, parent_run_id=ctx.parent_run_id, tags=tags
    ) as run:
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
        mlflow.log_metrics({**metrics, **emissions, "fit_seconds": fit_seconds})
        mlflow.log_artifact(str(emissions_csv), artifact_path="emissions")
        title = f"{config.name}\nvalidation RMSE {metrics['val_rmse']:.1f} lb, R² {metrics['val_r2']:.3f}"
        mlflow.log_figure(predicted_vs_actual(y_val, val_pred, title), "plots/predicted_vs_actual.png")
        mlflow.log_figure(residuals(y_val, val_pred, config.name), "plots/residuals.png")
        mlflow.log_figure(
            feature_importance(list(X_train.columns), estimator.feature_importances_, f"top-15 features: {config.name}"),
            "plots/feature_importance.png",
        )
        # the training split as an MLflow dataset (schema, digest, source path); validation and test
        # are recorded by path and size only: inferring their schema costs ~0.4 s each per task
        dataset = mlflow.data.from_pandas(
            train_frame,
            source=str(training_set.path("train")),
            name=f"{training_set.feature_service}-{training_set.snapshot_id}-train",
            targets="total_lift",
        )
        mlflow.log_input(dataset, context="training")
        mlflow.set_tags({f"dataset.{split}": str(training_set.path(split)) for split in ("train", "validation", "test")})
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
        run_id = run.info.run_id
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
        "task_seconds": time.perf_counter() - started,
    }
    log.info(
        "%s: validation RMSE %.1f R² %.3f, fit %.1fs, %.3g g CO2eq (run %s)",
        config.name, metrics["val_rmse"], metrics["val_r2"], fit_seconds, emissions["emissions_kg_co2eq"] * 1000, run_id,
    )
    return summary
