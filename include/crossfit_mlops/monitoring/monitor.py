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
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crossfit_mlops.dag_contract import RetrainConf
from crossfit_mlops.monitoring.policy import MonitoringPolicy, RetrainDecision, decide
from crossfit_mlops.settings import Settings, get_settings
from crossfit_mlops.storage import (
    TARGET,
    Catalog,
    check_snapshot_id,
    local_copy,
    location,
    publishing,
)
from crossfit_mlops.storage import (
    current as published_version,  # `current` names a training set here
)

log = logging.getLogger(__name__)

MONITORING_EXPERIMENT = "crossfit_monitoring"


class MonitoringError(RuntimeError):
    """The run cannot measure what it should (missing reference, conflicting snapshot...)."""


def run_dir(settings: Settings, snapshot_id: str, run_key: str) -> Path:
    return Catalog(settings).monitoring_dir(snapshot_id, run_key)


def champion_reference(settings: Settings | None = None) -> dict[str, Any]:
    """What ``@champion`` was trained and judged on. Raises NoChampion when there is none."""
    from crossfit_mlops.tracking import client
    from crossfit_mlops.tracking.aliases import require_champion

    settings = settings or get_settings()
    uri, name = settings.mlflow_tracking_uri, settings.registered_model_name
    mv = require_champion(uri, name)
    run = client(uri).get_run(mv.run_id)
    test_path = run.data.tags.get("dataset.test")
    if not test_path:
        raise MonitoringError(f"{name} v{mv.version}: its run {mv.run_id} has no dataset.test tag to find its test set")
    test_file = location(test_path, settings)
    manifest = test_file.parent / "manifest.json"
    if not (test_file.is_file() and manifest.is_file()):
        raise MonitoringError(
            f"{name} v{mv.version} was judged on {test_path}, which is gone (state directory cleaned?): "
            "retrain, or restore that training set"
        )
    training_set = json.loads(manifest.read_text())
    raw = Catalog(settings).raw_manifest(training_set["snapshot_id"])
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
    from crossfit_mlops.data.ingest import ingest_snapshot
    from crossfit_mlops.data.validate import validate_and_clean
    from crossfit_mlops.data.vocabulary import FULL_SIZE
    from crossfit_mlops.features.build import build_feature_table
    from crossfit_mlops.features.feast_repo import apply_definitions
    from crossfit_mlops.features.training_sets import build_training_set

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


@dataclass
class Measurement:
    """What one monitoring run measured: the scored test sets, Evidently's report, the decision."""

    snapshot_id: str
    reference: dict[str, Any]
    current: dict[str, Any]
    features: list[str]
    frames: dict[str, Any]  # role -> test split + target + the champion's predictions
    metrics: dict[str, dict[str, float]]  # role -> rmse / mae / r2
    report: Any  # Evidently's Snapshot
    drifts: list[Any]  # ColumnDrift per feature, target and prediction
    decision: RetrainDecision
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def drifted(self) -> list[str]:
        return [d.column for d in self.drifts if d.column in self.features and d.drifted]

    def drift_of(self, column: str):
        return next(d for d in self.drifts if d.column == column)


def score_test_sets(settings: Settings, reference: dict[str, Any], current: dict[str, Any]):
    """The champion's predictions on both held-out sets (athletes no model trained on)."""
    from crossfit_mlops.features.training_sets import load_split
    from crossfit_mlops.metrics import regression_metrics
    from crossfit_mlops.monitoring.drift import PREDICTION
    from crossfit_mlops.tracking.aliases import load_version

    champion = load_version(settings.mlflow_tracking_uri, settings.registered_model_name, reference["version"])
    columns = list(champion.columns)
    frames, metrics = {}, {}
    for role, training_set in (("reference", reference["training_set"]), ("current", current)):
        X, y, _ = load_split(training_set, "test")
        frame = X.copy()
        frame[TARGET] = y.to_numpy()
        frame[PREDICTION] = champion.model.predict(X[columns].astype("float64"))
        frames[role] = frame
        metrics[role] = regression_metrics(y, frame[PREDICTION])
    return frames, metrics


