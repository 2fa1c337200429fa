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

from crossfit_mlops.alerts import DAG_RUN_FAILED, RETRAINING_TRIGGERED, ROLLBACK
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


def _monitoring_run(uri: str, airflow_run_id: str, kind: str = "snapshot"):
    c = _client(uri)
    experiment = c.get_experiment_by_name("crossfit_monitoring")
    query = f"tags.`airflow.run_id` = '{airflow_run_id}' and tags.`monitoring.kind` = '{kind}'"
    runs = c.search_runs([experiment.experiment_id], filter_string=query)
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


# --- live traffic: a bad champion is rolled back --------------------------------------------------
BAD_SEASON, LABELS_ARRIVE = "2026-12-03", "2026-12-20"


def _logged(settings, request_ids: set[str], timeout: float = 30):
    """The prediction log's rows of ``request_ids`` once all of them were flushed."""
    import time
    from datetime import UTC, datetime, timedelta

    from crossfit_mlops.prediction_log import live_root, read_log

    deadline = time.monotonic() + timeout
    while True:
        now = datetime.now(UTC)
        rows = read_log(live_root(settings), now - timedelta(hours=2), now + timedelta(minutes=1))
        if request_ids <= set(rows["request_id"]) or time.monotonic() > deadline:
            return rows[rows["request_id"].isin(request_ids)]
        time.sleep(0.5)


def test_a_champion_bad_on_live_traffic_is_rolled_back_and_serving_switches(stack, champion, tmp_path):
    """A season whose lifts were recorded 25% too heavy trains a champion that looks fine on its own
    test split; the labels that arrive later (a snapshot of the same athletes, no shift) show its live
    error far above that. The monitoring run rolls @champion back to the previous champion, records
    why, alerts, and the API, under a stream of requests, switches with no 5xx."""
    import threading

    from crossfit_mlops.data.ingest import ingest_snapshot
    from crossfit_mlops.registry.promotion import move_alias
    from crossfit_mlops.settings import get_settings
    from crossfit_mlops.storage import Catalog
    from crossfit_mlops.tracking.history import history
    from tests.integration.test_serving import Api

    env = stack["env"]  # alerts go to the module's webhook receiver
    settings = get_settings(env)
    ingest_snapshot(BAD_SEASON, rows=30000, seed=5, settings=settings, season_shift=0.25)
    trained = run_dag(stack, "crossfit_training_pipeline", {"snapshot": BAD_SEASON, "grid": GRID, "r2_floor": 0.3})
    assert trained["state"] == "success", trained["log"][-6000:]
    c = _client(stack["uri"])
    bad = str(c.get_model_version_by_alias("crossfit_total_lift", "champion").version)
    assert bad != champion, "the season's model should beat the old champion on that season's test split"
    # the operator shadows the previous champion: the API scores it too, off the response path
    move_alias(stack["uri"], "crossfit_total_lift", "challenger", champion, "registration", "test", "shadow the previous champion")

    athletes = Catalog(settings).load_labels(BAD_SEASON)["athlete_id"].head(150).tolist()
    api = Api(env, tmp_path / "api.log", CROSSFIT_SERVING_REFRESH_S="0.5", CROSSFIT_SHADOW_SHARE="1")
    try:
        api.wait_ready()
        ids = set()
        for athlete in athletes:
            response = api.post("/predict", {"athlete_id": int(athlete)})
            assert response.status_code == 200 and response.json()["model_version"] == bad, response.text
            ids.add(response.headers["X-Request-ID"])
        rows = _logged(settings, ids)
        assert set(rows["request_id"]) == ids
        assert set(rows.loc[rows["role"] == "challenger", "model_version"]) == {champion}, "the shadow should be logged"

        answers, stop = [], threading.Event()

        def stream():
            while not stop.is_set():
                response = api.post("/predict", {"athlete_id": int(athletes[len(answers) % len(athletes)])})
                answers.append((response.status_code, response.json().get("model_version")))
                stop.wait(0.05)  # about 20 requests a second beside the DAG run

        streamer = threading.Thread(target=stream, daemon=True)
        streamer.start()
        # labels arrive: the monitoring run ingests the later snapshot of the same athletes
        result = run_dag(stack, "crossfit_monitoring", {"snapshot": LABELS_ARRIVE, "retrain": False})
        import time

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not answers or answers[-1][1] != champion):
            time.sleep(0.2)
        stop.set()
        streamer.join(timeout=30)
    finally:
        api.stop()

    assert result["state"] == "success", result["log"][-6000:]
    assert result["tasks"][M.ROLLBACK] == "success" and result["tasks"][M.KEEP_SERVING] == "skipped", result["tasks"]
    assert str(c.get_model_version_by_alias("crossfit_total_lift", "champion").version) == champion
    statuses = {status for status, _ in answers}
    assert statuses == {200}, f"serving must not fail while @champion moves: {statuses}"
    assert answers[0][1] == bad and answers[-1][1] == champion, (answers[0], answers[-1])

    event = history(stack["uri"], "crossfit_total_lift")[-1]
    assert (event["event"], event["from_version"], event["to_version"]) == ("rollback", bad, champion)
    assert event["actor"].startswith("airflow:crossfit_monitoring/") and "live RMSE" in event["reason"], event

    live = c.get_run(c.get_model_version("crossfit_total_lift", bad).tags["rollback.evidence_run_id"])
    assert live.data.tags["monitoring.kind"] == "live" and live.data.tags["decision"] == "rollback"
    metrics = live.data.metrics
    assert metrics["labelled"] >= 150 and metrics["live_rmse_low"] > 1.2 * metrics["test_rmse"], metrics
    assert metrics["shadow_rows"] >= 150 and metrics["shadow_challenger_rmse"] < metrics["live_rmse"], metrics
    assert {"summary.json", "dashboard.png", "report.html"} <= {a.path for a in c.list_artifacts(live.info.run_id)}
    shadow_tags = c.get_model_version("crossfit_total_lift", champion).tags
    assert shadow_tags["shadow.run_id"] == live.info.run_id and float(shadow_tags["shadow.improvement_low"]) > 0

    alert = stack["alerts"].wait_for(ROLLBACK, timeout=10, run_id=result["run_id"])
    assert (alert["dag_id"], alert["task_id"]) == ("crossfit_monitoring", M.ROLLBACK)
    assert f"from v{bad} to v{champion}" in alert["summary"] and alert["details"]["evidence_run_id"] == live.info.run_id
    assert len(stack["alerts"].events(ROLLBACK)) == 1
