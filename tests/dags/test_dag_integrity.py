"""DAG files: they import, have the expected graph, retry where they talk to servers, and do no
work at parse time. The DagBag is built in a subprocess with its own AIRFLOW_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from crossfit_mlops.dag_contract import BatchTasks as B
from crossfit_mlops.dag_contract import ConnectionTasks as C
from crossfit_mlops.dag_contract import MonitoringTasks as M
from crossfit_mlops.dag_contract import TrainingTasks as T
from tests.support.services import ROOT, airflow_env

PROBE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
heavy = sorted(m for m in ("mlflow", "feast", "sklearn", "lightgbm", "codecarbon", "pandas", "matplotlib") if m in sys.modules)
out = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "heavy_modules": heavy, "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "doc_md": bool(dag.doc_md),
        "params": sorted(dag.params.keys()),
        "param_schemas": {k: dag.params.get_param(k).schema for k in dag.params.keys()},
        "tasks": {
            t.task_id: {
                "downstream": sorted(t.downstream_task_ids),
                "retries": t.retries,
                "exponential": bool(getattr(t, "retry_exponential_backoff", False)),
                "mapped": "MappedOperator" in type(t).__name__,
                "doc": bool(t.doc_md or t.doc or getattr(getattr(t, "python_callable", None), "__doc__", None)),
                "outlets": sorted(getattr(o, "name", str(o)) for o in (t.outlets or [])),
                "timeout_s": t.execution_timeout.total_seconds() if t.execution_timeout else None,
                "queue": t.queue,
                "trigger_rule": getattr(getattr(t, "trigger_rule", None), "value", None),
                "on_failure_callback": bool(getattr(t, "on_failure_callback", None)),
            }
            for t in dag.tasks
        },
        "dagrun_timeout_s": dag.dagrun_timeout.total_seconds() if dag.dagrun_timeout else None,
        "on_failure_callback": [type(c).__name__ for c in (dag.on_failure_callback if isinstance(dag.on_failure_callback, list) else [dag.on_failure_callback]) if c],
        "schedule_assets": sorted(a.name for a in getattr(getattr(dag.timetable, "asset_condition", None), "objects", ())),
        "schedule_summary": str(getattr(getattr(dag.timetable, "timetable", None), "expression", "")),
    }
print("JSON" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("airflow_home")
    env = airflow_env(home, home / "state", "http://127.0.0.1:1")
    done = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "dags")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("JSON"))
    return json.loads(line[4:])


def test_no_import_errors_and_no_heavy_imports_at_parse_time(parsed):
    assert parsed["import_errors"] == {}
    assert set(parsed["dags"]) == {
        "crossfit_training_pipeline", "crossfit_batch_inference", "crossfit_monitoring", "test_connections"
    }
    assert parsed["heavy_modules"] == [], "DAG files must not import heavy libraries at parse time"


def test_monitoring_graph_branches_to_retraining_or_not(parsed):
    dag = parsed["dags"]["crossfit_monitoring"]
    tasks = dag["tasks"]
    expected_edges = {
        M.RESOLVE_RUN: {M.PREPARE, M.MEASURE, M.DECIDE, M.NO_RETRAINING, M.MEASURE_LIVE, M.JUDGE_LIVE, M.ROLLBACK},
        M.FIND_CHAMPION: {M.PREPARE, M.MEASURE, M.MEASURE_LIVE},
        M.PREPARE: {M.MEASURE, M.MEASURE_LIVE},
        M.MEASURE: {M.DECIDE, M.NO_RETRAINING},
        M.DECIDE: {M.TRIGGER_RETRAINING, M.NO_RETRAINING},
        M.TRIGGER_RETRAINING: set(),
        M.NO_RETRAINING: set(),
        M.MEASURE_LIVE: {M.JUDGE_LIVE, M.ROLLBACK, M.KEEP_SERVING},
        M.JUDGE_LIVE: {M.ROLLBACK, M.KEEP_SERVING},
        M.ROLLBACK: set(),
        M.KEEP_SERVING: set(),
    }
    assert set(tasks) == set(expected_edges)
    for task_id, downstream in expected_edges.items():
        assert set(tasks[task_id]["downstream"]) == downstream, task_id
    assert tasks[M.FIND_CHAMPION]["retries"] > 0 and tasks[M.MEASURE]["retries"] > 0
    assert tasks[M.PREPARE]["retries"] == 0, "a data step fails fast: a retry would fail the same way"
    assert {"snapshot", "season_shift", "max_rmse_increase", "max_drift_share", "retrain"} <= set(dag["params"])
    assert dag["doc_md"]


def test_monitoring_watches_live_traffic_hourly_and_on_new_features(parsed):
    dag = parsed["dags"]["crossfit_monitoring"]
    tasks = dag["tasks"]
    assert dag["schedule_assets"] == ["crossfit_online_features"]
    assert "0 * * * *" in dag["schedule_summary"], dag["schedule_summary"]
    # the live lane runs after the snapshot lane whatever it did (its labels count), never instead of a rollback check
    assert tasks[M.MEASURE_LIVE]["trigger_rule"] == "all_done"
    assert tasks[M.MEASURE_LIVE]["retries"] > 0 and tasks[M.ROLLBACK]["retries"] > 0
    assert {"live_window_hours", "max_live_rmse_increase", "max_error_rate", "min_labeled", "cooldown_hours",
            "auto_rollback"} <= set(dag["params"])  # fmt: skip


def test_training_pipeline_graph(parsed):
    tasks = parsed["dags"]["crossfit_training_pipeline"]["tasks"]
    expected_edges = {
        # issue 15 (human approval) added the gate's third branch and the run's gate mode
        T.RESOLVE_RUN: {T.START_MLFLOW_RUN, T.INGEST, T.MATERIALIZE, T.BUILD_TRAINING_SET,
                        T.PLAN, T.TRAIN, T.REGISTER, T.JUDGE, T.GATE, T.PROMOTE, T.KEEP},
        T.INGEST: {T.VALIDATE},
        T.VALIDATE: {T.ENGINEER},
        T.ENGINEER: {T.APPLY_FEATURE_STORE},
        T.APPLY_FEATURE_STORE: {T.MATERIALIZE, T.BUILD_TRAINING_SET},
        T.BUILD_TRAINING_SET: {T.PLAN, T.JUDGE},
        T.PLAN: {T.TRAIN},
        T.TRAIN: {T.REGISTER},
        T.REGISTER: {T.JUDGE},
        T.JUDGE: {T.GATE, T.PROMOTE, T.KEEP, T.PROMOTE_APPROVED, T.RECORD_REJECTION, T.FINISH},
        T.GATE: {T.PROMOTE, T.KEEP, T.AWAIT_APPROVAL},
        T.AWAIT_APPROVAL: {T.PROMOTE_APPROVED, T.RECORD_REJECTION},
        T.PROMOTE: {T.FINISH},
        T.KEEP: {T.FINISH},
        T.PROMOTE_APPROVED: {T.FINISH},
        T.RECORD_REJECTION: {T.FINISH},
        T.MATERIALIZE: set(),
        T.FINISH: set(),
    }
    for task_id, downstream in expected_edges.items():
        assert set(tasks[task_id]["downstream"]) == downstream, task_id
    assert tasks[T.TRAIN]["mapped"], "the training fan-out must use dynamic task mapping"
    assert tasks[T.ENGINEER]["mapped"] and tasks[T.BUILD_TRAINING_SET]["mapped"]
    assert set(tasks) == set(expected_edges) | {T.START_MLFLOW_RUN}


def test_tasks_that_talk_to_servers_retry_with_backoff(parsed):
    tasks = parsed["dags"]["crossfit_training_pipeline"]["tasks"]
    server_tasks = [T.PROMOTE_APPROVED, T.RECORD_REJECTION, T.START_MLFLOW_RUN, T.APPLY_FEATURE_STORE, T.MATERIALIZE, T.BUILD_TRAINING_SET,
                    T.TRAIN, T.REGISTER, T.JUDGE, T.PROMOTE,
                    T.KEEP, T.FINISH]
    for task_id in server_tasks:
        assert tasks[task_id]["retries"] >= 2 and tasks[task_id]["exponential"], task_id
    for task_id in (T.VALIDATE, T.GATE):  # deterministic: a retry would fail the same way
        assert tasks[task_id]["retries"] == 0, task_id
    assert all(t["doc"] for t in tasks.values()), "every task has a doc"


def test_trigger_form_exposes_the_run_parameters(parsed):
    dag = parsed["dags"]["crossfit_training_pipeline"]
    assert dag["doc_md"]
    assert {"snapshot", "rows", "sample_size", "grid", "min_improvement", "r2_floor", "r2_ceiling"} <= set(dag["params"])


def test_connections_dag(parsed):
    tasks = parsed["dags"]["test_connections"]["tasks"]
    assert set(tasks) == {C.MLFLOW, C.FEAST, C.POSTGRES}
    assert all(t["retries"] >= 1 for t in tasks.values())


def test_batch_inference_is_scheduled_on_the_assets_the_training_pipeline_updates(parsed):
    batch = parsed["dags"]["crossfit_batch_inference"]
    assert batch["doc_md"] and "snapshot" in batch["params"]
    assert batch["tasks"][B.RESOLVE_SNAPSHOT]["downstream"] == [B.SCORE]
    assert batch["tasks"][B.SCORE]["retries"] >= 1
    assert batch["schedule_assets"] == ["crossfit_champion_model", "crossfit_online_features"]
    training = parsed["dags"]["crossfit_training_pipeline"]["tasks"]
    assert training[T.MATERIALIZE]["outlets"] == ["crossfit_online_features"]
    assert training[T.PROMOTE]["outlets"] == ["crossfit_champion_model"]


def test_compute_tasks_lower_their_cpu_priority_without_stacking(tmp_path):
    """Training and materialize run below the servers they call; in one process (``dag.test()``)
    repeated tasks keep the level instead of adding up, and a lower level never raises it back."""
    probe = (
        "import os; import crossfit_training_pipeline as m; from crossfit_mlops.ops.priority import lower_cpu_priority as lower; "
        "level = lambda: os.getpriority(os.PRIO_PROCESS, 0); start = level(); "
        "lower(m.TRAINING_NICENESS); lower(m.TRAINING_NICENESS); a = level(); "
        "lower(m.MATERIALIZE_NICENESS); lower(m.TRAINING_NICENESS); b = level(); "
        "print('NICE', start, a, b, m.TRAINING_NICENESS, m.MATERIALIZE_NICENESS)"
    )
    env = airflow_env(tmp_path, tmp_path / "state", "http://127.0.0.1:1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "dags"), env.get("PYTHONPATH", "")) if p)
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("NICE"))
    start, a, b, training, materialize = (int(v) for v in line.split()[1:])
    assert 0 < training < materialize <= 19
    assert (a, b) == (max(start, training), max(start, materialize))


def test_the_contract_names_exactly_the_tasks_of_each_dag(parsed):
    """Every task id the rest of the code reads through the contract exists, and nothing is unnamed."""
    from crossfit_mlops.dag_contract import (
        BATCH_DAG,
        CONNECTIONS_DAG,
        MONITORING_DAG,
        TRAINING_DAG,
        task_ids,
    )

    for dag_id, tasks in ((TRAINING_DAG, T), (MONITORING_DAG, M), (BATCH_DAG, B), (CONNECTIONS_DAG, C)):
        assert set(parsed["dags"][dag_id]["tasks"]) == set(task_ids(tasks).values()), dag_id


def test_gate_and_monitoring_params_come_from_the_policies(parsed):
    """One source for defaults and bounds: the DAG's Params are the policy dataclasses' fields."""
    from crossfit_mlops.dag_contract import param_schemas
    from crossfit_mlops.monitoring.policy import MonitoringPolicy
    from crossfit_mlops.registry.gate import GatePolicy

    for dag_id, policy in (("crossfit_training_pipeline", GatePolicy), ("crossfit_monitoring", MonitoringPolicy)):
        shown = parsed["dags"][dag_id]["param_schemas"]
        for name, schema in param_schemas(policy).items():
            expected = {k: v for k, v in schema.items() if k != "default"}
            assert {k: shown[name].get(k) for k in expected} == expected, (dag_id, name)


def test_every_task_and_every_run_has_a_timeout(parsed):
    """A hung task (a server that accepts but never answers) fails instead of holding its slot."""
    for dag_id, dag in parsed["dags"].items():
        assert dag["dagrun_timeout_s"], dag_id
        for task_id, task in dag["tasks"].items():
            assert task["timeout_s"] and task["timeout_s"] >= 300, (dag_id, task_id)


def test_the_training_fan_out_goes_to_the_training_queue(parsed):
    """On the CeleryExecutor the training tasks go to the workers of the `training` queue; every
    other task stays on the default queue (the LocalExecutor ignores queues)."""
    from crossfit_mlops.dag_contract import TRAINING_QUEUE

    tasks = parsed["dags"]["crossfit_training_pipeline"]["tasks"]
    assert tasks[T.TRAIN]["queue"] == TRAINING_QUEUE
    assert {t["queue"] for name, t in tasks.items() if name != T.TRAIN} == {"default"}


def test_every_step_after_resolve_run_waits_for_the_mlflow_parent_run(parsed):
    """A data step that failed before start_mlflow_run recorded the parent's id left the parent
    RUNNING forever (its failure callback found no id; the parent was created afterwards). Every
    task but resolve_run is downstream of start_mlflow_run, so a failure always finds the id."""
    tasks = parsed["dags"]["crossfit_training_pipeline"]["tasks"]
    reached, todo = set(), [T.START_MLFLOW_RUN]
    while todo:
        for nxt in tasks[todo.pop()]["downstream"]:
            if nxt not in reached:
                reached.add(nxt)
                todo.append(nxt)
    assert set(tasks) - reached == {T.RESOLVE_RUN, T.START_MLFLOW_RUN}


def test_one_failed_candidate_does_not_fail_the_training_run(parsed):
    """register_challenger runs once every training task is done, trained or failed (it decides
    whether enough trained); a failed candidate does not mark the MLflow parent run failed."""
    tasks = parsed["dags"]["crossfit_training_pipeline"]["tasks"]
    assert tasks[T.REGISTER]["trigger_rule"] == "all_done"
    assert tasks[T.FINISH]["trigger_rule"] == "none_failed_min_one_success"
    others = {name for name in tasks if name not in {T.REGISTER, T.FINISH}}
    assert {tasks[name]["trigger_rule"] for name in others} == {"all_success"}
    assert not tasks[T.TRAIN]["on_failure_callback"], "a failed candidate leaves the parent run alone"
    assert tasks[T.REGISTER]["on_failure_callback"] and tasks[T.START_MLFLOW_RUN]["on_failure_callback"]
    schema = parsed["dags"]["crossfit_training_pipeline"]["param_schemas"]["min_successful_candidates"]
    assert (schema["type"], schema["minimum"]) == ("integer", 1)


def test_a_failed_run_of_each_pipeline_dag_posts_an_alert(parsed):
    """The DAG-level on_failure_callback of the three pipeline DAGs is the alerts' notifier
    (it posts only when CROSSFIT_ALERT_WEBHOOK_URL is set)."""
    for dag_id in ("crossfit_training_pipeline", "crossfit_monitoring", "crossfit_batch_inference"):
        assert parsed["dags"][dag_id]["on_failure_callback"] == ["WebhookNotifier"], dag_id
