"""
### test_connections

Checks that this Airflow deployment reaches what the training pipeline needs, one task each:

- **check_mlflow**: the tracking server answers `/health` and lists experiments (the URI comes from
  the `crossfit_mlflow_tracking_uri` Variable, else `MLFLOW_TRACKING_URI`).
- **check_feast**: the Feast repo's registry loads and the definitions apply (idempotent).
- **check_postgres**: `SELECT 1` over the Airflow connection `crossfit_postgres`; skipped when that
  connection is not configured.

Trigger it after changing connections or Variables; a red task says what is unreachable.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from crossfit_mlops.dag_contract import CONNECTIONS_DAG, DAG_RUN_TIMEOUT, timeout
from crossfit_mlops.dag_contract import ConnectionTasks as T
from crossfit_mlops.settings import task_settings

POSTGRES_CONN_ID = "crossfit_postgres"


@task(task_id=T.MLFLOW, **timeout("quick"))
def check_mlflow() -> dict:
    """MLflow tracking server: health endpoint and the experiments API."""
    from crossfit_mlops.ops.connections import check_mlflow as check

    return check(task_settings().mlflow_tracking_uri)


@task(task_id=T.FEAST, **timeout("quick"))
def check_feast() -> dict:
    """Feast: the registry loads and the feature views / services are registered."""
    from crossfit_mlops.ops.connections import check_feast as check

    return check(task_settings())


@task(task_id=T.POSTGRES, **timeout("quick"))
def check_postgres() -> dict:
    """PostgreSQL over the `crossfit_postgres` connection, when it is configured."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException, AirflowSkipException

    from crossfit_mlops.ops.connections import check_postgres as check

    try:
        conn = Connection.get(POSTGRES_CONN_ID)
    except AirflowNotFoundException as exc:
        raise AirflowSkipException(f"connection {POSTGRES_CONN_ID!r} is not configured") from exc
    return check(host=conn.host, port=conn.port or 5432, user=conn.login, password=conn.password, dbname=conn.schema)


@dag(
    dag_id=CONNECTIONS_DAG,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    dagrun_timeout=DAG_RUN_TIMEOUT,
    tags=["crossfit", "ops"],
    default_args={"owner": "crossfit-mlops", "retries": 2, "retry_delay": timedelta(seconds=5)},
)
def test_connections():
    check_mlflow()
    check_feast()
    check_postgres()


test_connections()
