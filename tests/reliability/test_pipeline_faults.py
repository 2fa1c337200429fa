"""Faults of an unattended training pipeline, injected for real on the local stack.

One stack (MLflow + Airflow processes, LocalExecutor, this module's own ports and state directory)
runs every scenario through the REST API, as a scheduler or an operator would:

- a run cleared and run again replaces its outputs and registers nothing twice;
- a training task SIGKILLed mid-fit is retried, its aborted MLflow run is marked FAILED;
- MLflow stopped before a run: the server-facing tasks retry with backoff, then the run fails
  with a clear error, nothing is registered and no alias moves, and the alert ``dag_run_failed``
  reaches the webhook; after recovery a rerun completes;
- MLflow's artifact store full (a small tmpfs over it, filled): the task that logs an artifact
  fails at once, without retries, with "artifact store is full" in its log, and the parent run is
  FAILED;
- the Feast registry and online store deleted between runs are rebuilt by the next run, and two
  runs on different snapshots triggered at once both finish, with one well-defined champion.

The data are small (a few thousand raw rows, two LightGBM entries) so the whole module stays a
few minutes; one scenario trains a slower RandomForest so that there is a fit to interrupt.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from crossfit_mlops.alerts import CHALLENGER_REJECTED, DAG_RUN_FAILED
from crossfit_mlops.dag_contract import TRAINING_DAG
from crossfit_mlops.dag_contract import TrainingTasks as T
from tests.reliability.test_data_disk_full import fill
from tests.support import pipeline as P
from tests.support.pipeline import GRID, MODEL

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SLOW_GRID = [{"model": "random_forest", "feature_version": "v2", "params": {"n_estimators": 1500}}, *GRID]


def test_a_cleared_run_replaces_its_outputs_and_registers_nothing_twice(pipeline_stack):
    run_id = P.trigger(pipeline_stack, "2026-10-01")
    assert P.wait(pipeline_stack, run_id)["state"] == "success"
    assert [v.version for v in P.versions(pipeline_stack)] == ["1"] and P.champion(pipeline_stack) == "1"

    pipeline_stack["client"].clear(TRAINING_DAG, run_id, [T.TRAIN])  # and everything downstream of it
    assert P.wait(pipeline_stack, run_id)["state"] == "success"

    experiment_id, parents = P.parents(pipeline_stack, run_id)
    assert len(parents) == 1, "a cleared run reuses its MLflow parent run"
    assert parents[0].info.status == "FINISHED"
    children = P.children(pipeline_stack, experiment_id, parents[0].info.run_id)
    assert len(children) == len(GRID) and {c.info.status for c in children} == {"FINISHED"}, "one run per grid entry"
    replaced = P.children(pipeline_stack, experiment_id, parents[0].info.run_id, view="deleted_only")
    assert len(replaced) == len(GRID), "the first try's child runs are replaced (deleted, restorable)"
    assert [v.version for v in P.versions(pipeline_stack)] == ["1"], "the rerun found its own registration: no duplicate"
    assert P.champion(pipeline_stack) == "1"
    decision = pipeline_stack["client"].xcom(TRAINING_DAG, run_id, T.JUDGE)
    assert decision["decision"] == "unchanged" and "already the champion" in decision["reason"]
    assert not pipeline_stack["alerts"].events(CHALLENGER_REJECTED, run_id=run_id), "unchanged is not a rejection: no alert"
    v1 = P.mlflow_client(pipeline_stack["uri"]).get_model_version(MODEL, "1")
    assert v1.tags["gate.decision"] == "promoted" and v1.tags["legacy_stage"] == "Production"


def test_a_training_task_killed_mid_fit_is_retried_and_its_aborted_run_marked_failed(pipeline_stack):
    run_id = P.trigger(pipeline_stack, "2026-10-02", grid=SLOW_GRID, rows=30000)
    c = P.mlflow_client(pipeline_stack["uri"])
    deadline, victim = time.monotonic() + 300, None
    while victim is None and time.monotonic() < deadline:
        _, parents = P.parents(pipeline_stack, run_id)
        running = [
            r for p in parents for r in P.children(pipeline_stack, p.info.experiment_id, p.info.run_id)
            if r.info.status == "RUNNING" and r.data.tags.get("model_family") == "random_forest"
        ]  # fmt: skip
        victim = running[0] if running else None
        time.sleep(0.2)
    assert victim is not None, "the RandomForest run never started"
    os.kill(int(victim.data.tags["process.pid"]), signal.SIGKILL)

    assert P.wait(pipeline_stack, run_id)["state"] == "success"
    killed = c.get_run(victim.info.run_id)
    assert killed.info.status == "FAILED" and killed.data.tags.get("aborted", "").startswith("true")
    experiment_id, parents = P.parents(pipeline_stack, run_id)
    forests = [r for r in P.children(pipeline_stack, experiment_id, parents[0].info.run_id) if r.data.tags.get("model_family") == "random_forest"]
    assert {r.info.status for r in forests} == {"FAILED", "FINISHED"}, [r.info.status for r in forests]
    tries = [t for t in pipeline_stack["client"].task_instances(TRAINING_DAG, run_id) if t["task_id"] == T.TRAIN and t["try_number"] > 1]
    assert tries, "the killed task was retried"


def test_mlflow_down_fails_the_run_clearly_and_a_rerun_after_recovery_completes(pipeline_stack):
    module, cfg = pipeline_stack["module"], pipeline_stack["cfg"]
    versions_before, champion_before = [v.version for v in P.versions(pipeline_stack)], P.champion(pipeline_stack)
    module.stop_service(cfg, "mlflow")
    try:
        run_id = P.trigger(pipeline_stack, "2026-10-04")
        run = P.wait(pipeline_stack, run_id)
        assert run["state"] == "failed"
        states = {t["task_id"]: t["state"] for t in pipeline_stack["client"].task_instances(TRAINING_DAG, run_id)}
        assert states[T.START_MLFLOW_RUN] == "failed", states
        start = next(t for t in pipeline_stack["client"].task_instances(TRAINING_DAG, run_id) if t["task_id"] == T.START_MLFLOW_RUN)
        assert start["try_number"] >= 3, "it retried with backoff before failing"
        # register_challenger runs once the fan-out is done whatever its state (trigger rule all_done):
        # here the fan-out never started, so it fails, registering nothing, and says why
        assert states[T.REGISTER] == "failed", states
        register = next(t for t in pipeline_stack["client"].task_instances(TRAINING_DAG, run_id) if t["task_id"] == T.REGISTER)
        assert f"the training fan-out did not run: {T.START_MLFLOW_RUN} failed" in P.task_log(pipeline_stack, run_id, register)
        # the alert, from the DAG's on_failure_callback, which the stack's DAG processor runs
        alert = pipeline_stack["alerts"].wait_for(DAG_RUN_FAILED, timeout=120, run_id=run_id)
        assert alert["dag_id"] == TRAINING_DAG and alert["details"]["reason"] == "task_failure"
        assert alert["details"]["failed_task"] in {T.START_MLFLOW_RUN, T.REGISTER}, alert
    finally:
        module.start_service(cfg, "mlflow")
    assert [v.version for v in P.versions(pipeline_stack)] == versions_before, "nothing was registered"
    assert P.champion(pipeline_stack) == champion_before, "no alias moved"

    pipeline_stack["client"].clear(TRAINING_DAG, run_id, [T.START_MLFLOW_RUN])
    assert P.wait(pipeline_stack, run_id)["state"] == "success"
    assert len(P.versions(pipeline_stack)) == len(versions_before) + 1


def test_a_full_artifact_store_fails_the_task_at_once_and_says_so(pipeline_stack):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    from crossfit_stack.programs import artifacts_destination

    store = Path(artifacts_destination(pipeline_stack["cfg"]))
    store.mkdir(parents=True, exist_ok=True)  # MLflow makes it at the first artifact
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(store)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    client = pipeline_stack["client"]
    try:
        fill(store)
        run_id = P.trigger(pipeline_stack, "2026-10-03")
        assert P.wait(pipeline_stack, run_id)["state"] == "failed"
        failed = [t for t in client.task_instances(TRAINING_DAG, run_id) if t["state"] == "failed"]
        assert failed, "a task that logs an artifact failed"
        assert {t["try_number"] for t in failed} == {1}, "no retry: a full store fails the same way again"
        first = failed[0]
        log = P.task_log(pipeline_stack, run_id, first)  # what the UI shows: the REST API's log
        assert "MLflow's artifact store is full (no space left on device)" in log, log[-3000:]
        assert "MaxRetryError" not in log
    finally:
        subprocess.run(["umount", "-l", str(store)], check=True)
    _, parents = P.parents(pipeline_stack, run_id)
    assert [p.info.status for p in parents] == ["FAILED"], "the parent run is never left RUNNING"


def test_feast_deleted_then_two_runs_at_once_both_finish_with_one_champion(pipeline_stack):
    """The Feast registry and online store deleted between runs are rebuilt by the next run; two
    runs on different snapshots triggered at once both finish, with one well-defined champion."""
    settings = pipeline_stack["cfg"].settings
    assert settings.feast_registry_path.is_file() and settings.feast_online_store_path.is_file()
    settings.feast_registry_path.unlink()
    settings.feast_online_store_path.unlink()

    first, second = P.trigger(pipeline_stack, "2026-10-05"), P.trigger(pipeline_stack, "2026-10-06")
    assert P.wait(pipeline_stack, first)["state"] == "success" and P.wait(pipeline_stack, second)["state"] == "success"
    champion = P.mlflow_client(pipeline_stack["uri"]).get_model_version_by_alias(MODEL, "champion")
    assert champion.tags["gate.decision"] == "promoted"
    judged = [pipeline_stack["client"].xcom(TRAINING_DAG, run, T.JUDGE) for run in (first, second)]
    # each run was judged against the champion of its time: the second against what the first left
    promoted = [d for d in judged if d["promote"]]
    if len(promoted) == 2:
        assert promoted[1]["champion"]["version"] == promoted[0]["challenger"]["version"]
    assert champion.version == (promoted[-1]["challenger"]["version"] if promoted else champion.version)

    assert settings.feast_registry_path.is_file(), "apply_feature_store re-created the registry"
    from crossfit_mlops.features.feast_repo import online_features
    from crossfit_mlops.serving.online import example_athlete

    row = online_features([example_athlete(settings)], "v1", settings=settings)
    assert row.drop(columns=["athlete_id"]).notna().all(axis=None), "materialize re-filled the online store"
