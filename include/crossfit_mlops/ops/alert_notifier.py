"""The Airflow side of the alerts: a ``BaseNotifier`` the DAGs hang on their callbacks.

- ``WebhookNotifier(DAG_RUN_FAILED)`` as a DAG's ``on_failure_callback``: the run, why it ended
  (Airflow's reason) and the task that ended it.
- ``WebhookNotifier(event, result_of=<task id>)`` as a task's ``on_success_callback``: the alert
  describes that task's XCom result (a rejected challenger's verdict, monitoring's summary); a
  result that is not the event (a challenger that already is the champion) sends nothing.

The POST itself is :func:`crossfit_mlops.alerts.notify`: off without ``CROSSFIT_ALERT_WEBHOOK_URL``,
and a webhook that is down or slow is a logged warning, never a failed task. Imported by the DAG
files only (it subclasses Airflow's ``BaseNotifier``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from airflow.sdk.bases.notifier import BaseNotifier

from crossfit_mlops.alerts import CHALLENGER_REJECTED, EVENTS, RETRAINING_TRIGGERED, notify


def describe_rejection(verdict: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """A gate's or a person's rejection of the challenger (None: not a rejection, e.g. unchanged)."""
    if verdict.get("decision") != "rejected":
        return None
    version, champion = verdict["challenger"]["version"], (verdict.get("champion") or {}).get("version")
    details = {"model": verdict["model_name"], "version": str(version), "reason": verdict["reason"],
               "champion_version": None if champion is None else str(champion)}  # fmt: skip
    return f"{verdict['model_name']} v{version} not promoted: {verdict['reason']}", details


def describe_retraining(summary: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """Monitoring's summary of a run that triggered retraining."""
    if not summary.get("retrain"):
        return None
    snapshot, reasons = summary["snapshot_id"], list(summary.get("reasons") or [])
    details = {
        "snapshot": snapshot, "model": summary.get("model_name"), "model_version": summary.get("model_version"),
        "reasons": reasons, "retrain_conf": summary.get("retrain_conf"),
        "rmse_increase": summary.get("rmse_increase"), "drift_share": summary.get("drift_share"),
    }  # fmt: skip
    return f"retraining {summary.get('model_name')} on snapshot {snapshot}: {'; '.join(reasons)}", details


DESCRIBERS: dict[str, Callable[[Mapping[str, Any]], tuple[str, dict[str, Any]] | None]] = {
    CHALLENGER_REJECTED: describe_rejection,
    RETRAINING_TRIGGERED: describe_retraining,
}


class WebhookNotifier(BaseNotifier):
    """POST one alert of ``event`` from an Airflow callback (DAG or task); see the module."""

    def __init__(self, event: str, result_of: str | None = None) -> None:
        if event not in EVENTS:  # a typo in a DAG file fails at parse time, not at the first alert
            raise ValueError(f"unknown alert event {event!r}; the events are {list(EVENTS)}")
        if result_of is not None and event not in DESCRIBERS:
            raise ValueError(f"alert event {event!r} does not describe a task's result")
        super().__init__()
        self.event, self.result_of = event, result_of

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Nothing to render: this notifier has no templated fields. Skipping the render also lets
        a DAG callback run under ``dag.test()`` / ``airflow dags test``, whose context holds a
        ``SerializedDAG`` without ``get_template_env`` (apache/airflow#64649, open in Airflow 3.3;
        the fix proposed upstream, apache/airflow#64993, does the same)."""
        if self.template_fields:
            super().render_template_fields(context, jinja_env)

    def notify(self, context: Any) -> None:
        ti, dag = context.get("ti"), context.get("dag")
        dag_id = getattr(dag, "dag_id", None) or getattr(ti, "dag_id", None)
        run_id = context.get("run_id") or getattr(ti, "run_id", None)
        if self.result_of is None:  # a DAG run's end: Airflow's reason and the task that ended it
            failed_task = getattr(ti, "task_id", None)
            summary = f"{dag_id} run {run_id} failed" + (f" at {failed_task}" if failed_task else "")
            details = {"reason": str(context.get("reason") or ""), "failed_task": failed_task}
            notify(self.event, summary, details, dag_id=dag_id, run_id=run_id)
            return
        described = DESCRIBERS[self.event](ti.xcom_pull(task_ids=self.result_of) or {})
        if described is not None:
            notify(self.event, *described, dag_id=dag_id, run_id=run_id, task_id=ti.task_id)
