"""The production topology, run for real on this machine as local processes.

- MLflow tracking + registry on PostgreSQL (a database created here on the local server);
- Airflow's metadata on PostgreSQL (another database), LocalExecutor, parallelism 4;
- Feast's online store on Redis (an empty database of the local server), and its registry in
  PostgreSQL (Feast's SQL registry, a third database).

The training DAG is triggered through the REST API with a 4-task grid. The test then reads back
that the fan-out ran in parallel (overlapping task intervals from Airflow's API), that the registry
and its aliases live in MLflow's PostgreSQL tables, that Airflow's runs live in its PostgreSQL
database, and that the prediction API serves the champion from the Redis online store.
"""

from __future__ import annotations

import os
from datetime import datetime

import pytest
import requests

from crossfit_mlops.contract import TrainingTasks as T
from tests.support.services import QUIET_ENV, empty_redis_db, free_port, postgres_database

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG = "crossfit_training_pipeline"
GRID = [
    {"model": "lightgbm", "feature_version": version, "params": {"n_estimators": n, "num_leaves": 15}}
    for version in ("v1", "v2")
    for n in (150, 300)
]


def _query(uri: str, sql: str) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(uri.replace("postgresql+psycopg2://", "postgresql://")) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def test_training_on_postgres_and_redis_runs_the_fanout_in_parallel(tmp_path, monkeypatch):
    from crossfit_mlops.ops import stack

    with (
        postgres_database("crossfit_test_mlflow") as mlflow_db,
        postgres_database("crossfit_test_airflow") as airflow_db,
        postgres_database("crossfit_test_feast") as feast_db,
        empty_redis_db() as redis_db,
    ):
        env = {
            **QUIET_ENV,
            "CROSSFIT_STATE_DIR": str(tmp_path / "state"),
            "CROSSFIT_MLFLOW_PORT": str(free_port()),
            "CROSSFIT_AIRFLOW_PORT": str(free_port()),
            "CROSSFIT_API_PORT": str(free_port()),
            "CROSSFIT_MLFLOW_BACKEND_URI": mlflow_db,
            "CROSSFIT_AIRFLOW_DB_URI": airflow_db,
            "CROSSFIT_FEAST_REDIS": f"127.0.0.1:6379,db={redis_db}",
            "CROSSFIT_FEAST_REGISTRY_URI": feast_db,
            "CROSSFIT_AIRFLOW_PARALLELISM": "4",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        for name in ("MLFLOW_TRACKING_URI", "AIRFLOW_HOME"):
            monkeypatch.delenv(name, raising=False)
        cfg = stack.config_from_env()
        try:
            client = stack.up_and_connect(cfg, DAG)
            client.unpause(DAG)
            run_id = client.trigger(DAG, {"rows": 20000, "snapshot": "2026-11-02", "grid": GRID, "r2_floor": 0.2})
            run = client.wait_for_run(DAG, run_id, timeout=900, poll=2.0)
            assert run["state"] == "success", f"{run}; logs in {cfg.airflow_home / 'logs'}"

            # the fan-out ran in parallel: some training tasks overlapped in time
            tis = [t for t in client.task_instances(DAG, run_id) if t["task_id"] == T.TRAIN]
            assert len(tis) == 4 and all(t["state"] == "success" for t in tis)
            spans = sorted((datetime.fromisoformat(t["start_date"]), datetime.fromisoformat(t["end_date"])) for t in tis)
            overlaps = sum(1 for (s1, e1), (s2, _) in zip(spans, spans[1:], strict=False) if s2 < e1)
            assert overlaps >= 1, spans
            most_at_once = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
            assert most_at_once >= 2, spans

            # MLflow's registry is in PostgreSQL: the alias row is there
            aliases = _query(mlflow_db, "SELECT name, alias, version FROM registered_model_aliases")
            assert ("crossfit_total_lift", "champion", 1) in aliases
            assert _query(mlflow_db, "SELECT count(*) FROM runs")[0][0] >= 5  # parent + 4 children
            # Feast's registry is in its PostgreSQL database: views and services applied by the DAG
            views = _query(feast_db, "SELECT feature_view_name FROM feature_views ORDER BY 1")
            assert views == [("athlete_features_v1",), ("athlete_features_v2",)]
            assert len(_query(feast_db, "SELECT feature_service_name FROM feature_services")) == 2
            assert not (cfg.settings.feast_registry_path).exists(), "the file registry should not be used"
            # Airflow's metadata is in the other PostgreSQL database
            assert _query(airflow_db, f"SELECT state FROM dag_run WHERE run_id = '{run_id}'") == [("success",)]

            # the API serves the champion from the Redis online store
            assert stack.start_api(cfg) == "started"
            from crossfit_mlops.serving.features import example_athlete

            athlete = example_athlete(cfg.settings)
            answer = requests.post(f"{cfg.api_url}/predict", json={"athlete_id": athlete}, timeout=30)
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == "1"
            import redis

            assert redis.Redis(host="127.0.0.1", port=6379, db=redis_db).dbsize() > 100
        finally:
            stack.down(cfg)
    assert not os.path.exists(cfg.run_dir / "api.json")
    assert not stack.supervisor(cfg).is_running(), "stack.down leaves supervisord running"
