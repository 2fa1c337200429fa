"""
### crossfit_batch_inference

Scores **every athlete** of a snapshot with the model behind `crossfit_total_lift@champion`.

- **Schedule**: data-aware, on either Asset: `crossfit_online_features` (updated by
  `crossfit_training_pipeline.materialize_online_store`: new features, the snapshot comes with the
  event) or `crossfit_champion_model` (updated by `promote_challenger`: a new champion rescoring
  the newest snapshot). Trigger it by hand too (the `snapshot` param; empty = the newest snapshot
  with features).
- **resolve_snapshot** picks the snapshot; **score_snapshot** reads its features point-in-time
  through the champion's FeatureService (the feature version recorded on the model version),
  predicts, and writes `data/predictions/snapshot=<id>/run=<dag run id>/predictions.parquet`
  (athlete_id, prediction, model version, feature version, snapshot id, scored_at); a summary run
  goes to the MLflow experiment `crossfit_batch_inference`.
- Without a champion (the very first pipeline run materializes before anything is promoted) the
  scoring task is **skipped** with the reason in its log; nothing is written.
- A failed run posts the alert `dag_run_failed` (only with `CROSSFIT_ALERT_WEBHOOK_URL` set).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from crossfit_mlops.alerts import DAG_RUN_FAILED
from crossfit_mlops.dag_contract import (
    BATCH_DAG,
    CHAMPION_MODEL,
    DAG_RUN_TIMEOUT,
    ONLINE_FEATURES,
    SERVER_RETRIES,
    timeout,
)
from crossfit_mlops.dag_contract import BatchTasks as T
from crossfit_mlops.ops.alert_notifier import WebhookNotifier
from crossfit_mlops.settings import task_settings
from crossfit_mlops.tracking import fail_fast_when_full


@task(task_id=T.RESOLVE_SNAPSHOT, **timeout("quick"))
def resolve_snapshot() -> str | None:
    """The snapshot to score: the param, else the triggering asset event's, else None (newest)."""
    context = get_current_context()
    chosen = (context["params"].get("snapshot") or "").strip()
    if chosen:
        return chosen
    events = context.get("triggering_asset_events") or {}
    for asset_events in events.values():
        for event in reversed(list(asset_events)):
            snapshot = (event.extra or {}).get("snapshot_id")
            if snapshot:
                return snapshot
    return None


@task(task_id=T.SCORE, **SERVER_RETRIES, **timeout("data"))
@fail_fast_when_full
def score_snapshot(snapshot_id: str | None) -> dict[str, Any]:
    """Score the snapshot with @champion; write the parquet partition; log the MLflow summary run."""
    from airflow.exceptions import AirflowSkipException

    from crossfit_mlops.serving.batch import score_snapshot as score
    from crossfit_mlops.tracking.aliases import NoChampion

    context = get_current_context()
    tags = {"airflow.dag_id": context["dag"].dag_id, "airflow.run_id": context["run_id"]}
    try:
        return score(snapshot_id, context["run_id"], settings=task_settings(), tags=tags)
    except NoChampion as exc:
        raise AirflowSkipException(f"nothing to score with: {exc}") from exc


@dag(
    dag_id=BATCH_DAG,
    schedule=(ONLINE_FEATURES.as_asset() | CHAMPION_MODEL.as_asset()),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=DAG_RUN_TIMEOUT,
    tags=["crossfit", "inference"],
    doc_md=__doc__,
    on_failure_callback=WebhookNotifier(DAG_RUN_FAILED),  # the alert (off unless CROSSFIT_ALERT_WEBHOOK_URL)
    params={
        "snapshot": Param(
            None,
            type=["null", "string"],
            title="Snapshot id",
            description="YYYY-MM-DD; empty = from the asset event, else the newest with features",
        ),
    },
)
def crossfit_batch_inference():
    score_snapshot(resolve_snapshot())


crossfit_batch_inference()
