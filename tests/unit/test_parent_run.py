"""Every failed DAG run leaves its MLflow parent FAILED, even when no task recorded its id."""

from __future__ import annotations

from crossfit_mlops.tracking.runs import ensure_experiment, fail_parent_runs, start_parent_run


def test_a_parent_without_a_recorded_id_is_found_by_its_run_tag_and_failed(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = ensure_experiment(uri, "exp", artifact_location=str(tmp_path / "artifacts"))
    mine = start_parent_run(uri, experiment, "run-a", {"airflow.run_id": "run-a", "pipeline": "dag"})
    other = start_parent_run(uri, experiment, "run-b", {"airflow.run_id": "run-b", "pipeline": "dag"})
    assert fail_parent_runs(uri, "exp", "run-a", "dag") == [mine]
    client = MlflowClient(uri)
    assert client.get_run(mine).info.status == "FAILED"
    assert client.get_run(other).info.status == "RUNNING", "another DAG run's parent is not touched"
    assert fail_parent_runs(uri, "missing-experiment", "run-a", "dag") == []
