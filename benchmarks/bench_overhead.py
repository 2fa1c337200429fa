"""Two older baselines of the training benchmark, kept for comparison (``--overhead-baselines``):
the same grid's fits in one plain process, one after another, and the same training runs with all
their logging (CodeCarbon, MLflow run, plots, model, dataset), one process, no Airflow."""

from __future__ import annotations

import time
from pathlib import Path


def bare_fits(training_sets: dict[str, dict], grid: list[dict]) -> dict[str, float]:
    """The baseline: fit every grid entry in this process, sequentially, nothing else."""
    from crossfit_mlops.features.training_sets import load_split
    from crossfit_mlops.training.grid import build_estimator, parse_grid

    seconds = {}
    for config in parse_grid(grid):
        X, y, _ = load_split(training_sets[config.feature_version], "train")
        estimator = build_estimator(config)
        started = time.perf_counter()
        estimator.fit(X, y)
        seconds[config.name] = time.perf_counter() - started
    return seconds


def logged_runs(training_sets: dict[str, dict], grid: list[dict], tracking_uri: str, emissions_dir: Path) -> dict[str, dict]:
    """The second baseline: the same 8 training runs, with everything each run logs (CodeCarbon,
    MLflow child run, plots, model, dataset), called one after another in this process against the
    same MLflow server, with no Airflow and no other task competing for the CPU. Imports are warmed
    first exactly as the scheduler warms them. What is left of the overhead here is the per-run
    work itself; the rest of the pipeline's overhead is orchestration and contention."""
    import mlflow

    from crossfit_mlops.training.grid import parse_grid
    from crossfit_mlops.training.train import RunContext, train_candidate
    from crossfit_stack.preload import preload

    preload()
    client = mlflow.MlflowClient(tracking_uri)
    experiment_id = client.create_experiment(f"bench_logged_runs_sequential_{time.time_ns()}")
    parent = client.create_run(experiment_id, run_name="logged runs, sequential, no Airflow").info.run_id
    ctx = RunContext(tracking_uri=tracking_uri, experiment_id=experiment_id, parent_run_id=parent, emissions_dir=str(emissions_dir))
    out = {}
    for config in parse_grid(grid):
        started = time.perf_counter()
        summary = train_candidate(config, training_sets[config.feature_version], ctx)
        out[config.name] = {"fit_s": summary["fit_seconds"], "task_s": time.perf_counter() - started}
    client.set_terminated(parent)
    return out
