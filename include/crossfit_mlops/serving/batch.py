"""Batch inference: score every athlete of a snapshot with ``@champion``, one parquet partition a run.

Features come from the store the same way the model was trained: ``get_historical_features``
through the champion's FeatureService, at the snapshot's time. Those are the values the
materialization put into the online store for that snapshot, so a batch prediction equals the
API's prediction for the same athlete, model and snapshot (a test checks it).

Output: ``<state>/data/predictions/snapshot=<id>/run=<key>/predictions.parquet`` with athlete_id,
prediction, model_name, model_version, feature_version, snapshot_id, scored_at. The partition is
written to a hidden folder and renamed into place, so a failed run leaves nothing that looks like a
result. A summary run is logged to the MLflow experiment ``crossfit_batch_inference``.
"""

from __future__ import annotations

import logging
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crossfit_mlops.data.clean import ENTITY_KEY, EVENT_TIMESTAMP
from crossfit_mlops.features.specs import feature_set
from crossfit_mlops.serving.features import available_snapshots
from crossfit_mlops.settings import Settings, get_settings, run_partition

log = logging.getLogger(__name__)

BATCH_EXPERIMENT = "crossfit_batch_inference"


def partition_dir(settings: Settings, snapshot_id: str, run_key: str) -> Path:
    return run_partition(settings.predictions_dir, snapshot_id, run_key)


def score_snapshot(
    snapshot_id: str | None,
    run_key: str,
    settings: Settings | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Score all athletes of ``snapshot_id`` (None: the newest with features) with ``@champion``.

    Returns a summary (path, rows, model version, feature version, MLflow run id).
    """
    import mlflow
    import pandas as pd

    from crossfit_mlops.data.pipeline import publish_dir, snapshot_time, tmp_dir_for
    from crossfit_mlops.features.store import get_store, historical_features
    from crossfit_mlops.serving.champion import NoChampion, champion_version, load_version
    from crossfit_mlops.training.tracking import ensure_experiment

    settings = settings or get_settings()
    tracking_uri, model_name = settings.mlflow_tracking_uri, settings.registered_model_name
    version = champion_version(tracking_uri, model_name)
    if version is None:
        raise NoChampion(f"no version of {model_name} has alias @champion: run the training pipeline first")
    champion = load_version(tracking_uri, model_name, version)
    snapshots = available_snapshots(settings, champion.feature_version)
    if snapshot_id is None:
        if not snapshots:
            raise FileNotFoundError(f"no {champion.feature_version} feature table under {settings.features_dir}")
        snapshot_id = snapshots[-1]
    table = settings.feature_table_file(feature_set(champion.feature_version).view_name, snapshot_id)
    if not table.exists():
        raise FileNotFoundError(f"snapshot {snapshot_id} has no {champion.feature_version} feature table ({table})")

    started = time.perf_counter()
    ids = pd.read_parquet(table, columns=[ENTITY_KEY])[ENTITY_KEY].drop_duplicates().sort_values()
    entity_df = pd.DataFrame({ENTITY_KEY: ids.to_numpy(), EVENT_TIMESTAMP: snapshot_time(snapshot_id)})
    store = get_store(settings)
    features = historical_features(entity_df, champion.feature_version, settings=settings, store=store)
    predictions = champion.model.predict(features[list(champion.columns)].astype("float64"))
    scored_at = datetime.now(UTC)
    out = pd.DataFrame(
        {
            ENTITY_KEY: features[ENTITY_KEY].astype("int64"),
            "prediction": predictions.astype("float64"),
            "model_name": model_name,
            "model_version": champion.version,
            "feature_version": champion.feature_version,
            "snapshot_id": snapshot_id,
            "scored_at": pd.Timestamp(scored_at),
        }
    )
    final = partition_dir(settings, snapshot_id, run_key)
    tmp = tmp_dir_for(final)
    try:
        out.to_parquet(tmp / "predictions.parquet", index=False)
        publish_dir(tmp, final)  # a rerun of the same run key replaces its own partition only
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - started

    summary = {
        "snapshot_id": snapshot_id,
        "path": str(final / "predictions.parquet"),
        "rows": len(out),
        "model_name": model_name,
        "model_version": champion.version,
        "feature_version": champion.feature_version,
        "scored_at": scored_at.isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
    }
    experiment_id = ensure_experiment(tracking_uri, BATCH_EXPERIMENT)
    mlflow.set_tracking_uri(tracking_uri)
    stats = out["prediction"].describe(percentiles=[0.05, 0.5, 0.95])
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"score-{snapshot_id}-v{champion.version}",
        tags={
            **(tags or {}),
            "snapshot_id": snapshot_id,
            "model_name": model_name,
            "model_version": champion.version,
            "model_uri": champion.uri,
            "feature_version": champion.feature_version,
            "feature_service": champion.feature_service,
            "predictions_path": summary["path"],
        },
    ) as run:
        mlflow.log_params({"snapshot_id": snapshot_id, "model_version": champion.version, "feature_version": champion.feature_version})
        mlflow.log_metrics(
            {
                "rows_scored": len(out),
                "prediction_mean": float(stats["mean"]),
                "prediction_std": float(stats["std"]),
                "prediction_p05": float(stats["5%"]),
                "prediction_p50": float(stats["50%"]),
                "prediction_p95": float(stats["95%"]),
                "scoring_seconds": seconds,
            }
        )
        mlflow.log_dict(summary, "batch_summary.json")
        summary["mlflow_run_id"] = run.info.run_id
    log.info("scored %d athletes of %s with %s v%s -> %s", len(out), snapshot_id, model_name, champion.version, final)
    return summary
