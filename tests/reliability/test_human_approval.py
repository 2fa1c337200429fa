"""Gate mode "human", for real: Airflow's human-in-the-loop task waits; a person answers through
the REST API (what the UI's Required Actions page does), or nobody does before the timeout.

Each outcome ends in the expected alias state, the answer and the person are in the alias history
and on the version's model card. The module trains a model of its own name (the Airflow Variable
``crossfit_registered_model``), so the other modules sharing the stack keep their registry.
"""

from __future__ import annotations

import time

import pytest

from crossfit_mlops.alerts import CHALLENGER_REJECTED
from crossfit_mlops.dag_contract import APPROVE, REJECT, TRAINING_DAG
from crossfit_mlops.dag_contract import TrainingTasks as T
from tests.reliability.conftest import APPROVAL_TIMEOUT_S
from tests.support.pipeline import champion, trigger, wait

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "crossfit_total_lift_approval"


@pytest.fixture(scope="module")
def stack(pipeline_stack):
    """The shared stack, training this module's own model; every run it starts has ended before
    the Variable is restored (a run still going would otherwise train the other modules' model)."""
    client = pipeline_stack["client"]
    client.set_variable("crossfit_registered_model", MODEL, "test: the approval module's own model")
    runs: list[str] = []
    try:
        yield {**pipeline_stack, "runs": runs}
    finally:
        for run_id in runs:
            wait(pipeline_stack, run_id, timeout=APPROVAL_TIMEOUT_S + 300)
        client.set_variable("crossfit_registered_model", "crossfit_total_lift", "restored by the approval tests")


def _start(stack, snapshot: str) -> str:
    run_id = trigger(stack, snapshot, approval="human")
    stack["runs"].append(run_id)
    return run_id


def _awaiting(stack, run_id: str, timeout: float = 300) -> dict:
    """The approval task once it waits for an answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tis = {t["task_id"]: t for t in stack["client"].task_instances(TRAINING_DAG, run_id)}
        ti = tis.get(T.AWAIT_APPROVAL)
        if ti and ti["state"] in {"awaiting_input", "deferred"}:
            # Airflow 3.3 race: an answer that lands before the scheduler has processed the
            # executor's report of the parked execution re-queues the task, and the late report
            # then fails it ("finished with state success, but ... state attribute is queued").
            # A person answers seconds later at the earliest; so does this test.
            time.sleep(10)
            return ti
        assert stack["client"].dag_run(TRAINING_DAG, run_id)["state"] in {"queued", "running"}, tis
        time.sleep(1.0)
    raise AssertionError(f"{T.AWAIT_APPROVAL} never waited for input")


def _events(stack, version: str) -> list[dict]:
    from crossfit_mlops.tracking.history import history

    return [e for e in history(stack["uri"], MODEL) if e["version"] == version]


def _card(stack, version: str) -> str:
    from crossfit_mlops.registry.card import read_card

    return read_card(stack["uri"], MODEL, version)


def _challenger(stack, run_id: str) -> str:
    return stack["client"].xcom(TRAINING_DAG, run_id, T.JUDGE)["challenger"]["version"]


def test_a_person_rejects_and_no_alias_moves(stack):
    run_id = _start(stack, "2026-09-01")
    _awaiting(stack, run_id)
    stack["client"].answer(TRAINING_DAG, run_id, T.AWAIT_APPROVAL, [REJECT])
    assert wait(stack, run_id)["state"] == "success"
    version = _challenger(stack, run_id)
    assert champion(stack, MODEL) is None, "rejected: @champion did not move"
    states = {t["task_id"]: t["state"] for t in stack["client"].task_instances(TRAINING_DAG, run_id)}
    assert states[T.RECORD_REJECTION] == "success" and states[T.PROMOTE_APPROVED] == "skipped"
    event = _events(stack, version)[-1]
    assert event["event"] == "approval_rejected" and event["actor"] == "approver:admin"
    assert "rejected by admin" in _card(stack, version)
    alert = stack["alerts"].wait_for(CHALLENGER_REJECTED, timeout=30, run_id=run_id)
    assert alert["task_id"] == T.RECORD_REJECTION and alert["details"]["version"] == version
    assert alert["details"]["reason"].startswith("rejected by admin")


def test_nobody_answers_and_the_timeout_rejects(stack):
    run_id = _start(stack, "2026-09-02")
    _awaiting(stack, run_id)
    assert wait(stack, run_id, timeout=APPROVAL_TIMEOUT_S + 300)["state"] == "success"
    version = _challenger(stack, run_id)
    assert champion(stack, MODEL) is None
    event = _events(stack, version)[-1]
    assert event["event"] == "approval_timeout" and event["actor"] == "timeout"
    assert "nobody approved it before the timeout" in _card(stack, version)


def test_a_person_approves_and_the_champion_moves_in_their_name(stack):
    run_id = _start(stack, "2026-09-03")
    _awaiting(stack, run_id)
    stack["client"].answer(TRAINING_DAG, run_id, T.AWAIT_APPROVAL, [APPROVE])
    assert wait(stack, run_id)["state"] == "success"
    version = _challenger(stack, run_id)
    assert champion(stack, MODEL) == version
    event = _events(stack, version)[-1]
    assert (event["event"], event["alias"], event["to_version"], event["actor"]) == ("approval", "champion", version, "approver:admin")
    card = _card(stack, version)
    assert "Human approval" in card and "approver:admin" in card and "Promoted to @champion" in card
