"""Trigger a DAG through Airflow's REST API, follow the run, and summarize what it produced."""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import datetime
from typing import Any

from crossfit_mlops.dag_contract import MONITORING_DAG, TRAINING_DAG, MonitoringTasks, TrainingTasks
from crossfit_stack.airflow_rest import AirflowApiError, AirflowClient

log = logging.getLogger(__name__)


class PipelineFailed(RuntimeError):
    """The triggered DAG run did not succeed; the message names the failed tasks and the logs."""


def _seconds(ti: dict[str, Any]) -> float | None:
    if ti.get("duration") is not None:
        return float(ti["duration"])
    if ti.get("start_date") and ti.get("end_date"):
        return (datetime.fromisoformat(ti["end_date"]) - datetime.fromisoformat(ti["start_date"])).total_seconds()
    return None


def progress_line(tis: list[dict[str, Any]], started: float) -> str:
    counts = Counter(t["state"] or "none" for t in tis)
    running = [t["task_id"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else "") for t in tis if t["state"] == "running"]
    parts = [f"{state} {n}" for state, n in sorted(counts.items())]
    line = f"[{time.monotonic() - started:5.0f}s] " + ", ".join(parts)
    return line + (f" | running: {', '.join(running)}" if running else "")


def run_and_follow(client: AirflowClient, conf: dict[str, Any], echo=print, dag_id: str = TRAINING_DAG, timeout: float = 1800.0):
    """Unpause, trigger, print progress until the run ends. Returns ``(run_id, final run)``."""
    client.wait_for_dag(dag_id)
    client.unpause(dag_id)
    run_id = client.trigger(dag_id, conf)
    echo(f"triggered {dag_id} run {run_id} through the REST API")
    started = time.monotonic()
    run = client.wait_for_run(dag_id, run_id, timeout=timeout, on_change=lambda tis: echo(progress_line(tis, started)))
    return run_id, run


def failed_tasks(tis: list[dict[str, Any]]) -> list[str]:
    return [f"{t['task_id']}[{t['map_index']}]" if t["map_index"] >= 0 else t["task_id"] for t in tis if t["state"] in {"failed", "upstream_failed"}]


