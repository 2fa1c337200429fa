"""Alerts: what an operator must hear about, POSTed as JSON to the webhook the deployment sets.

``CROSSFIT_ALERT_WEBHOOK_URL`` (empty: off, the default) receives one POST per event::

    {"event": "challenger_rejected", "dag_id": "...", "run_id": "...", "task_id": "...",
     "summary": "one line", "details": {...}, "at": "2026-12-07T05:00:00+00:00"}

The DAGs send theirs through Airflow's notifier mechanism
(:class:`crossfit_mlops.ops.alert_notifier.WebhookNotifier`, a ``BaseNotifier``); any other code
calls :func:`notify` (the rollback does). A webhook that is down, refuses the request or answers
slowly never fails or holds the caller: the POST gives up after ``CROSSFIT_ALERT_TIMEOUT_S`` and the
failure is logged as a warning. The URL is never logged (a webhook URL often holds a token).

This module is on the bottom floor (it imports only the settings) so that every part of the
package may raise an alert; it imports nothing of Airflow.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from crossfit_mlops.settings import AlertSettings, Settings, read_section

log = logging.getLogger(__name__)

# --- the events, named once ----------------------------------------------------------------------
DAG_RUN_FAILED = "dag_run_failed"  # any of the pipeline's DAG runs ended failed
CHALLENGER_REJECTED = "challenger_rejected"  # the gate or a person kept the champion: version + reason
RETRAINING_TRIGGERED = "retraining_triggered"  # monitoring started a training run: snapshot + reasons
ROLLBACK = "rollback"  # @champion moved back to the champion before it
EVENTS = (DAG_RUN_FAILED, CHALLENGER_REJECTED, RETRAINING_TRIGGERED, ROLLBACK)


def payload(
    event: str, summary: str, details: dict[str, Any], *, dag_id: str | None = None, run_id: str | None = None,
    task_id: str | None = None, at: datetime | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The JSON body of one alert (``task_id`` only when a task raised it)."""
    if event not in EVENTS:
        raise ValueError(f"unknown alert event {event!r}; the events are {list(EVENTS)}")
    body: dict[str, Any] = {"event": event, "dag_id": dag_id, "run_id": run_id}
    if task_id:
        body["task_id"] = task_id
    at = at or datetime.now(UTC)
    return {**body, "summary": summary, "details": details, "at": at.isoformat()}


def _target(settings: Settings | None) -> tuple[str, float]:
    if settings is not None:
        return settings.alert_webhook_url, settings.alert_timeout_s
    section = read_section(AlertSettings)  # only this section: an alert does not need the rest
    return section.alert_webhook_url, section.alert_timeout_s


def notify(
    event: str, summary: str, details: dict[str, Any], settings: Settings | None = None, *,
    dag_id: str | None = None, run_id: str | None = None, task_id: str | None = None,
) -> bool:  # fmt: skip
    """POST one alert to the configured webhook. Returns whether the webhook took it (2xx).

    Off (no URL): nothing is sent, False. Down, refusing or slower than the timeout: a warning is
    logged, False; never an exception. An unknown ``event`` is a ValueError (a caller's bug), and a
    malformed URL is one naming ``CROSSFIT_ALERT_WEBHOOK_URL`` (raised by the settings).
    """
    from urllib.parse import urlsplit
    from urllib.request import Request, urlopen

    body = payload(event, summary, details, dag_id=dag_id, run_id=run_id, task_id=task_id)
    url, timeout = _target(settings)
    if not url:
        log.debug("alert %s not sent (CROSSFIT_ALERT_WEBHOOK_URL is unset): %s", event, summary)
        return False
    data = json.dumps(body, default=str).encode()
    request = Request(url, data=data, method="POST", headers={"Content-Type": "application/json", "User-Agent": "crossfit-mlops-alerts"})
    try:
        with urlopen(request, timeout=timeout) as response:  # http(s) only: the settings check the scheme
            status = response.status
    except Exception as exc:  # down, refused, an HTTP error, too slow: the caller goes on
        log.warning("alert %s not delivered to the webhook at %s: %s", event, urlsplit(url).netloc, exc)
        return False
    log.info("alert %s delivered (HTTP %s): %s", event, status, summary)
    return 200 <= status < 300