def measure_snapshot(
    settings: Settings, snapshot_id: str, reference: dict[str, Any], current: dict[str, Any], policy: MonitoringPolicy
) -> Measurement:
    """Score both test sets, run Evidently, and let the policy decide (no output written)."""
    from crossfit_mlops.features.specs import feature_set
    from crossfit_mlops.monitoring.drift import PREDICTION, column_drifts, column_kinds, run_report

    if current["feature_version"] != reference["feature_version"]:
        raise MonitoringError(
            f"current set has feature version {current['feature_version']}, the champion {reference['feature_version']}"
        )
    features = feature_set(reference["feature_version"]).names
    frames, metrics = score_test_sets(settings, reference, current)
    report = run_report(
        frames["reference"], frames["current"], features, TARGET, policy.drift_threshold, policy.max_drift_share
    )
    drifts = column_drifts(report, column_kinds(frames["reference"], [*features, TARGET, PREDICTION]))
    drifted = [d.column for d in drifts if d.column in features and d.drifted]
    decision = decide(policy, drifted, len(features), metrics["reference"]["rmse"], metrics["current"]["rmse"])
    return Measurement(snapshot_id, reference, current, features, frames, metrics, report, drifts, decision)


def summarize(m: Measurement, settings: Settings, policy: MonitoringPolicy) -> dict[str, Any]:
    from crossfit_mlops.monitoring.drift import PREDICTION

    ref = m.reference
    return {
        "snapshot_id": m.snapshot_id,
        "reference_snapshot_id": ref["snapshot_id"],
        "model_name": settings.registered_model_name,
        "model_version": ref["version"],
        "feature_version": ref["feature_version"],
        "rows": {role: len(frame) for role, frame in m.frames.items()},
        "metrics": m.metrics,
        "rmse_increase": m.metrics["current"]["rmse"] / m.metrics["reference"]["rmse"] - 1.0,
        "drift_share": len(m.drifted) / len(m.features),
        "drifted_features": m.drifted,
        "target_drift": m.drift_of(TARGET).as_dict(),
        "prediction_drift": m.drift_of(PREDICTION).as_dict(),
        "columns": [d.as_dict() for d in m.drifts],
        "policy": policy.as_dict(),
        "decision": m.decision.label,
        "retrain": m.decision.retrain,
        "reasons": m.decision.reasons,
        "retrain_conf": RetrainConf(m.snapshot_id, int(ref["training_set"].get("sample_size") or 0)).as_conf(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_outputs(m: Measurement, final: Path, started: float) -> None:
    """Evidently's HTML report, the dashboard PNG and the summary, published together."""
    from crossfit_mlops.monitoring.dashboard import dashboard_figure
    from crossfit_mlops.monitoring.drift import PREDICTION

    ref, frames = m.reference, m.frames
    with publishing(final) as tmp:  # a rerun of the same run key replaces its own output only
        m.report.save_html(str(tmp / "report.html"))
        fig = dashboard_figure(
            m.drifts,
            (frames["reference"][PREDICTION] - frames["reference"][TARGET]).to_numpy(),
            (frames["current"][PREDICTION] - frames["current"][TARGET]).to_numpy(),
            m.metrics["reference"]["rmse"],
            m.metrics["current"]["rmse"],
            title=(
                f"{m.summary['model_name']} v{ref['version']} ({ref['feature_version']}): snapshot {m.snapshot_id} vs "
                f"{ref['snapshot_id']} -> {m.decision.label.upper()}"
            ),
        )
        fig.savefig(tmp / "dashboard.png")
        m.summary["seconds"] = round(time.perf_counter() - started, 3)
        (tmp / "summary.json").write_text(json.dumps(m.summary, indent=2, default=float))


def _run_metrics(m: Measurement) -> dict[str, float]:
    import numpy as np

    from crossfit_mlops.monitoring.drift import PREDICTION

    return {
        "drift_share": m.summary["drift_share"],
        "drifted_features": len(m.drifted),
        "rmse_increase": m.summary["rmse_increase"],
        "target_drift": float(np.nan_to_num(m.drift_of(TARGET).score, nan=1.0)),
        "prediction_drift": float(np.nan_to_num(m.drift_of(PREDICTION).score, nan=1.0)),
        "retrain": float(m.decision.retrain),
        **{f"{metric}_{role}": value for role, values in m.metrics.items() for metric, value in values.items()},
        **{f"drift.{d.column}": float(np.nan_to_num(d.score, nan=1.0)) for d in m.drifts if d.column in m.features},
    }


def log_monitoring_run(m: Measurement, settings: Settings, policy: MonitoringPolicy, tags: dict[str, str]) -> str:
    """The MLflow run in ``crossfit_monitoring`` (metrics, both test sets, the output files); the
    champion's version gets ``monitoring.last_*`` tags. Returns the run id."""
    import mlflow
    import mlflow.data

    from crossfit_mlops.monitoring.drift import PREDICTION
    from crossfit_mlops.tracking import client, fluent
    from crossfit_mlops.tracking.runs import ensure_experiment

    uri, ref = settings.mlflow_tracking_uri, m.reference
    experiment_id = ensure_experiment(uri, MONITORING_EXPERIMENT)
    run_tags = {
        **tags,
        "monitoring.kind": "snapshot",  # live traffic's runs: "live" (monitoring/live.py)
        "snapshot_id": m.snapshot_id,
        "reference_snapshot_id": ref["snapshot_id"],
        "model_name": m.summary["model_name"],
        "model_version": ref["version"],
        "feature_version": ref["feature_version"],
        "decision": m.decision.label,
        "reasons": m.decision.summary,
        "monitoring_path": m.summary["path"],
    }
    with fluent(uri), mlflow.start_run(
        experiment_id=experiment_id, run_name=f"monitor-{m.snapshot_id}-v{ref['version']}", tags=run_tags
    ) as run:
        mlflow.log_params({**policy.as_dict(), "rows_reference": len(m.frames["reference"]), "rows_current": len(m.frames["current"])})
        for role, training_set in (("reference", ref["training_set"]), ("current", m.current)):
            dataset = mlflow.data.from_pandas(
                m.frames[role],
                source=str(location(training_set["directory"], settings) / "test.parquet"),
                name=f"{training_set['feature_service']}-{training_set['snapshot_id']}-test",
                targets=TARGET,
                predictions=PREDICTION,
            )
            mlflow.log_input(dataset, context=role)
        mlflow.log_metrics(_run_metrics(m))
        with local_copy(location(m.summary["path"], settings)) as outputs:
            mlflow.log_artifacts(str(outputs))
        run_id = run.info.run_id
    c = client(uri)
    for key, value in {
        "monitoring.last_snapshot": m.snapshot_id,
        "monitoring.last_decision": m.decision.label,
        "monitoring.last_reasons": m.decision.summary,
        "monitoring.last_run_id": run_id,
    }.items():
        c.set_model_version_tag(m.summary["model_name"], ref["version"], key, value)
    return run_id


def measure(
    snapshot_id: str,
    reference: dict[str, Any],
    current: dict[str, Any],
    run_key: str,
    policy: MonitoringPolicy,
    settings: Settings | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Drift and error of the champion on ``current``'s test split against the reference's; decide;
    write the outputs; log the MLflow run. Returns the summary."""
    settings = settings or get_settings()
    started = time.perf_counter()
    m = measure_snapshot(settings, snapshot_id, reference, current, policy)
    m.summary = summarize(m, settings, policy)
    final = run_dir(settings, snapshot_id, run_key)
    write_outputs(m, final, started)
    m.summary["path"] = str(published_version(final))
    m.summary["mlflow_run_id"] = log_monitoring_run(m, settings, policy, tags or {})
    log.info(
        "monitoring %s v%s on %s: %s (%s)",
        m.summary["model_name"], reference["version"], snapshot_id, m.decision.label.upper(), m.decision.summary,
    )
    return m.summary