def require_success(client: AirflowClient, dag_id: str, run_id: str, run: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """The run's task instances; :class:`PipelineFailed` naming the failed tasks unless it succeeded.
    ``where`` says where the task logs are."""
    instances = client.task_instances(dag_id, run_id)
    if run["state"] != "success":
        raise PipelineFailed(
            f"run {run_id} ended {run['state']}; failed tasks: {', '.join(failed_tasks(instances)) or 'none'}; "
            f"task logs in {where}"
        )
    return instances


# --- the training run ----------------------------------------------------------------------------
def summarize(client: AirflowClient, run_id: str, dag_id: str = TRAINING_DAG) -> dict[str, Any]:
    """Leaderboard of the run's child runs (from MLflow) and the gate's decision (from XCom)."""
    parent = client.xcom(dag_id, run_id, TrainingTasks.START_MLFLOW_RUN)
    decision = client.xcom(dag_id, run_id, TrainingTasks.JUDGE)
    tis = client.task_instances(dag_id, run_id)
    durations = {t["map_index"]: _seconds(t) for t in tis if t["task_id"] == TrainingTasks.TRAIN}
    rows, failed = leaderboard(parent["tracking_uri"], parent["experiment_id"], parent["parent_run_id"], durations)
    return {"run_id": run_id, "parent": parent, "decision": decision, "leaderboard": rows, "failed": failed, "task_instances": tis}


def leaderboard(
    tracking_uri: str, experiment_id: str, parent_run_id: str, durations: dict[int, float | None]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The trained candidates ranked by validation RMSE, and the candidates that failed after their
    retries with their last try's error (the parent run's leaderboard lists both the same way).
    ``durations``: each candidate's task seconds by map index."""
    from crossfit_mlops.tracking.runs import child_runs
    from crossfit_mlops.training.fan_out import candidate_errors

    where = (tracking_uri, experiment_id, parent_run_id)
    finished = child_runs(*where)
    rows = []
    for r in finished:
        m, p, tags = r.data.metrics, r.data.params, r.data.tags
        rows.append(
            {
                "run": r.info.run_name,
                "feature_version": p.get("feature_version"),
                "model": p.get("model"),
                "val_rmse": m.get("val_rmse"),
                "val_r2": m.get("val_r2"),
                "g_co2eq": m.get("emissions_kg_co2eq", 0.0) * 1000,
                "fit_s": m.get("fit_seconds"),
                "task_s": durations.get(int(tags.get("airflow.map_index", -2))),
                "run_id": r.info.run_id,
            }
        )
    rows.sort(key=lambda row: row["val_rmse"])
    trained = {int(r.data.tags.get("airflow.map_index", -2)) for r in finished}
    names = {r.info.run_id: (r.info.run_name, r.data.tags.get("feature_version", "-")) for r in child_runs(*where, status="FAILED")}
    failed = []
    for index, (failed_run_id, error) in sorted(candidate_errors(*where).items()):
        if index not in trained:  # a try that failed before one that trained is not a failed candidate
            name, feature_version = names.get(failed_run_id, (f"train_candidate[{index}]", "-"))
            failed.append({"run": name, "feature_version": feature_version, "error": " ".join(error.split()), "run_id": failed_run_id})
    return rows, failed


def format_summary(summary: dict[str, Any], mlflow_ui: str, airflow_ui: str, model_name: str) -> str:
    lines = ["", f"{'run':<58} {'feat':<4} {'val RMSE':>8} {'val R²':>7} {'g CO2eq':>9} {'fit s':>6} {'task s':>6}"]
    for row in summary["leaderboard"]:
        task_s = f"{row['task_s']:6.1f}" if row["task_s"] is not None else "     -"
        lines.append(
            f"{row['run'][:58]:<58} {row['feature_version']:<4} {row['val_rmse']:8.1f} {row['val_r2']:7.3f} "
            f"{row['g_co2eq']:9.4f} {row['fit_s']:6.1f} {task_s}"
        )
    for row in summary.get("failed", []):
        lines.append(f"{row['run'][:58]:<58} {row['feature_version']:<4} FAILED: {row['error'][:300]}")
    d = summary["decision"]
    champion = d.get("champion") or {}
    lines += [
        "",
        f"gate: challenger v{d['challenger']['version']} ({d['challenger']['feature_version']}) test RMSE "
        f"{d['challenger']['rmse']:.1f}, R² {d['challenger']['r2']:.3f} -> {d['decision'].upper()}: {d['reason']}",
    ]
    if champion:
        lines.append(f"      champion v{champion['version']} on the same test set: RMSE {champion['rmse']:.1f}, R² {champion['r2']:.3f}")
    parent = summary["parent"]
    lines += [
        "",
        f"Airflow UI : {airflow_ui}/dags/{TRAINING_DAG}",
        f"MLflow runs: {mlflow_ui}/#/experiments/{parent['experiment_id']}/runs/{parent['parent_run_id']}",
        f"Registry   : {mlflow_ui}/#/models/{model_name}",
        "emissions are CodeCarbon estimates (no RAPL on a VM: CPU TDP x load + RAM size)",
    ]
    return "\n".join(lines)


# --- the monitoring run --------------------------------------------------------------------------
def monitoring_outcome(client: AirflowClient, run_id: str, instances: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What a finished monitoring run decided (``measure_drift``'s summary, from XCom) and whether it
    queued retraining; None when it was skipped for lack of a champion."""
    states = {ti["task_id"]: ti["state"] for ti in instances}
    if states.get(MonitoringTasks.FIND_CHAMPION) == "skipped":
        return None
    summary = client.xcom(MONITORING_DAG, run_id, MonitoringTasks.MEASURE)
    live = client.xcom(MONITORING_DAG, run_id, MonitoringTasks.MEASURE_LIVE) if states.get(MonitoringTasks.MEASURE_LIVE) == "success" else None
    return {**summary, "retraining_triggered": states.get(MonitoringTasks.TRIGGER_RETRAINING) == "success",
            "live": live, "rolled_back": states.get(MonitoringTasks.ROLLBACK) == "success"}  # fmt: skip


def format_live(live: dict[str, Any], rolled_back: bool) -> str:
    """The live lane's lines of ``monitor``'s output."""
    error = live.get("live") or {}
    said = f", live RMSE {error['rmse']:.1f} lb (test {live['test_rmse']:.1f})" if error and live.get("test_rmse") else ""
    action = "rolled back" if rolled_back else live["decision"]
    shadow = live.get("shadow")
    shadowed = (
        f"  shadow challenger v{live['challenger_version']}: live RMSE {shadow['challenger_rmse']:.1f} vs the champion's "
        f"{shadow['rmse_reference']:.1f} lb on the same {shadow['rows']} labelled requests: improvement {shadow['improvement']:+.1%} "
        f"(95% CI {shadow['improvement_low']:+.1%} to {shadow['improvement_high']:+.1%})\n"
        if shadow else ""
    )  # fmt: skip
    return (
        f"live traffic {live['since']} .. {live['until']}: {live['requests']} requests, {live['labelled']} labelled{said}: "
        f"{action.upper()}\n" + "".join(f"  - {reason}\n" for reason in [*live["reasons"], *([live["blocked"]] if live["blocked"] else [])])
        + shadowed + f"live dashboard: {live['path']}/dashboard.png\n"
    )  # fmt: skip


def format_monitoring(outcome: dict[str, Any], mlflow_ui: str, airflow_ui: str, experiment_id: str) -> str:
    retraining = f"triggered ({airflow_ui}/dags/{TRAINING_DAG})" if outcome["retraining_triggered"] else "not triggered"
    return (
        f"snapshot {outcome['snapshot_id']} vs {outcome['reference_snapshot_id']} (champion v{outcome['model_version']}, "
        f"{outcome['feature_version']}): {outcome['decision'].upper()}\n"
        + "".join(f"  - {reason}\n" for reason in outcome["reasons"])
        + f"  target drift {outcome['target_drift']['score']:.3f}, prediction drift {outcome['prediction_drift']['score']:.3f}\n"
        f"retraining: {retraining}\n"
        f"dashboard: {outcome['path']}/report.html and dashboard.png\n"
        + (format_live(outcome["live"], outcome["rolled_back"]) if outcome.get("live") else "")
        + f"MLflow: {mlflow_ui}/#/experiments/{experiment_id}/runs/{outcome['mlflow_run_id']}"
    )


__all__ = ["AirflowApiError", "PipelineFailed", "format_monitoring", "format_summary", "run_and_follow", "summarize"]
