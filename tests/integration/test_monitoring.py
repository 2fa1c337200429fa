"""The monitoring DAG, run with ``dag.test()`` against a real MLflow server, a real Feast repo and a
real Airflow metadata database in temp dirs.

Without a champion the run is skipped. After one training run (one LightGBM entry, so it is quick),
a later snapshot of the same athletes is judged "keep" (no retraining triggered), and a snapshot of
a simulated later season (lifts +20%, weight +10%) is judged "retrain", which queues a run of
``crossfit_training_pipeline`` on that snapshot and posts the alert ``retraining_triggered`` to a
webhook receiver this module starts; a refused run posts ``dag_run_failed`` (Airflow's DAG-level
failure callback, which ``dag.test()`` runs too).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from crossfit_mlops.alerts import DAG_RUN_FAILED, RETRAINING_TRIGGERED
from crossfit_mlops.dag_contract import MonitoringTasks as M
from tests.support.services import airflow_env, dag_test, mlflow_server
from tests.support.webhook import webhook_receiver

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRAINED_ON = "2026-11-01"
QUEUED_RUNS = r"""
import json
from airflow.models.dagrun import DagRun
runs = DagRun.find(dag_id="crossfit_training_pipeline")
print("RUNS=" + json.dumps([{"run_id": r.run_id, "conf": r.conf, "state": str(r.state)} for r in runs]))
"""
GRID = [{"model": "lightgbm", "feature_version": "v2", "params": {"n_estimators": 150, "learning_rate": 0.05, "num_leaves": 15}}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("monitoring")
    with mlflow_server(base / "mlflow_state") as uri, webhook_receiver() as alerts:
        env = {**airflow_env(base / "airflow", base / "state", uri), "CROSSFIT_ALERT_WEBHOOK_URL": alerts.url}
        yield {"uri": uri, "env": env, "state": base / "state", "alerts": alerts}


def run_dag(stack, dag_id: str, conf: dict) -> dict:
    return asdict(dag_test(stack["env"], dag_id, conf))


def retraining_runs(stack) -> list[dict]:
    """Runs of the training DAG that monitoring queued (the champion's own run is a manual one)."""
    done = subprocess.run([sys.executable, "-c", QUEUED_RUNS], env=stack["env"], capture_output=True, text=True, timeout=120)
    line = next((line for line in done.stdout.splitlines() if line.startswith("RUNS=")), None)
    assert line, done.stdout[-3000:] + done.stderr[-3000:]
    return [r for r in json.loads(line.split("=", 1)[1]) if r["run_id"].startswith("retrain__")]


def _client(uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _monitoring_run(uri: str, airflow_run_id: str):
    c = _client(uri)
    experiment = c.get_experiment_by_name("crossfit_monitoring")
    runs = c.search_runs([experiment.experiment_id], filter_string=f"tags.`airflow.run_id` = '{airflow_run_id}'")
    assert len(runs) == 1
    return runs[0]


def test_without_a_champion_the_run_is_skipped(stack):
    result = run_dag(stack, "crossfit_monitoring", {"snapshot": "2026-11-15", "rows": 5000})
    assert result["state"] == "success", result["log"][-4000:]
    assert result["tasks"][M.FIND_CHAMPION] == "skipped"
    assert result["tasks"][M.MEASURE] == "skipped"
    assert "nothing to monitor" in result["log"]


@pytest.fixture(scope="module")
def champion(stack):
    conf = {"snapshot": TRAINED_ON, "rows": 30000, "seed": 5, "grid": GRID, "r2_floor": 0.3}
    result = run_dag(stack, "crossfit_training_pipeline", conf)
    assert result["state"] == "success", result["log"][-6000:]
    mv = _client(stack["uri"]).get_model_version_by_alias("crossfit_total_lift", "champion")
    return str(mv.version)


def test_a_later_snapshot_of_the_same_athletes_keeps_the_champion(stack, champion):
    result = run_dag(stack, "crossfit_monitoring", {"snapshot": "2026-12-01"})
    assert result["state"] == "success", result["log"][-6000:]
    assert result["tasks"][M.NO_RETRAINING] == "success"
    assert result["tasks"][M.TRIGGER_RETRAINING] == "skipped"

    run = _monitoring_run(stack["uri"], result["run_id"])
    assert run.data.tags["decision"] == "keep"
    assert run.data.tags["reference_snapshot_id"] == TRAINED_ON and run.data.tags["model_version"] == champion
    assert abs(run.data.metrics["rmse_increase"]) < 0.05, run.data.metrics
    assert run.data.metrics["drift_share"] < 0.3 and run.data.metrics["drift.weight_lb"] < 0.1
    assert int(run.data.params["rows_current"]) > 0 and float(run.data.params["max_rmse_increase"]) == 0.1
    contexts = {t.value for i in run.inputs.dataset_inputs for t in i.tags if t.key == "mlflow.data.context"}
    assert contexts == {"reference", "current"}, "both compared test sets should be the run's dataset inputs"
    artifacts = {a.path for a in _client(stack["uri"]).list_artifacts(run.info.run_id)}
    assert {"report.html", "dashboard.png", "summary.json"} <= artifacts

    folder = Path(run.data.tags["monitoring_path"])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["decision"] == "keep" and summary["retrain"] is False
    assert summary["rows"]["current"] > 0 and summary["feature_version"] == "v2"
    assert (folder / "report.html").stat().st_size > 100_000, "Evidently's dashboard should be a full HTML report"
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "no half-written run folder left"
    mv = _client(stack["uri"]).get_model_version("crossfit_total_lift", champion)
    assert mv.tags["monitoring.last_snapshot"] == "2026-12-01" and mv.tags["monitoring.last_decision"] == "keep"
    assert retraining_runs(stack) == [], "no retraining should have been queued"


def test_a_drifted_season_triggers_retraining_on_that_snapshot(stack, champion):
    result = run_dag(stack, "crossfit_monitoring", {"snapshot": "2026-12-02", "season_shift": 0.2})
    assert result["state"] == "success", result["log"][-6000:]
    assert result["tasks"][M.TRIGGER_RETRAINING] == "success", result["tasks"]
    assert result["tasks"][M.NO_RETRAINING] == "skipped"

    run = _monitoring_run(stack["uri"], result["run_id"])
    assert run.data.tags["decision"] == "retrain"
    assert "RMSE rose" in run.data.tags["reasons"]
    assert run.data.metrics["rmse_increase"] > 0.10
    assert run.data.metrics["drift.weight_lb"] >= 0.1, "body weight moved by 10%: it should drift"
    assert run.data.metrics["target_drift"] >= 0.1

    queued = retraining_runs(stack)
    assert [r["run_id"] for r in queued] == [f"retrain__{result['run_id']}"]
    assert queued[0]["conf"] == {"snapshot": "2026-12-02", "sample_size": 0}

    alert = stack["alerts"].wait_for(RETRAINING_TRIGGERED, timeout=10, run_id=result["run_id"])
    assert (alert["dag_id"], alert["task_id"]) == ("crossfit_monitoring", M.TRIGGER_RETRAINING)
    assert alert["details"]["snapshot"] == "2026-12-02" and alert["details"]["model_version"] == champion
    assert "; ".join(alert["details"]["reasons"]) == run.data.tags["reasons"], "the policy's reasons, as recorded"
    assert alert["summary"] == f"retraining crossfit_total_lift on snapshot 2026-12-02: {run.data.tags['reasons']}"
    assert len(stack["alerts"].events(RETRAINING_TRIGGERED)) == 1, "the run that kept the champion sent none"


def test_a_season_shift_on_an_existing_snapshot_is_refused(stack, champion):
    result = run_dag(stack, "crossfit_monitoring", {"snapshot": TRAINED_ON, "season_shift": 0.3})
    assert result["state"] == "failed"
    assert result["tasks"][M.PREPARE] == "failed"
    assert "raw snapshots are never rewritten" in result["log"]
    # Airflow's DAG-level on_failure_callback (dag.test() runs it; a deployment's DAG processor does)
    alert = stack["alerts"].wait_for(DAG_RUN_FAILED, timeout=10, run_id=result["run_id"])
    assert alert["dag_id"] == "crossfit_monitoring" and "task_id" not in alert
    assert alert["details"] == {"reason": "task_failure", "failed_task": M.PREPARE}
    assert alert["summary"] == f"crossfit_monitoring run {result['run_id']} failed at {M.PREPARE}"
