"""Experiments and runs: the experiment created once, the DAG run's parent run, its children."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

from crossfit_mlops.tracking import client

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"


def ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None = None) -> str:
    """The experiment's id, creating it if needed (safe if two processes race to create it)."""
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    found = c.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            c.restore_experiment(found.experiment_id)
        return found.experiment_id
    try:
        # experimentKind: MLflow 3's UI opens the experiment on its training runs, not on the GenAI
        # (traces) overview it shows for experiments of unknown kind
        tags = {"project": "crossfit-mlops", "mlflow.experimentKind": "custom_model_development"}
        return c.create_experiment(name, artifact_location=artifact_location, tags=tags)
    except MlflowException:  # created meanwhile by someone else
        found = c.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


RUN_KEY_TAG = "airflow.run_id"


def start_parent_run(tracking_uri: str, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    """The DAG run's parent run (status RUNNING): created once per Airflow run.

    A retried or cleared task finds the parent run its Airflow run already has (by the
    ``airflow.run_id`` and ``pipeline`` tags) and reopens it instead of creating a second one.
    """
    c = client(tracking_uri)
    query = " and ".join(f"tags.`{k}` = '{tags[k]}'" for k in (RUN_KEY_TAG, "pipeline") if k in tags)
    found = c.search_runs([experiment_id], filter_string=query, max_results=2) if query else []
    if found:
        run_id = found[0].info.run_id
        c.update_run(run_id, status="RUNNING")
        log.info("MLflow parent run %s (%s) reopened for a rerun", run_id, run_name)
        return run_id
    run = c.create_run(experiment_id, run_name=run_name, tags=tags)
    log.info("MLflow parent run %s (%s) in experiment %s", run.info.run_id, run_name, experiment_id)
    return run.info.run_id


def supersede_children(tracking_uri: str, experiment_id: str, parent_run_id: str, tags: dict[str, str]) -> list[str]:
    """Before a (re)try of one fan-out task: end what earlier tries of the same task left.

    A child run of ``parent_run_id`` with the same ``tags`` (task id, map index) that is still
    RUNNING was aborted (a killed process): it is marked FAILED, never left running. A FINISHED one
    belongs to an earlier try of a cleared task: it is deleted (MLflow keeps it restorable), so the
    parent shows one run per grid entry. Returns the ids it ended.
    """
    c = client(tracking_uri)
    query = " and ".join([f"tags.`{PARENT_TAG}` = '{parent_run_id}'", *(f"tags.`{k}` = '{v}'" for k, v in tags.items())])
    ended = []
    for run in c.search_runs([experiment_id], filter_string=query, max_results=100):
        if run.info.status in {"RUNNING", "SCHEDULED"}:
            c.set_terminated(run.info.run_id, status="FAILED")
            c.set_tag(run.info.run_id, "aborted", "true: its task process ended before the run did")
        elif run.info.status == "FINISHED":
            c.delete_run(run.info.run_id)
        else:
            continue
        ended.append(run.info.run_id)
        log.warning("child run %s of an earlier try (%s) ended", run.info.run_id, run.info.status)
    return ended


def finish_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    client(tracking_uri).set_terminated(run_id, status=status)


def fail_parent_runs(tracking_uri: str, experiment_name: str, airflow_run_id: str, pipeline: str) -> list[str]:
    """Mark FAILED every parent run of this Airflow run that is still RUNNING, found by its
    ``airflow.run_id`` and ``pipeline`` tags: a failure callback that has no parent id in XCom
    (the task that records it failed, or had not finished) still leaves no parent RUNNING."""
    c = client(tracking_uri)
    experiment = c.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    query = f"tags.`{RUN_KEY_TAG}` = '{airflow_run_id}' and tags.`pipeline` = '{pipeline}' and attributes.status = 'RUNNING'"
    failed = [run.info.run_id for run in c.search_runs([experiment.experiment_id], filter_string=query, max_results=10)]
    for run_id in failed:
        c.set_terminated(run_id, status="FAILED")
    return failed


def child_runs(tracking_uri: str, experiment_id: str, parent_run_id: str, status: str | None = "FINISHED"):
    """The child runs of a parent run (optionally only those with ``status``)."""
    query = f"tags.`{PARENT_TAG}` = '{parent_run_id}'"
    if status:
        query += f" and attributes.status = '{status}'"
    return client(tracking_uri).search_runs([experiment_id], filter_string=query, max_results=1000)


def code_version(package_root: Path | None = None) -> str:
    """A digest of the package's source (every ``*.py`` under ``crossfit_mlops``): the code that
    trained a model, also where no git checkout exists (a container image) or the tree is dirty."""
    import hashlib

    root = package_root or Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def git_commit(root: Path) -> str:
    """The project's git commit, or ``"unknown"`` outside a git checkout (a container image)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def close_parent_run(tracking_uri: str, parent_run_id: str, decision: dict[str, Any]) -> dict[str, Any]:
    """Record the gate's outcome (a judged decision) on the DAG run's parent run and finish it."""
    from crossfit_mlops.tracking.aliases import GATE_TAGS

    c = client(tracking_uri)
    c.set_tag(parent_run_id, f"{GATE_TAGS}.decision", decision["decision"])
    c.set_tag(parent_run_id, f"{GATE_TAGS}.reason", decision["reason"])
    c.set_tag(parent_run_id, f"{GATE_TAGS}.challenger_version", decision["challenger"]["version"])
    finish_run(tracking_uri, parent_run_id)
    return {"decision": decision["decision"], "reason": decision["reason"], "version": decision["challenger"]["version"]}
