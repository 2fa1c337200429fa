"""The whole training DAG, run with ``dag.test()`` on a small generated snapshot, against a real
MLflow server started here and a Feast repo (registry, offline tables, online store) in a temp dir.

Run 1 (the default 8-entry grid) must leave 8 finished child runs with metrics, emissions and
artifacts, and a registered version with @champion. Run 2, with a deliberately worse grid, must
register a challenger that the gate rejects, leaving @champion where it was, and post the alert
``challenger_rejected`` to a webhook receiver this module starts. Its grid also holds an entry
LightGBM refuses at fit time (``subsample`` 1e-9 passes the grid's check, a share in (0, 1], but
bags no row of the training set): that candidate's task fails, its child run ends FAILED with the
error, the leaderboard lists it, and the run still succeeds with a challenger from the other entry.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crossfit_mlops.alerts import CHALLENGER_REJECTED, DAG_RUN_FAILED
from crossfit_mlops.dag_contract import TrainingTasks as T
from crossfit_mlops.tracking.aliases import CHALLENGER, CHAMPION
from crossfit_mlops.training.fan_out import ERROR_TAG
from crossfit_mlops.training.grid import DEFAULT_GRID
from tests.support.services import airflow_env, dag_test, mlflow_server
from tests.support.webhook import webhook_receiver

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SNAPSHOT = "2026-11-01"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("pipeline")
    with mlflow_server(base / "mlflow_state") as uri, webhook_receiver() as alerts:
        env = {**airflow_env(base / "airflow", base / "state", uri), "CROSSFIT_ALERT_WEBHOOK_URL": alerts.url}
        yield {"uri": uri, "env": env, "state": base / "state", "alerts": alerts}


def run_dag(stack, conf: dict, with_states: bool = False):
    run = dag_test(stack["env"], "crossfit_training_pipeline", conf)
    assert run.state == "success", run.log[-6000:]
    return run if with_states else run.run_id


@pytest.fixture(scope="module")
def first_run(stack):
    conf = {"snapshot": SNAPSHOT, "rows": 30000, "seed": 5, "grid": DEFAULT_GRID, "r2_floor": 0.3}
    return run_dag(stack, conf)


def _client(uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _parent(client, run_id):
    exp = client.get_experiment_by_name("crossfit_athlete_airflow_run")
    parents = client.search_runs([exp.experiment_id], filter_string=f"tags.`airflow.run_id` = '{run_id}' and tags.pipeline = 'crossfit_training_pipeline'")
    assert len(parents) == 1
    return exp, parents[0]


def test_eight_finished_child_runs_with_metrics_emissions_and_artifacts(stack, first_run):
    client = _client(stack["uri"])
    exp, parent = _parent(client, first_run)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["gate.decision"] == "promoted"
    parent_files = {f.path for f in client.list_artifacts(parent.info.run_id)} | {
        f.path for f in client.list_artifacts(parent.info.run_id, "plots")
    }
    assert {"leaderboard.json", "leaderboard.csv", "plots/leaderboard.png"} <= parent_files

    children = client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 8
    assert {c.info.status for c in children} == {"FINISHED"}
    assert {(c.data.params["model"], c.data.params["feature_version"]) for c in children} == {
        (m, v) for m in ("random_forest", "lightgbm") for v in ("v1", "v2")
    }
    for child in children:
        metrics, tags = child.data.metrics, child.data.tags
        for key in ("val_rmse", "val_mae", "val_r2", "test_rmse", "test_mae", "test_r2", "fit_seconds"):
            assert key in metrics, key
        assert metrics["emissions_kg_co2eq"] > 0 and metrics["energy_kwh"] > 0 and metrics["emissions_duration_s"] > 0
        assert 0.0 < metrics["val_r2"] < 0.98
        assert tags["snapshot_id"] == SNAPSHOT and len(tags["snapshot_sha256"]) == 64
        assert tags["feature_service"] == f"model_{child.data.params['feature_version']}"
        assert tags["airflow.run_id"] == first_run and tags["airflow.task_id"] == T.TRAIN
        assert tags["git_commit"]
        files = {f.path for f in client.list_artifacts(child.info.run_id, "plots")}
        assert files == {"plots/predicted_vs_actual.png", "plots/residuals.png", "plots/feature_importance.png"}
        emissions = [f.path for f in client.list_artifacts(child.info.run_id, "emissions")]
        assert len(emissions) == 1 and emissions[0].endswith(".csv")
        assert [d.dataset.name for d in child.inputs.dataset_inputs] == [f"model_{child.data.params['feature_version']}-{SNAPSHOT}-train"]
        assert tags["dataset.test"].endswith("/test.parquet")
        models = client.search_logged_models([exp.experiment_id], filter_string=f"source_run_id = '{child.info.run_id}'")
        assert len(models) == 1
        # the run's metrics are linked to its LoggedModel too (the registry's model page shows them)
        assert {m.key: m.value for m in models[0].metrics}["val_rmse"] == metrics["val_rmse"]


def test_first_run_registers_a_champion_with_its_lineage(stack, first_run):
    client = _client(stack["uri"])
    champion = client.get_model_version_by_alias("crossfit_total_lift", CHAMPION)
    assert champion.version == "1"
    tags = champion.tags
    assert tags["gate.decision"] == "promoted" and "no champion yet" in tags["gate.reason"]
    assert tags["legacy_stage"] == "Production"
    assert tags["snapshot_id"] == SNAPSHOT and tags["feature_service"] in {"model_v1", "model_v2"}
    assert tags["airflow.run_id"] == first_run
    # the champion loads and predicts from the registry alias, with the spec's feature order
    import mlflow
    import pandas as pd

    from crossfit_mlops.features.specs import feature_set
    from crossfit_mlops.tracking import fluent

    with fluent(stack["uri"]):  # the process-wide URI for this block only
        model = mlflow.pyfunc.load_model(f"models:/crossfit_total_lift@{CHAMPION}")
    names = [c["name"] for c in model.metadata.get_input_schema().to_dict()]
    assert names == feature_set(tags["feature_version"]).names
    test = pd.read_parquet(stack["state"] / "data" / "training" / f"snapshot={SNAPSHOT}" / "sample=all" / tags["feature_version"] / "test.parquet")
    assert len(model.predict(test[names])) == len(test)


# passes the grid's check (a share in (0, 1]) but bags no row: LightGBM refuses it at fit time
REFUSED = {"model": "lightgbm", "feature_version": "v2", "params": {"n_estimators": 40, "subsample": 1e-9}}
REFUSED_NAME = "lightgbm-v2-n_estimators=40-subsample=1e-09"


def test_a_worse_challenger_is_registered_but_rejected(stack, first_run):
    worse = [{"model": "random_forest", "feature_version": "v1", "params": {"n_estimators": 2, "max_depth": 1}}]
    run = run_dag(stack, {"snapshot": SNAPSHOT, "grid": [*worse, REFUSED], "r2_floor": 0.0}, with_states=True)
    second = run.run_id
    client = _client(stack["uri"])
    assert client.get_model_version_by_alias("crossfit_total_lift", CHAMPION).version == "1"
    challenger = client.get_model_version_by_alias("crossfit_total_lift", CHALLENGER)
    assert challenger.version == "2"
    assert challenger.tags["gate.decision"] == "rejected"
    assert "does not beat the champion" in challenger.tags["gate.reason"]
    assert challenger.tags["gate.champion_version"] == "1"
    assert challenger.tags["legacy_stage"] == "Archived"
    exp, parent = _parent(client, second)
    assert parent.data.tags["gate.decision"] == "rejected" and parent.info.status == "FINISHED"

    # the fan-out survived the candidate LightGBM refused; the challenger came from the other one
    assert sorted(run.map_states(T.TRAIN)) == ["failed", "success"], run.mapped
    assert run.tasks[T.REGISTER] == "success"
    assert client.get_run(challenger.run_id).info.run_name.startswith("random_forest-v1")
    children = {c.info.run_name: c for c in client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")}
    refused = children[REFUSED_NAME]
    assert refused.info.status == "FAILED"
    assert refused.data.tags[ERROR_TAG].startswith(f"LightGBMError in the fit of {REFUSED_NAME}: Check failed"), refused.data.tags
    assert run.log.count(f"LightGBMError in the fit of {REFUSED_NAME}") >= 1
    board = json.loads(Path(client.download_artifacts(parent.info.run_id, "leaderboard.json")).read_text())
    rows = [dict(zip(board["columns"], row, strict=True)) for row in board["data"]]
    assert [(r["run_name"].split("-")[0], r["status"], r["rank"]) for r in rows] == [("random_forest", "trained", 1), ("lightgbm", "failed", None)]
    assert rows[1]["error"] == refused.data.tags[ERROR_TAG] and rows[1]["run_id"] == refused.info.run_id
    assert parent.data.metrics["failed_runs"] == 1 and parent.data.metrics["runs"] == 1
    # the stack's `pipeline` command prints the failed candidate under the trained ones, with its error
    from crossfit_stack.follow import format_summary, leaderboard

    trained, failed = leaderboard(stack["uri"], exp.experiment_id, parent.info.run_id, {})
    assert [row["run"] for row in trained] == [rows[0]["run_name"]]
    assert [(row["run"], row["feature_version"], row["run_id"]) for row in failed] == [(REFUSED_NAME, "v2", refused.info.run_id)]
    assert failed[0]["error"] == " ".join(refused.data.tags[ERROR_TAG].split())
    decision = {"decision": "rejected", "reason": "-", "challenger": {"version": "2", "feature_version": "v1", "rmse": 1.0, "r2": 0.0}}
    summary = {"leaderboard": trained, "failed": failed, "decision": decision,
               "parent": {"experiment_id": exp.experiment_id, "parent_run_id": parent.info.run_id}}  # fmt: skip
    printed = format_summary(summary, "http://mlflow", "http://airflow", "crossfit_total_lift").splitlines()
    assert printed[3].split()[:3] == [REFUSED_NAME, "v2", "FAILED:"] and "LightGBMError" in printed[3], printed

    # the alert: the rejected challenger, with its version and the gate's reason
    alert = stack["alerts"].wait_for(CHALLENGER_REJECTED, timeout=10, run_id=second)
    assert alert["dag_id"] == "crossfit_training_pipeline" and alert["task_id"] == T.KEEP
    assert alert["details"]["version"] == "2" and alert["details"]["champion_version"] == "1"
    assert alert["details"]["reason"] == challenger.tags["gate.reason"]
    assert alert["summary"].startswith("crossfit_total_lift v2 not promoted: ")
    assert not stack["alerts"].events(DAG_RUN_FAILED), "no run failed"
    assert len(stack["alerts"].events(CHALLENGER_REJECTED)) == 1, "the first run promoted: nothing to alert"


def test_promote_then_roll_back_with_the_cli(stack, first_run):
    """Promoting v2 archives v1; ``registry rollback`` puts @champion back on v1."""
    import os

    from crossfit_mlops.registry.promotion import promote

    if _client(stack["uri"]).get_model_version_by_alias("crossfit_total_lift", CHALLENGER).version != "2":
        pytest.skip("needs the rejected challenger of the previous test")
    assert promote(stack["uri"], "crossfit_total_lift", "2") == "1"
    client = _client(stack["uri"])
    assert client.get_model_version("crossfit_total_lift", "1").tags["legacy_stage"] == "Archived"
    env = {**os.environ, "MLFLOW_TRACKING_URI": stack["uri"], "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run([sys.executable, "-m", "crossfit_mlops", "registry", "rollback"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "v2 -> v1" in done.stdout
    assert client.get_model_version_by_alias("crossfit_total_lift", CHAMPION).version == "1"
    assert client.get_model_version("crossfit_total_lift", "1").tags["legacy_stage"] == "Production"
    # v1 was the first champion: rolling back again is refused with the reason
    again = subprocess.run([sys.executable, "-m", "crossfit_mlops", "registry", "rollback"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "first champion" in again.stderr


def test_the_alias_history_records_each_move_in_order(stack, first_run):
    """Registration, promotion, rejection, a promotion by hand and the CLI's rollback, in order,
    each with who did it; the rollback restored the champion before."""
    from crossfit_mlops.tracking.history import history

    if _client(stack["uri"]).get_model_version_by_alias("crossfit_total_lift", CHAMPION).version != "1":
        pytest.skip("needs the rollback of the previous test")
    events = [(e["event"], e["alias"], e["from_version"], e["to_version"]) for e in history(stack["uri"], "crossfit_total_lift")]
    assert events == [
        ("registration", CHALLENGER, "none", "1"),
        ("promotion", CHAMPION, "none", "1"),
        ("registration", CHALLENGER, "1", "2"),
        ("rejection", CHAMPION, "1", "1"),
        ("promotion", CHAMPION, "1", "2"),
        ("rollback", CHAMPION, "2", "1"),
    ], events
    actors = [e["actor"] for e in history(stack["uri"], "crossfit_total_lift")]
    assert actors[0].startswith("airflow:crossfit_training_pipeline/") and actors[-1].startswith("cli:")


def test_connections_dag_reaches_mlflow_and_feast(stack):
    """``test_connections`` passes against the real server; PostgreSQL is skipped when unconfigured."""
    run = dag_test(stack["env"], "test_connections", {}, timeout=300)
    out = run.log
    assert run.state == "success", out[-4000:]
    assert "MLflow OK" in out and "Feast OK" in out
    assert "connection 'crossfit_postgres' is not configured" in out


def test_every_registered_version_has_a_model_card(stack, first_run):
    """A card per version, naming its metrics with their intervals, energy and the gate's reason."""
    from crossfit_mlops.registry.card import read_card

    client = _client(stack["uri"])
    for mv in client.search_model_versions("name='crossfit_total_lift'"):
        card = read_card(stack["uri"], "crossfit_total_lift", mv.version)
        assert f"# Model card: crossfit_total_lift v{mv.version}" in card
        assert "| validation |" in card and "| test |" in card and " to " in card, "metrics with intervals"
        assert "Energy" in card and "g CO2eq" in card
        assert mv.tags["gate.reason"] in card and mv.tags["snapshot_sha256"] in card
        assert mv.tags["model_card"] == f"runs:/{mv.run_id}/model_card/card.html"
        assert "Model card: runs:/" in (mv.description or "")
        html = _client(stack["uri"]).download_artifacts(mv.run_id, "model_card/card.html")
        text = Path(html).read_text()
        assert "<table>" in text and "data:image/png;base64," in text, "self-contained: tables and embedded plots"


def test_lineage_resolves_both_ways(stack, first_run):
    """Version -> FeatureService (through Feast's own MLflow resolver), views, snapshot; and a view
    -> the versions that use it."""
    import os

    from crossfit_mlops.features.feast_repo import get_store
    from crossfit_mlops.registry.lineage import lineage, versions_using
    from crossfit_mlops.settings import get_settings

    settings = get_settings({**os.environ, "CROSSFIT_STATE_DIR": str(stack["state"]), "MLFLOW_TRACKING_URI": stack["uri"]})
    for mv in _client(stack["uri"]).search_model_versions("name='crossfit_total_lift'"):
        found = lineage(stack["uri"], "crossfit_total_lift", mv.version, store=get_store(settings))
        version = mv.tags["feature_version"]
        assert found["feature_service"] == f"model_{version}" and found["snapshot_id"] == SNAPSHOT
        assert [v["name"] for v in found["feature_views"]] == [f"athlete_features_{version}"]
        assert found["training_sets"]["test"].endswith("/test.parquet") and len(found["features"]) in (5, 34)
        users = versions_using(stack["uri"], "crossfit_total_lift", f"athlete_features_{version}")
        assert mv.version in [u["version"] for u in users]
