"""The S3-backed profile end to end: the training DAG (``dag.test()``) with every piece of the
pipeline's data in a real SeaweedFS bucket, the snapshot locks and Feast's registry in PostgreSQL,
the online store in Redis, and the task host's state directory impossible to create (its parent is
a regular file: even root cannot make a folder there). A task that wrote a file for another task to
read from a local disk fails the run; none does.

Real parts: SeaweedFS (``weed server``, the cluster stack's command line), a real MLflow server,
PostgreSQL and Redis on this machine.
"""

from __future__ import annotations

import pytest

from crossfit_mlops.tracking.aliases import CHAMPION
from tests.support.pipeline import GRID
from tests.support.services import airflow_env, dag_test, mlflow_server, s3_profile

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SNAPSHOT = "2026-11-02"


@pytest.fixture(scope="module")
def s3_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("s3")
    blocker = base / "not-a-folder"
    blocker.write_text("the task host's state directory cannot be created under a regular file\n")
    with s3_profile(base / "services") as (profile, store), mlflow_server(base / "mlflow_state") as uri:
        env = {**airflow_env(base / "airflow", blocker / "state", uri), **profile}
        run = dag_test(env, "crossfit_training_pipeline", {"snapshot": SNAPSHOT, "rows": 4000, "seed": 5, "grid": GRID, "r2_floor": -0.5})
        yield {"run": run, "uri": uri, "store": store, "env": env, "blocker": blocker}


def test_the_training_dag_reaches_a_champion_with_no_local_state(s3_run):
    from mlflow import MlflowClient

    run = s3_run["run"]
    assert run.state == "success", run.log[-8000:]
    client = MlflowClient(tracking_uri=s3_run["uri"], registry_uri=s3_run["uri"])
    champion = client.get_model_version_by_alias("crossfit_total_lift", CHAMPION)
    tags = client.get_run(champion.run_id).data.tags
    assert tags["dataset.test"].startswith("s3://crossfit-data/crossfit/data/training/"), tags["dataset.test"]
    assert s3_run["blocker"].is_file(), "nothing replaced the blocker to make a state directory"


def test_every_artifact_of_the_run_is_in_the_bucket(s3_run):
    fs, root = s3_run["store"].filesystem(), "crossfit-data/crossfit"
    keys = [k.removeprefix(root + "/") for k in fs.find(root)]
    snapshot = f"snapshot={SNAPSHOT}"
    def under(prefix: str) -> list[str]:
        return [k for k in keys if k.startswith(prefix)]

    assert any(k.endswith("/athletes.csv") for k in under(f"data/raw/{snapshot}/v-"))
    assert f"data/raw/{snapshot}/_CURRENT.json" in keys
    assert any(k.endswith("/athletes_clean.parquet") for k in under(f"data/processed/{snapshot}/v-"))
    for view in ("athlete_features_v1", "athlete_features_v2"):
        assert f"data/features/{view}/snapshot_{SNAPSHOT}.parquet" in keys
    assert any(k.endswith("/train.parquet") for k in under(f"data/training/{snapshot}/"))
    assert len([k for k in under("emissions/") if k.endswith(".csv")]) == len(GRID), "one emissions file per training task"


def test_monitoring_reads_and_writes_the_bucket(s3_run):
    """Monitoring on the same profile reads the champion's test set from the bucket and publishes
    its report there (and logs it to MLflow through a temporary download). (Batch inference on this
    profile ran by hand on 2026-12-07: its predictions were published in the bucket; it is left out
    of CI for time.)"""
    env, fs, root = s3_run["env"], s3_run["store"].filesystem(), "crossfit-data/crossfit"
    monitoring = dag_test(env, "crossfit_monitoring", {"snapshot": "2026-12-01", "rows": 4000})
    assert monitoring.state == "success", monitoring.log[-8000:]
    reports = [k for k in fs.find(f"{root}/monitoring/snapshot=2026-12-01") if k.endswith("/summary.json")]
    assert len(reports) == 1 and "/v-" in reports[0], reports
    assert s3_run["blocker"].is_file()
