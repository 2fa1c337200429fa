"""Alerts: off by default, POSTed as JSON to a real receiver when on, and a webhook that is down,
failing or slow never raises nor holds the caller. The notifier the DAGs use describes its task's
result (and stays quiet when the result is not the event)."""

from __future__ import annotations

import logging
import time

import pytest

from crossfit_mlops.alerts import (
    CHALLENGER_REJECTED,
    DAG_RUN_FAILED,
    EVENTS,
    RETRAINING_TRIGGERED,
    ROLLBACK,
    notify,
    payload,
)
from crossfit_mlops.settings import get_settings
from tests.support.services import free_port
from tests.support.webhook import webhook_receiver


def _settings(url: str = "", timeout: float = 5.0):
    return get_settings({"CROSSFIT_ALERT_WEBHOOK_URL": url, "CROSSFIT_ALERT_TIMEOUT_S": str(timeout)})


def test_the_events_are_named_once():
    assert EVENTS == (DAG_RUN_FAILED, CHALLENGER_REJECTED, RETRAINING_TRIGGERED, ROLLBACK)
    with pytest.raises(ValueError, match="unknown alert event 'rollbak'"):
        payload("rollbak", "x", {})


def test_alerts_are_off_by_default_and_send_nothing(monkeypatch):
    monkeypatch.delenv("CROSSFIT_ALERT_WEBHOOK_URL", raising=False)
    assert get_settings({}).alert_webhook_url == ""
    with webhook_receiver() as receiver:
        assert notify(ROLLBACK, "rolled back", {"from": "2", "to": "1"}) is False
        assert notify(ROLLBACK, "rolled back", {"from": "2", "to": "1"}, settings=_settings()) is False
        time.sleep(0.2)
        assert receiver.posts == []


def test_an_alert_is_posted_as_json_with_its_fields():
    with webhook_receiver() as receiver:
        sent = notify(ROLLBACK, "@champion back to v1", {"from_version": "2", "to_version": "1"}, settings=_settings(receiver.url),
                      dag_id="d", run_id="r", task_id="t")  # fmt: skip
        assert sent is True
        (post,) = receiver.posts
        assert post["event"] == ROLLBACK and post["summary"] == "@champion back to v1"
        assert (post["dag_id"], post["run_id"], post["task_id"]) == ("d", "r", "t")
        assert post["details"] == {"from_version": "2", "to_version": "1"}
        assert post["at"].endswith("+00:00")
        assert receiver.headers[0]["Content-Type"] == "application/json"


def test_the_environment_switches_alerts_on(monkeypatch):
    with webhook_receiver() as receiver:
        monkeypatch.setenv("CROSSFIT_ALERT_WEBHOOK_URL", receiver.url)
        assert notify(ROLLBACK, "on", {}) is True
        assert [p["summary"] for p in receiver.posts] == ["on"]
        assert "task_id" not in receiver.posts[0], "task_id only when a task raised it"


def test_a_webhook_that_is_down_is_a_warning_not_an_error(caplog):
    url = f"http://127.0.0.1:{free_port()}/alerts?token=secret"  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="crossfit_mlops.alerts"):
        assert notify(DAG_RUN_FAILED, "run failed", {}, settings=_settings(url)) is False
    assert "alert dag_run_failed not delivered to the webhook at 127.0.0.1:" in caplog.text
    assert "secret" not in caplog.text, "the URL (which may hold a token) is not logged"


def test_a_webhook_that_answers_an_error_is_a_warning(caplog):
    with webhook_receiver(status=500) as receiver, caplog.at_level(logging.WARNING, logger="crossfit_mlops.alerts"):
        assert notify(DAG_RUN_FAILED, "run failed", {}, settings=_settings(receiver.url)) is False
        assert len(receiver.posts) == 1
    assert "HTTP Error 500" in caplog.text


