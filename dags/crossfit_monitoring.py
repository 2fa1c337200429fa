"""
### crossfit_monitoring

Checks whether `crossfit_total_lift@champion` still fits **a later snapshot**, and triggers
`crossfit_training_pipeline` on that snapshot when it does not.

1. **resolve_run** fixes the snapshot (param, else the DAG run's date), the generator inputs and the
   retraining policy. **find_champion** finds `@champion`, its feature version and the test split it
   was judged on; without a champion the rest is **skipped** with the reason in the log.
2. **prepare_snapshot** ingests the snapshot (a provided `athletes.csv`, or generated with the same
   size and seed as the champion's, so it follows the same athletes; `season_shift` > 0 simulates a
   later season: lifts heavier by that share, body weight by half of it), validates and cleans it,
   and reads the champion's features point-in-time through its Feast FeatureService.
3. **measure_drift**: the champion predicts the held-out athletes of both snapshots (the test split,
   which no model trained on); Evidently measures the drift of every feature, the target and the
   predictions; the policy decides. Dashboard (`report.html`, `dashboard.png`, `summary.json`) under
   `monitoring/snapshot=<id>/run=<dag run id>/` of the state directory and in the MLflow experiment
   `crossfit_monitoring`; the champion's model version gets `monitoring.*` tags.
4. **decide** branches to **trigger_retraining** (a `crossfit_training_pipeline` run on this
   snapshot; alert `retraining_triggered`) or **no_retraining**; the reasons are in the summary
   either way. A failed run posts the alert `dag_run_failed` (alerts only with
   `CROSSFIT_ALERT_WEBHOOK_URL` set).

Retrain when the champion's RMSE rose more than `max_rmse_increase` (relative) or at least
`max_drift_share` of its features drifted (distance >= `drift_threshold`).

**Live traffic** (every run, also on its schedule: hourly, and whenever the online store gets a new
snapshot's features):

5. **measure_live_traffic** reads the API's prediction log since the previous live measurement
   (at most `live_window_hours` back): drift of the live requests against the champion's test split,
   its live error where labels have arrived (a later snapshot gives the athlete's actual total lift),
   the shadow challenger's live error on the same requests (paired, bootstrap interval) and the share
   of 5xx answers. Dashboard under `monitoring/live/run=<dag run id>/` and in `crossfit_monitoring`.
6. **judge_live** branches to **rollback_champion** (`@champion` back to the previous champion,
   recorded in the alias history with the evidence, and an alert) or **keep_serving**. Rollback when
   the live RMSE's interval is above the champion's test RMSE by `max_live_rmse_increase`, or at
   least `max_error_rate` of its requests were 5xx; never twice within `cooldown_hours`; off with
   `auto_rollback` (or `CROSSFIT_AUTO_ROLLBACK=false` for every run).

A scheduled or Asset-triggered run measures live traffic only (it has no snapshot of its own); a
manual run does both.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import (
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    dag,
    get_current_context,
    task,
)

from crossfit_mlops.alerts import DAG_RUN_FAILED, RETRAINING_TRIGGERED
from crossfit_mlops.dag_contract import (
    DAG_RUN_TIMEOUT,
    MONITORING_DAG,
    ONLINE_FEATURES,
    RETRAIN_RUN_PREFIX,
    SERVER_RETRIES,
    TRAINING_DAG,
    param_schemas,
    rows_schema,
    snapshot_schema,
    timeout,
)
from crossfit_mlops.dag_contract import MonitoringTasks as T
from crossfit_mlops.monitoring.policy import MonitoringPolicy, RollbackPolicy
from crossfit_mlops.ops.alert_notifier import WebhookNotifier
from crossfit_mlops.payloads import MonitoringRun
from crossfit_mlops.settings import task_settings
from crossfit_mlops.tracking import fail_fast_when_full

PARAMS = {
    "snapshot": Param(**snapshot_schema("ISO date of the new snapshot; empty = the DAG run's date (UTC).")),
    "rows": Param(
        **rows_schema(None, "Only for a new generated snapshot; empty = as many as the champion's snapshot had.")
    ),
    "seed": Param(
        None, type=["null", "integer"], title="Generator seed", description="Empty = the champion's snapshot's."
    ),
    "season_shift": Param(
        0.0,
        type="number",
        minimum=0,
        maximum=0.5,
        title="Simulated season shift",
        description="Only for a new generated snapshot: lifts heavier by this share, body weight by half of it.",
    ),
    # the retraining policy: defaults and bounds come from MonitoringPolicy
    **{name: Param(**schema) for name, schema in param_schemas(MonitoringPolicy).items()},
    "retrain": Param(True, type="boolean", title="Trigger the training pipeline when the policy says so"),
    "live_window_hours": Param(
        24.0, type="number", exclusiveMinimum=0, maximum=720, title="Live traffic: hours to look back at most",
        description="The live window starts where the previous live measurement stopped, at most this far back.",
    ),
    # the rollback policy: defaults and bounds come from RollbackPolicy
    **{name: Param(**schema) for name, schema in param_schemas(RollbackPolicy).items()},
    "auto_rollback": Param(True, type="boolean", title="Roll @champion back when the live policy says so"),
}
# hourly, and when materialize_online_store loads a new snapshot's features (its labels arrive)
SCHEDULE = AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 * * * *", timezone="UTC"), assets=[ONLINE_FEATURES.as_asset()])


@task(task_id=T.RESOLVE_RUN, **timeout("quick"))
def resolve_run() -> dict[str, Any]:
    """Fix this run's plain inputs: the snapshot id, the generator inputs, the policy."""
    from crossfit_mlops.storage import check_snapshot_id

    context = get_current_context()
    params, dag_run = context["params"], context["dag_run"]
    when = dag_run.logical_date or dag_run.run_after
    policy = MonitoringPolicy(**{name: params[name] for name in param_schemas(MonitoringPolicy)})
    return MonitoringRun(
        snapshot_id=check_snapshot_id(params["snapshot"] or when.strftime("%Y-%m-%d")),
        rows=params["rows"],
        seed=params["seed"],
        season_shift=float(params["season_shift"]),
        policy=policy.as_dict(),
        retrain_allowed=bool(params["retrain"]),
        tags={"airflow.dag_id": dag_run.dag_id, "airflow.run_id": dag_run.run_id},
        snapshot_lane=str(dag_run.run_type).lower().endswith("manual"),
        until=pendulum.now("UTC").isoformat(),
        live_window_hours=float(params["live_window_hours"]),
        rollback_policy=RollbackPolicy(**{name: params[name] for name in param_schemas(RollbackPolicy)}).as_dict(),
        rollback_allowed=bool(params["auto_rollback"]),
    ).to_xcom()


