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


def start_parent_run(tracking_uri: str, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    """Create the DAG run's parent run (status RUNNING) and return its id."""
    run = client(tracking_uri).create_run(experiment_id, run_name=run_name, tags=tags)
    log.info("MLflow parent run %s (%s) in experiment %s", run.info.run_id, run_name, experiment_id)
    return run.info.run_id


def finish_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    client(tracking_uri).set_terminated(run_id, status=status)


def child_runs(tracking_uri: str, experiment_id: str, parent_run_id: str, status: str | None = "FINISHED"):
    """The child runs of a parent run (optionally only those with ``status``)."""
    query = f"tags.`{PARENT_TAG}` = '{parent_run_id}'"
    if status:
        query += f" and attributes.status = '{status}'"
    return client(tracking_uri).search_runs([experiment_id], filter_string=query, max_results=1000)


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
    from crossfit_mlops.tracking.registry import GATE_TAGS

    c = client(tracking_uri)
    c.set_tag(parent_run_id, f"{GATE_TAGS}.decision", decision["decision"])
    c.set_tag(parent_run_id, f"{GATE_TAGS}.reason", decision["reason"])
    c.set_tag(parent_run_id, f"{GATE_TAGS}.challenger_version", decision["challenger"]["version"])
    finish_run(tracking_uri, parent_run_id)
    return {"decision": decision["decision"], "reason": decision["reason"], "version": decision["challenger"]["version"]}