def test_a_slow_webhook_does_not_hold_the_caller(caplog):
    with webhook_receiver(delay_s=5.0) as receiver, caplog.at_level(logging.WARNING, logger="crossfit_mlops.alerts"):
        started = time.monotonic()
        assert notify(DAG_RUN_FAILED, "run failed", {}, settings=_settings(receiver.url, timeout=0.5)) is False
        assert time.monotonic() - started < 3.0
    assert "timed out" in caplog.text


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "example.com/hook", "http://", "https:///path"])
def test_a_url_that_is_not_http_is_refused_naming_the_variable(url):
    with pytest.raises(ValueError, match=r"environment variable CROSSFIT_ALERT_WEBHOOK_URL must be an http:// or https:// URL"):
        _settings(url)


def test_a_timeout_that_is_not_positive_is_refused_naming_the_variable():
    with pytest.raises(ValueError, match="CROSSFIT_ALERT_TIMEOUT_S must be a number of seconds greater than 0"):
        _settings("http://127.0.0.1:1/x", timeout=0)


def test_the_settings_carry_the_alerts_to_child_processes():
    settings = _settings("https://hooks.example.com/x", timeout=2.5)
    again = get_settings(settings.as_env())
    assert (again.alert_webhook_url, again.alert_timeout_s) == ("https://hooks.example.com/x", 2.5)


def test_the_notifier_describes_a_rejection_and_keeps_quiet_otherwise():
    from crossfit_mlops.ops.alert_notifier import (
        WebhookNotifier,
        describe_rejection,
        describe_retraining,
    )

    verdict = {"model_name": "m", "decision": "rejected", "reason": "does not beat the champion",
               "challenger": {"version": 2}, "champion": {"version": 1}}  # fmt: skip
    summary, details = describe_rejection(verdict)
    assert summary == "m v2 not promoted: does not beat the champion"
    assert details == {"model": "m", "version": "2", "reason": "does not beat the champion", "champion_version": "1"}
    assert describe_rejection({**verdict, "decision": "unchanged"}) is None, "already the champion: not a rejection"
    monitoring = {"retrain": True, "snapshot_id": "2026-12-02", "model_name": "m", "model_version": "1",
                  "reasons": ["RMSE rose 20%", "3 of 5 features drifted"], "retrain_conf": {"snapshot": "2026-12-02"}}  # fmt: skip
    summary, details = describe_retraining(monitoring)
    assert summary == "retraining m on snapshot 2026-12-02: RMSE rose 20%; 3 of 5 features drifted"
    assert details["snapshot"] == "2026-12-02" and details["reasons"] == monitoring["reasons"]
    with pytest.raises(ValueError, match="unknown alert event"):
        WebhookNotifier("dag_failed")
    with pytest.raises(ValueError, match="does not describe a task's result"):
        WebhookNotifier(ROLLBACK, result_of="some_task")


@pytest.mark.parametrize("serialized", [False, True], ids=["dag-processor", "dag.test"])
def test_the_notifier_as_a_dag_failure_callback_posts_the_run_and_the_task_that_ended_it(monkeypatch, serialized):
    """Called the way Airflow calls a DAG's on_failure_callback: a context with the DAG, the run id,
    the reason and the last failed task instance. Under ``dag.test()`` the context's DAG is a
    SerializedDAG, on which a BaseNotifier's template rendering fails (apache/airflow#64649)."""
    from types import SimpleNamespace

    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    from crossfit_mlops.ops.alert_notifier import WebhookNotifier

    dag = DAG("crossfit_monitoring", schedule=None)
    if serialized:
        dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    with webhook_receiver() as receiver:
        monkeypatch.setenv("CROSSFIT_ALERT_WEBHOOK_URL", receiver.url)
        ti = SimpleNamespace(task_id="some_task", dag_id="crossfit_monitoring", run_id="manual__1")
        WebhookNotifier(DAG_RUN_FAILED)({"dag": dag, "run_id": "manual__1", "reason": "task_failure", "ti": ti})
        (post,) = receiver.posts
    assert (post["event"], post["dag_id"], post["run_id"]) == (DAG_RUN_FAILED, "crossfit_monitoring", "manual__1")
    assert post["summary"] == "crossfit_monitoring run manual__1 failed at some_task"
    assert post["details"] == {"reason": "task_failure", "failed_task": "some_task"}