@task(task_id=T.FIND_CHAMPION, **SERVER_RETRIES, **timeout("quick"))
@fail_fast_when_full
def find_champion() -> dict[str, Any]:
    """@champion and the test split it was judged on; skipped (with the reason) when there is none."""
    from airflow.exceptions import AirflowSkipException

    from crossfit_mlops.monitoring.monitor import champion_reference
    from crossfit_mlops.tracking.aliases import NoChampion

    try:
        return champion_reference(task_settings())
    except NoChampion as exc:
        raise AirflowSkipException(f"nothing to monitor: {exc}") from exc


@task(task_id=T.PREPARE, **timeout("monitor"))
def prepare_snapshot(run: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """Ingest, validate, clean; the champion's features of every athlete, split like training's.
    Skipped in a scheduled or Asset-triggered run (live traffic only)."""
    from airflow.exceptions import AirflowSkipException

    from crossfit_mlops.monitoring.monitor import prepare_snapshot as prepare

    spec = MonitoringRun.from_xcom(run)
    if not spec.snapshot_lane:
        raise AirflowSkipException("a scheduled or Asset-triggered run measures live traffic only")
    return prepare(
        spec.snapshot_id,
        reference,
        settings=task_settings(),
        rows=spec.rows,
        seed=spec.seed,
        season_shift=spec.season_shift,
    )


@task(task_id=T.MEASURE, **SERVER_RETRIES, **timeout("monitor"))
@fail_fast_when_full
def measure_drift(run: dict[str, Any], reference: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """Evidently drift + the champion's error on both held-out sets; dashboard; the decision."""
    from crossfit_mlops.monitoring.monitor import measure

    spec = MonitoringRun.from_xcom(run)
    return measure(
        spec.snapshot_id,
        reference,
        current,
        run_key=spec.run_id,
        policy=MonitoringPolicy(**spec.policy),
        settings=task_settings(),
        tags=spec.tags,
    )


@task.branch(task_id=T.DECIDE, **timeout("quick"))
def decide(run: dict[str, Any], summary: dict[str, Any]) -> str:
    """Retrain or not: the branch taken is the decision, visible in the graph."""
    import logging

    log = logging.getLogger(__name__)
    for reason in summary["reasons"]:
        log.info("%s", reason)
    if summary["retrain"] and not MonitoringRun.from_xcom(run).retrain_allowed:
        log.warning("the policy says retrain, but this run's `retrain` param is off")
        return T.NO_RETRAINING
    return T.TRIGGER_RETRAINING if summary["retrain"] else T.NO_RETRAINING


@task(task_id=T.NO_RETRAINING, **timeout("quick"))
def no_retraining(run: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """@champion stays as it is; why is in the summary (and on its model version's tags)."""
    suppressed = summary["retrain"] and not MonitoringRun.from_xcom(run).retrain_allowed
    return {"decision": "retraining disabled by param" if suppressed else summary["decision"], "reasons": summary["reasons"]}


@task(task_id=T.MEASURE_LIVE, trigger_rule="all_done", **SERVER_RETRIES, **timeout("monitor"))
@fail_fast_when_full
def measure_live_traffic(run: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, Any]:
    """The prediction log since the last look: drift, live error where labels arrived, the shadow
    challenger paired with the champion, 5xx share; the rollback policy's decision. Runs after the
    snapshot lane (its labels count), whatever that lane did; skipped without a champion."""
    from datetime import datetime

    from airflow.exceptions import AirflowSkipException

    from crossfit_mlops.monitoring.live import measure_live
    from crossfit_mlops.registry.card import write_card

    if not reference:
        raise AirflowSkipException("nothing to monitor: no @champion")
    spec, settings = MonitoringRun.from_xcom(run), task_settings()
    summary = measure_live(
        settings,
        datetime.fromisoformat(spec.until),
        RollbackPolicy(**spec.rollback_policy),
        run_key=spec.run_id,
        drift_threshold=spec.policy["drift_threshold"],
        max_hours=spec.live_window_hours,
        tags=spec.tags,
    )
    if summary["shadow"]:  # the shadow challenger's card shows the live evidence
        write_card(settings.mlflow_tracking_uri, summary["model_name"], summary["challenger_version"])
    return summary


@task.branch(task_id=T.JUDGE_LIVE, **timeout("quick"))
def judge_live(run: dict[str, Any], live: dict[str, Any]) -> str:
    """Roll back or keep serving: the branch taken is the decision."""
    import logging

    log = logging.getLogger(__name__)
    for reason in [*live["reasons"], *([live["blocked"]] if live["blocked"] else [])]:
        log.info("%s", reason)
    if not live["rollback"]:
        return T.KEEP_SERVING
    if not MonitoringRun.from_xcom(run).rollback_allowed or not task_settings_allow_rollback():
        log.warning("the live policy says roll back, but automated rollback is off (auto_rollback / CROSSFIT_AUTO_ROLLBACK)")
        return T.KEEP_SERVING
    return T.ROLLBACK


def task_settings_allow_rollback() -> bool:
    from crossfit_mlops.settings import MonitoringSettings, read_section

    return read_section(MonitoringSettings).auto_rollback


@task(task_id=T.ROLLBACK, **SERVER_RETRIES, **timeout("quick"))
@fail_fast_when_full
def rollback_champion(run: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """``@champion`` back to the previous champion, with the evidence in the alias history; an alert."""
    from crossfit_mlops.alerts import ROLLBACK, notify
    from crossfit_mlops.monitoring.live import rollback_reason
    from crossfit_mlops.registry.card import write_card
    from crossfit_mlops.registry.promotion import rollback_on_evidence

    spec, settings = MonitoringRun.from_xcom(run), task_settings()
    done = rollback_on_evidence(
        settings.mlflow_tracking_uri, live["model_name"], live["model_version"], rollback_reason(live),
        evidence_run_id=live["mlflow_run_id"], actor=f"airflow:{spec.tags['airflow.dag_id']}/{spec.run_id}",
    )  # fmt: skip
    write_card(settings.mlflow_tracking_uri, live["model_name"], done["from_version"])  # its card says why
    notify(
        ROLLBACK,
        f"{live['model_name']}: @champion rolled back from v{done['from_version']} to v{done['to_version']}",
        {**done, "model_name": live["model_name"]},
        settings,
        dag_id=spec.tags["airflow.dag_id"], run_id=spec.run_id, task_id=T.ROLLBACK,
    )
    return done


@task(task_id=T.KEEP_SERVING, **timeout("quick"))
def keep_serving(live: dict[str, Any]) -> dict[str, Any]:
    """``@champion`` stays; why is in the live summary (and on its model version's tags)."""
    return {"decision": live["decision"], "reasons": live["reasons"], "blocked": live["blocked"]}


@dag(
    dag_id=MONITORING_DAG,
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=DAG_RUN_TIMEOUT,
    tags=["crossfit", "monitoring", "evidently"],
    doc_md=__doc__,
    default_args={"owner": "crossfit-mlops", "retries": 0},
    on_failure_callback=WebhookNotifier(DAG_RUN_FAILED),  # the alert (off unless CROSSFIT_ALERT_WEBHOOK_URL)
    # the retraining trigger's conf is an XCom dict: rendered as a dict, not as its string
    render_template_as_native_obj=True,
    params=PARAMS,
)
def crossfit_monitoring():
    trigger_retraining = TriggerDagRunOperator(
        task_id=T.TRIGGER_RETRAINING,
        trigger_dag_id=TRAINING_DAG,
        trigger_run_id=RETRAIN_RUN_PREFIX + "{{ run_id }}",
        conf=f"{{{{ ti.xcom_pull(task_ids='{T.MEASURE}')['retrain_conf'] }}}}",
        skip_when_already_exists=True,
        wait_for_completion=False,
        execution_timeout=timeout("quick")["execution_timeout"],
        # alert retraining_triggered with the snapshot and the policy's reasons (from measure_drift)
        on_success_callback=WebhookNotifier(RETRAINING_TRIGGERED, result_of=T.MEASURE),
        doc_md="Starts `crossfit_training_pipeline` on this snapshot (same training sample size as the champion's).",
    )

    run = resolve_run()
    reference = find_champion()
    prepared = prepare_snapshot(run, reference)
    summary = measure_drift(run, reference, prepared)
    decide(run, summary) >> [trigger_retraining, no_retraining(run, summary)]
    live = measure_live_traffic(run, reference)
    prepared >> live  # a snapshot this run ingests brings labels for the live predictions
    judge_live(run, live) >> [rollback_champion(run, live), keep_serving(live)]


crossfit_monitoring()
