"""Helpers of the tests that drive the training pipeline on a local stack through the REST API."""

from __future__ import annotations

from crossfit_mlops.dag_contract import TRAINING_DAG

MODEL = "crossfit_total_lift"
ROWS = 4000
GRID = [
    {"model": "lightgbm", "feature_version": version, "params": {"n_estimators": 40, "num_leaves": 7}}
    for version in ("v1", "v2")
]


def mlflow_client(uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def trigger(stack, snapshot: str, grid=GRID, rows: int = ROWS, **conf) -> str:
    """Trigger the training DAG on a small snapshot (any R² passes the floor: tiny data)."""
    body = {"snapshot": snapshot, "rows": rows, "grid": grid, "r2_floor": -0.5, **conf}
    return stack["client"].trigger(TRAINING_DAG, body)


def wait(stack, run_id: str, timeout: float = 600) -> dict:
    return stack["client"].wait_for_run(TRAINING_DAG, run_id, timeout=timeout, poll=1.0)


def parents(stack, run_id: str):
    c = mlflow_client(stack["uri"])
    experiment = c.get_experiment_by_name(stack["cfg"].settings.mlflow_experiment)
    query = f"tags.`airflow.run_id` = '{run_id}' and tags.pipeline = '{TRAINING_DAG}'"
    return experiment.experiment_id, c.search_runs([experiment.experiment_id], filter_string=query)


def children(stack, experiment_id: str, parent_id: str, view: str = "active_only"):
    from mlflow.entities import ViewType

    return mlflow_client(stack["uri"]).search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'", run_view_type=ViewType.from_string(view)
    )


def versions(stack, model: str = MODEL) -> list:
    from mlflow.exceptions import MlflowException

    try:
        return sorted(mlflow_client(stack["uri"]).search_model_versions(f"name='{model}'"), key=lambda v: int(v.version))
    except MlflowException:
        return []


def champion(stack, model: str = MODEL) -> str | None:
    from crossfit_mlops.tracking.aliases import champion_version

    return champion_version(stack["uri"], model)




def task_log(stack, run_id: str, task_instance: dict, dag_id: str = TRAINING_DAG) -> str:
    """A try's whole log as the REST API serves it to the UI (raw JSON: the structured fields of
    an error, such as the exception's message, are kept)."""
    ti = task_instance
    raw = stack["client"]._call(
        "TaskInstanceApi", "get_log_without_preload_content", dag_id, run_id, ti["task_id"], ti["try_number"],
        map_index=ti["map_index"], full_content=True,
    )  # fmt: skip
    return raw.data.decode()
