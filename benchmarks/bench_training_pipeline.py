"""Time the full-size default training run through the local stack, and where the time goes.

Starts the local stack (MLflow + Airflow processes) in its own state directory and ports, triggers
``crossfit_training_pipeline`` through the REST API with the defaults (423,006 raw rows, the 8-entry
grid), and reads back from Airflow's API and MLflow:

- wall time from the trigger to the gate's decision (the run's queued time -> end of
  promote_challenger / keep_champion), and to the end of the run;
- per-task durations (the mapped training tasks one by one);
- fit seconds of each training run (metric ``fit_seconds``, measured around ``estimator.fit``);
- orchestration overhead ratio = 1 - sum(fit seconds) / sum(training task durations): the share of
  the training tasks' time not spent inside model fitting (imports, data loading, CodeCarbon,
  MLflow logging, plots, model saving, contention);
- named baselines, in the same run on the same training sets: the same 8 fits in one plain Python
  process, one after another, with no Airflow, MLflow or CodeCarbon (``bare_fits``); and the same 8
  training runs with all their logging, one after another in one process against the same MLflow
  server, with no Airflow and nothing else running (``logged_runs``): its overhead ratio is the
  per-run work alone, so the difference to the pipeline's is orchestration and contention.

    .venv/bin/python benchmarks/bench_training_pipeline.py [--rows N] [--keep-stack]

Writes benchmarks/results/training_pipeline.json and prints a table. The benchmark's state lives
in <state dir>/bench/training (deleted at the start of each run, so the snapshot is generated anew).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from datetime import datetime
from pathlib import Path

from crossfit_mlops.contract import TRAINING_DAG as DAG
from crossfit_mlops.contract import TrainingTasks as T
from crossfit_mlops.data.vocabulary import FULL_SIZE

RESULTS = Path(__file__).parent / "results" / "training_pipeline.json"


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


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

    from crossfit_mlops.ops.preload import preload
    from crossfit_mlops.training.grid import parse_grid
    from crossfit_mlops.training.train import RunContext, train_candidate

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=FULL_SIZE)
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack running afterwards")
    args = parser.parse_args()

    from crossfit_mlops.settings import get_settings

    state = get_settings().state_dir / "bench" / "training"
    shutil.rmtree(state, ignore_errors=True)
    os.environ.update(
        {
            "CROSSFIT_STATE_DIR": str(state),
            "CROSSFIT_MLFLOW_PORT": os.environ.get("CROSSFIT_BENCH_MLFLOW_PORT", "5071"),
            "CROSSFIT_AIRFLOW_PORT": os.environ.get("CROSSFIT_BENCH_AIRFLOW_PORT", "8081"),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "FEAST_USAGE": "False",
        }
    )
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from crossfit_mlops.ops import stack
    from crossfit_mlops.tracking.runs import child_runs
    from crossfit_mlops.training.grid import DEFAULT_GRID

    cfg = stack.config_from_env()
    t0 = time.perf_counter()
    client = stack.up_and_connect(cfg, DAG)
    stack_start_s = time.perf_counter() - t0
    try:
        client.unpause(DAG)
        client_trigger = time.perf_counter()
        run_id = client.trigger(DAG, {"rows": args.rows})
        run = client.wait_for_run(DAG, run_id, timeout=1800, poll=1.0)
        client_wall_s = time.perf_counter() - client_trigger
        if run["state"] != "success":
            raise SystemExit(f"run {run_id} ended {run['state']}: see {cfg.airflow_home / 'logs'}")
        tis = client.task_instances(DAG, run_id)
        queued = _ts(run["queued_at"])
        decision_end = max(_ts(t["end_date"]) for t in tis if t["task_id"] in {T.PROMOTE, T.KEEP} and t["state"] == "success")
        run_end = _ts(run["end_date"])
        tasks = []
        for t in sorted(tis, key=lambda t: (t["start_date"] or "", t["map_index"])):
            if t["state"] != "success":
                continue
            tasks.append(
                {
                    "task": t["task_id"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else ""),
                    "start_s": round((_ts(t["start_date"]) - queued).total_seconds(), 1),
                    "duration_s": round((_ts(t["end_date"]) - _ts(t["start_date"])).total_seconds(), 1),
                }
            )
        parent = client.xcom(DAG, run_id, T.START_MLFLOW_RUN)
        decision = client.xcom(DAG, run_id, T.JUDGE)
        train_durations = {
            t["map_index"]: (_ts(t["end_date"]) - _ts(t["start_date"])).total_seconds() for t in tis if t["task_id"] == T.TRAIN
        }
        import mlflow

        mlflow.set_tracking_uri(parent["tracking_uri"])
        runs, phase_totals = [], {}
        for r in child_runs(parent["tracking_uri"], parent["experiment_id"], parent["parent_run_id"]):
            index = int(r.data.tags["airflow.map_index"])
            timings = mlflow.artifacts.load_dict(f"runs:/{r.info.run_id}/timings.json")
            phases = dict(timings["phases_s"])
            # outside train_candidate: task process start, DAG parse, XCom pull/push, log upload
            phases["airflow_task_runner"] = train_durations[index] - timings["task_s"]
            phases["other_in_task"] = timings["task_s"] - sum(timings["phases_s"].values())
            for name, value in phases.items():
                phase_totals[name] = phase_totals.get(name, 0.0) + value
            runs.append(
                {
                    "run": r.info.run_name,
                    "fit_s": round(r.data.metrics["fit_seconds"], 2),
                    "task_s": round(train_durations[index], 1),
                    "val_rmse": round(r.data.metrics["val_rmse"], 1),
                    "val_r2": round(r.data.metrics["val_r2"], 4),
                    "g_co2eq": round(r.data.metrics["emissions_kg_co2eq"] * 1000, 4),
                }
            )
        sum_fit = sum(r["fit_s"] for r in runs)
        sum_task = sum(r["task_s"] for r in runs)
        training_sets = {job["training_set"]["feature_version"]: job["training_set"] for job in client.xcom(DAG, run_id, T.PLAN)}
        baseline = bare_fits(training_sets, DEFAULT_GRID)
        sequential = logged_runs(training_sets, DEFAULT_GRID, parent["tracking_uri"], state / "bench_emissions")
    finally:
        if not args.keep_stack:
            stack.down(cfg)

    train_tis = [t for t in tis if t["task_id"] == T.TRAIN]
    fanout_s = (max(_ts(t["end_date"]) for t in train_tis) - min(_ts(t["start_date"]) for t in train_tis)).total_seconds()
    result = {
        "rows": args.rows,
        "grid_entries": len(DEFAULT_GRID),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "airflow_parallelism": cfg.parallelism,
        "stack_start_s": round(stack_start_s, 1),
        "trigger_to_gate_decision_s": round((decision_end - queued).total_seconds(), 1),
        "trigger_to_run_end_s": round((run_end - queued).total_seconds(), 1),
        "client_trigger_to_success_seen_s": round(client_wall_s, 1),
        "wall_target_s": 180,
        "training_fanout_wall_s": round(fanout_s, 1),
        "sum_fit_s": round(sum_fit, 1),
        "sum_training_task_s": round(sum_task, 1),
        "orchestration_overhead_ratio": round(1 - sum_fit / sum_task, 3),
        "overhead_target": 0.30,
        "sum_phase_s": {k: round(v, 1) for k, v in sorted(phase_totals.items(), key=lambda kv: -kv[1])},
        "baseline_bare_fits_sequential_s": round(sum(baseline.values()), 1),
        "baseline_bare_fits": {k: round(v, 2) for k, v in baseline.items()},
        "baseline_logged_runs_sequential": {
            "sum_fit_s": round(sum(v["fit_s"] for v in sequential.values()), 1),
            "sum_run_s": round(sum(v["task_s"] for v in sequential.values()), 1),
            "overhead_ratio": round(1 - sum(v["fit_s"] for v in sequential.values()) / sum(v["task_s"] for v in sequential.values()), 3),
            "runs": {k: {m: round(x, 2) for m, x in v.items()} for k, v in sequential.items()},
        },
        "gate_decision": {"decision": decision["decision"], "reason": decision["reason"], "challenger": decision["challenger"]},
        "runs": sorted(runs, key=lambda r: r["val_rmse"]),
        "tasks": tasks,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    print(f"stack start: {result['stack_start_s']} s (not part of the run)")
    print(f"trigger -> gate decision: {result['trigger_to_gate_decision_s']} s (target < {result['wall_target_s']} s); "
          f"run end: {result['trigger_to_run_end_s']} s")
    print(f"training fan-out wall: {result['training_fanout_wall_s']} s; sum of task durations {result['sum_training_task_s']} s; "
          f"sum of fits {result['sum_fit_s']} s -> overhead ratio {result['orchestration_overhead_ratio']:.1%} (target < 30%)")
    print("where the training tasks' time went (sum over the 8 tasks, seconds): "
          + ", ".join(f"{k} {v}" for k, v in result["sum_phase_s"].items()))
    print(f"baseline (same 8 fits, one plain process, sequential): {result['baseline_bare_fits_sequential_s']} s")
    seq = result["baseline_logged_runs_sequential"]
    print(f"baseline (same 8 runs with all their logging, one process, sequential, no Airflow): fits {seq['sum_fit_s']} s "
          f"of {seq['sum_run_s']} s -> overhead ratio {seq['overhead_ratio']:.1%}")
    print("\ntask timeline (seconds after the trigger):")
    for t in tasks:
        print(f"  {t['start_s']:7.1f} +{t['duration_s']:6.1f}  {t['task']}")
    print("\nruns:")
    for r in result["runs"]:
        print(f"  {r['run'][:60]:<60} fit {r['fit_s']:6.2f}s task {r['task_s']:6.1f}s val RMSE {r['val_rmse']:6.1f} R² {r['val_r2']:.3f}")
    print(f"\ngate: {decision['decision']}: {decision['reason']}\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
