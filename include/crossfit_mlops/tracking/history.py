"""The alias history: every move of ``@champion`` / ``@challenger``, and every gate decision.

MLflow keeps only where an alias points now (mlflow#2169 has asked for its history since 2019).
Each event here is a finished run of the experiment ``crossfit_registry_history`` in the same
tracking server, so it is as durable as the registry itself, lives in its backend (SQLite,
PostgreSQL), and is visible in the MLflow UI. Its tags say what happened: the event, the alias,
the model, from which version to which, who or what did it, and why.

Events: ``registration`` (@challenger moved to a new version), ``promotion`` and ``rollback``
(@champion moved), ``rejection`` (the gate kept the champion), ``approval`` / ``approval_rejected``
/ ``approval_timeout`` (a person's decision on a challenger, or the lack of one).
"""

from __future__ import annotations

import getpass
import logging
import time
from datetime import UTC, datetime
from typing import Any

from crossfit_mlops.tracking import client
from crossfit_mlops.tracking.aliases import CHAMPION
from crossfit_mlops.tracking.runs import ensure_experiment

log = logging.getLogger(__name__)

HISTORY_EXPERIMENT = "crossfit_registry_history"
EVENTS = ("registration", "promotion", "rejection", "rollback", "approval", "approval_rejected", "approval_timeout")
FIELDS = ("event", "alias", "model_name", "from_version", "to_version", "version", "actor", "reason")


def cli_actor() -> str:
    """Who runs a command by hand: ``cli:<user>``."""
    return f"cli:{getpass.getuser()}"


def record(
    tracking_uri: str,
    model_name: str,
    event: str,
    alias: str,
    from_version: str | None,
    to_version: str | None,
    actor: str,
    reason: str,
    version: str | None = None,
) -> str:
    """Append one event; returns its run id. ``actor`` names who or what did it (an Airflow run,
    a CLI user, an approver); ``version`` is the version the event is about (default: the one
    the alias moved to; for a rejection, the rejected challenger, while the alias stays)."""
    if event not in EVENTS:
        raise ValueError(f"unknown history event {event!r}; known: {EVENTS}")
    c = client(tracking_uri)
    experiment_id = ensure_experiment(tracking_uri, HISTORY_EXPERIMENT)
    values = {"event": event, "alias": alias, "model_name": model_name, "from_version": from_version or "none",
              "to_version": to_version or "none", "version": str(version or to_version or "none"),
              "actor": actor, "reason": reason[:4900]}  # fmt: skip
    run = c.create_run(
        experiment_id,
        start_time=int(time.time() * 1000),
        run_name=f"{event}: @{alias} v{values['from_version']} -> v{values['to_version']}",
        tags={f"history.{k}": v for k, v in values.items()},
    )
    c.set_terminated(run.info.run_id)
    log.info("history: %s @%s of %s v%s -> v%s by %s", event, alias, model_name, from_version, to_version, actor)
    return run.info.run_id


def history(tracking_uri: str, model_name: str) -> list[dict[str, Any]]:
    """Every recorded event of ``model_name``, oldest first."""
    c = client(tracking_uri)
    experiment = c.get_experiment_by_name(HISTORY_EXPERIMENT)
    if experiment is None:
        return []
    runs = c.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`history.model_name` = '{model_name}'",
        order_by=["attributes.start_time ASC"], max_results=5000,
    )  # fmt: skip
    return [
        {"at": datetime.fromtimestamp(r.info.start_time / 1000, UTC).isoformat(timespec="seconds"),
         **{k: r.data.tags.get(f"history.{k}") for k in FIELDS}, "run_id": r.info.run_id}
        for r in runs
    ]  # fmt: skip


def champion_since(tracking_uri: str, model_name: str, version: str) -> dict[str, Any] | None:
    """The event that put ``version`` at ``@champion`` last (when, by whom, why), or None."""
    moves = [e for e in history(tracking_uri, model_name) if e["alias"] == CHAMPION and e["event"] in {"promotion", "rollback", "approval"}]
    current = [e for e in moves if e["to_version"] == str(version)]
    return current[-1] if current else None
