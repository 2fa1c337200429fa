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
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crossfit_mlops.features.specs import feature_set
from crossfit_mlops.serving.champion import Champion, load_version
from crossfit_mlops.serving.online import available_snapshots
from crossfit_mlops.settings import Settings, get_settings
from crossfit_mlops.storage import (
    ENTITY_KEY,
    EVENT_TIMESTAMP,
    Catalog,
    publishing,
    read_parquet,
    snapshot_time,
)
from crossfit_mlops.tracking import fluent
from crossfit_mlops.tracking.aliases import require_champion
from crossfit_mlops.tracking.runs import ensure_experiment

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

BATCH_EXPERIMENT = "crossfit_batch_inference"
PREDICTIONS_FILE = "predictions.parquet"


def partition_dir(settings: Settings, snapshot_id: str, run_key: str) -> Path:
    return Catalog(settings).predictions_dir(snapshot_id, run_key)


def _feature_table(settings: Settings, champion: Champion, snapshot_id: str | None) -> tuple[str, Path]:
    """The snapshot to score (None: the newest with the champion's features) and its feature table."""
    if snapshot_id is None:
        snapshots = available_snapshots(settings, champion.feature_version)
        if not snapshots:
            raise FileNotFoundError(f"no {champion.feature_version} feature table under {settings.features_dir}")
        snapshot_id = snapshots[-1]
    table = Catalog(settings).feature_table_file(feature_set(champion.feature_version).view_name, snapshot_id)
    if not table.exists():
        raise FileNotFoundError(f"snapshot {snapshot_id} has no {champion.feature_version} feature table ({table})")
    return snapshot_id, table


def predict_snapshot(settings: Settings, champion: Champion, snapshot_id: str, table: Path) -> pd.DataFrame:
    """Every athlete of the table, scored point in time through the champion's FeatureService."""
    import pandas as pd

    from crossfit_mlops.features.feast_repo import get_store, historical_features

    ids = read_parquet(table, columns=[ENTITY_KEY])[ENTITY_KEY].drop_duplicates().sort_values()
    entity_df = pd.DataFrame({ENTITY_KEY: ids.to_numpy(), EVENT_TIMESTAMP: snapshot_time(snapshot_id)})
    features = historical_features(entity_df, champion.feature_version, settings=settings, store=get_store(settings))
    predictions = champion.model.predict(features[list(champion.columns)].astype("float64"))
    return pd.DataFrame(
        {
            ENTITY_KEY: features[ENTITY_KEY].astype("int64"),
            "prediction": predictions.astype("float64"),
            "model_name": champion.model_name,
            "model_version": champion.version,
            "feature_version": champion.feature_version,
            "snapshot_id": snapshot_id,
            "scored_at": pd.Timestamp(datetime.now(UTC)),
        }
    )


def log_batch_run(settings: Settings, champion: Champion, out: pd.DataFrame, summary: dict[str, Any], tags: dict[str, str]) -> str:
    """The summary run in the experiment ``crossfit_batch_inference``; returns its id."""
    import mlflow

    snapshot_id = summary["snapshot_id"]
    experiment_id = ensure_experiment(settings.mlflow_tracking_uri, BATCH_EXPERIMENT)
    stats = out["prediction"].describe(percentiles=[0.05, 0.5, 0.95])
    run_tags = {
        **tags,
        "snapshot_id": snapshot_id,
        "model_name": champion.model_name,
        "model_version": champion.version,
        "model_uri": champion.uri,
        "feature_version": champion.feature_version,
        "feature_service": champion.feature_service,
        "predictions_path": summary["path"],
    }
    with fluent(settings.mlflow_tracking_uri), mlflow.start_run(
        experiment_id=experiment_id, run_name=f"score-{snapshot_id}-v{champion.version}", tags=run_tags
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
                "scoring_seconds": summary["seconds"],
            }
        )
        mlflow.log_dict(summary, "batch_summary.json")
        return run.info.run_id


def score_snapshot(
    snapshot_id: str | None,
    run_key: str,
    settings: Settings | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Score all athletes of ``snapshot_id`` (None: the newest with features) with ``@champion``.

    Returns a summary (path, rows, model version, feature version, MLflow run id).
    """
    settings = settings or get_settings()
    mv = require_champion(settings.mlflow_tracking_uri, settings.registered_model_name)
    champion = load_version(settings.mlflow_tracking_uri, settings.registered_model_name, str(mv.version))
    snapshot_id, table = _feature_table(settings, champion, snapshot_id)
    started = time.perf_counter()
    out = predict_snapshot(settings, champion, snapshot_id, table)
    final = partition_dir(settings, snapshot_id, run_key)
    with publishing(final) as tmp:  # a rerun of the same run key replaces its own partition only
        out.to_parquet(tmp / PREDICTIONS_FILE, index=False)
    summary = {
        "snapshot_id": snapshot_id,
        "path": str(final / PREDICTIONS_FILE),
        "rows": len(out),
        "model_name": champion.model_name,
        "model_version": champion.version,
        "feature_version": champion.feature_version,
        "scored_at": out["scored_at"].iloc[0].isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 3),
    }
    summary["mlflow_run_id"] = log_batch_run(settings, champion, out, summary, tags or {})
    log.info("scored %d athletes of %s with %s v%s -> %s", len(out), snapshot_id, champion.model_name, champion.version, final)
    return summary
