"""One monitoring run: the champion on a later snapshot, against what it was judged on.

1. :func:`champion_reference`: ``@champion``, its feature version and the test split it was
   judged on (found through its run's ``dataset.test`` tag), with the raw snapshot's size and seed.
2. :func:`prepare_snapshot`: the new snapshot ingested (generated with the reference's size and
   seed, so it follows the same athletes, unless a file is provided), validated, cleaned, and its
   champion-version features read point-in-time through Feast into train/validation/test splits,
   exactly as training does.
3. :func:`measure`: the champion predicts both test splits (athletes no model trained on);
   Evidently measures drift of each feature, the target and the predictions; the policy decides.
   Output: ``<state>/monitoring/snapshot=<id>/run=<key>/`` (``report.html``, Evidently's dashboard;
   ``dashboard.png``; ``summary.json``), published by a rename so a failed run leaves nothing that
   looks like a result, and the same files in an MLflow run of the experiment
   ``crossfit_monitoring``. The champion's model version gets ``monitoring.*`` tags.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crossfit_mlops.data.clean import TARGET
from crossfit_mlops.data.pipeline import publish_dir, tmp_dir_for
from crossfit_mlops.monitoring.policy import MonitoringPolicy, decide
from crossfit_mlops.settings import Settings, check_snapshot_id, get_settings, run_partition

log = logging.getLogger(__name__)

MONITORING_EXPERIMENT = "crossfit_monitoring"


class MonitoringError(RuntimeError):
    """The run cannot measure what it should (missing reference, conflicting snapshot...)."""


def run_dir(settings: Settings, snapshot_id: str, run_key: str) -> Path:
    return run_partition(settings.monitoring_dir, snapshot_id, run_key)


def champion_reference(settings: Settings | None = None) -> dict[str, Any]:
    """What ``@champion`` was trained and judged on. Raises NoChampion when there is none."""
    from crossfit_mlops.data.pipeline import load_raw_manifest
    from crossfit_mlops.registry.gate import CHAMPION, current_version
    from crossfit_mlops.serving.champion import NoChampion
    from crossfit_mlops.training.tracking import client

    settings = settings or get_settings()
    uri, name = settings.mlflow_tracking_uri, settings.registered_model_name
    mv = current_version(uri, name, CHAMPION)
    if mv is None:
        raise NoChampion(f"no version of {name} has alias @{CHAMPION}: run the training pipeline first")
    run = client(uri).get_run(mv.run_id)
    test_path = run.data.tags.get("dataset.test")
    if not test_path:
        raise MonitoringError(f"{name} v{mv.version}: its run {mv.run_id} has no dataset.test tag to find its test set")
    manifest = Path(test_path).parent / "manifest.json"
    if not (Path(test_path).is_file() and manifest.is_file()):
        raise MonitoringError(
            f"{name} v{mv.version} was judged on {test_path}, which is gone (state directory cleaned?): "
            "retrain, or restore that training set"
        )
    training_set = json.loads(manifest.read_text())
    raw = load_raw_manifest(training_set["snapshot_id"], settings)
    return {
        "model_name": name,
        "version": str(mv.version),
        "feature_version": training_set["feature_version"],
        "snapshot_id": training_set["snapshot_id"],
        "training_set": training_set,
        "raw_source": raw.source,
        "raw_rows": raw.rows,
        "raw_seed": raw.seed,
    }


def prepare_snapshot(
    snapshot_id: str,
    reference: dict[str, Any],
    settings: Settings | None = None,
    rows: int | None = None,
    seed: int | None = None,
    season_shift: float = 0.0,
) -> dict[str, Any]:
    """Ingest, validate and clean ``snapshot_id`` and build its champion-version training set (all
    athletes). Returns the training set (a dict). Raw snapshots are immutable: asking for a season
    shift on one that exists with another shift is an error, not a silent no-op."""
    from crossfit_mlops.data.generate import FULL_SIZE
    from crossfit_mlops.data.pipeline import ingest_snapshot, validate_and_clean
    from crossfit_mlops.features.build import build_feature_table
    from crossfit_mlops.features.store import apply_definitions
    from crossfit_mlops.training.datasets import build_training_set

    settings = settings or get_settings()
    check_snapshot_id(snapshot_id)
    version = reference["feature_version"]
    # a generated snapshot follows the champion's athletes: same size and seed as its snapshot's
    if seed is None:
        seed = reference.get("raw_seed")
    raw = ingest_snapshot(
        snapshot_id,
        rows=rows or reference.get("raw_rows") or FULL_SIZE,
        seed=42 if seed is None else seed,
        settings=settings,
        season_shift=season_shift,
    )
    if season_shift and raw.season_shift != season_shift:
        raise MonitoringError(
            f"raw snapshot {snapshot_id} already exists with season_shift={raw.season_shift} ({raw.source}); "
            f"raw snapshots are never rewritten: use a new snapshot id for season_shift={season_shift}"
        )
    validate_and_clean(snapshot_id, settings)
    build_feature_table(snapshot_id, version, settings)
    apply_definitions(settings)
    return build_training_set(snapshot_id, version, sample_size=0, settings=settings).as_dict()


def measure(
    snapshot_id: str,
    reference: dict[str, Any],
    current: dict[str, Any],
    run_key: str,
    policy: MonitoringPolicy,
    settings: Settings | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Drift and error of the champion on ``current``'s test split against the reference's; decide."""
    import mlflow
    import mlflow.data
    import numpy as np

    from crossfit_mlops.features.specs import feature_set
    from crossfit_mlops.monitoring.dashboard import dashboard_figure
    from crossfit_mlops.monitoring.drift import PREDICTION, column_drifts, column_kinds, run_report
    from crossfit_mlops.serving.champion import load_version
    from crossfit_mlops.training.datasets import load_split
    from crossfit_mlops.training.evaluate import regression_metrics
    from crossfit_mlops.training.tracking import client, ensure_experiment

    settings = settings or get_settings()
    uri, name = settings.mlflow_tracking_uri, settings.registered_model_name
    if current["feature_version"] != reference["feature_version"]:
        raise MonitoringError(
            f"current set has feature version {current['feature_version']}, the champion {reference['feature_version']}"
        )
    started = time.perf_counter()
    champion = load_version(uri, name, reference["version"])
    columns = list(champion.columns)
    features = feature_set(reference["feature_version"]).names

    frames, metrics = {}, {}
    for role, training_set in (("reference", reference["training_set"]), ("current", current)):
        X, y, _ = load_split(training_set, "test")
        frame = X.copy()
        frame[TARGET] = y.to_numpy()
        frame[PREDICTION] = champion.model.predict(X[columns].astype("float64"))
        frames[role] = frame
        metrics[role] = regression_metrics(y, frame[PREDICTION])

    report = run_report(
        frames["reference"], frames["current"], features, TARGET, policy.drift_threshold, policy.max_drift_share
    )
    drifts = column_drifts(report, column_kinds(frames["reference"], [*features, TARGET, PREDICTION]))
    by_column = {d.column: d for d in drifts}
    drifted = [d.column for d in drifts if d.column in features and d.drifted]
    decision = decide(policy, drifted, len(features), metrics["reference"]["rmse"], metrics["current"]["rmse"])
    rmse_increase = metrics["current"]["rmse"] / metrics["reference"]["rmse"] - 1.0

    summary: dict[str, Any] = {
        "snapshot_id": snapshot_id,
        "reference_snapshot_id": reference["snapshot_id"],
        "model_name": name,
        "model_version": reference["version"],
        "feature_version": reference["feature_version"],
        "rows": {"reference": len(frames["reference"]), "current": len(frames["current"])},
        "metrics": metrics,
        "rmse_increase": rmse_increase,
        "drift_share": len(drifted) / len(features),
        "drifted_features": drifted,
        "target_drift": by_column[TARGET].as_dict(),
        "prediction_drift": by_column[PREDICTION].as_dict(),
        "columns": [d.as_dict() for d in drifts],
        "policy": policy.as_dict(),
        "decision": decision.label,
        "retrain": decision.retrain,
        "reasons": decision.reasons,
        "retrain_conf": {
            "snapshot": snapshot_id,
            "sample_size": int(reference["training_set"].get("sample_size") or 0),
        },
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }

    final = run_dir(settings, snapshot_id, run_key)
    tmp = tmp_dir_for(final)
    try:
        report.save_html(str(tmp / "report.html"))
        fig = dashboard_figure(
            drifts,
            (frames["reference"][PREDICTION] - frames["reference"][TARGET]).to_numpy(),
            (frames["current"][PREDICTION] - frames["current"][TARGET]).to_numpy(),
            metrics["reference"]["rmse"],
            metrics["current"]["rmse"],
            title=(
                f"{name} v{reference['version']} ({reference['feature_version']}): snapshot {snapshot_id} vs "
                f"{reference['snapshot_id']} -> {decision.label.upper()}"
            ),
        )
        fig.savefig(tmp / "dashboard.png")
        summary["seconds"] = round(time.perf_counter() - started, 3)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
        publish_dir(tmp, final)  # a rerun of the same run key replaces its own output only
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary["path"] = str(final)

    experiment_id = ensure_experiment(uri, MONITORING_EXPERIMENT)
    mlflow.set_tracking_uri(uri)
    values = {
        "drift_share": summary["drift_share"],
        "drifted_features": len(drifted),
        "rmse_increase": rmse_increase,
        "target_drift": float(np.nan_to_num(by_column[TARGET].score, nan=1.0)),
        "prediction_drift": float(np.nan_to_num(by_column[PREDICTION].score, nan=1.0)),
        "retrain": float(decision.retrain),
        **{f"{metric}_{role}": value for role, m in metrics.items() for metric, value in m.items()},
        **{f"drift.{d.column}": float(np.nan_to_num(d.score, nan=1.0)) for d in drifts if d.column in features},
    }
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"monitor-{snapshot_id}-v{reference['version']}",
        tags={
            **(tags or {}),
            "snapshot_id": snapshot_id,
            "reference_snapshot_id": reference["snapshot_id"],
            "model_name": name,
            "model_version": reference["version"],
            "feature_version": reference["feature_version"],
            "decision": decision.label,
            "reasons": decision.summary,
            "monitoring_path": str(final),
        },
    ) as run:
        mlflow.log_params({**policy.as_dict(), "rows_reference": len(frames["reference"]), "rows_current": len(frames["current"])})
        for role, training_set in (("reference", reference["training_set"]), ("current", current)):
            dataset = mlflow.data.from_pandas(
                frames[role],
                source=str(Path(training_set["directory"]) / "test.parquet"),
                name=f"{training_set['feature_service']}-{training_set['snapshot_id']}-test",
                targets=TARGET,
                predictions=PREDICTION,
            )
            mlflow.log_input(dataset, context=role)
        mlflow.log_metrics(values)
        mlflow.log_artifacts(str(final))
        summary["mlflow_run_id"] = run.info.run_id

    c = client(uri)
    for key, value in {
        "monitoring.last_snapshot": snapshot_id,
        "monitoring.last_decision": decision.label,
        "monitoring.last_reasons": decision.summary,
        "monitoring.last_run_id": summary["mlflow_run_id"],
    }.items():
        c.set_model_version_tag(name, reference["version"], key, value)
    log.info(
        "monitoring %s v%s on %s: %s (%s)", name, reference["version"], snapshot_id, decision.label.upper(), decision.summary
    )
    return summary
