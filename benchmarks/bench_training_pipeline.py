"""The cost of the machinery: the full-size training run against what a user would write instead.

Starts the local stack (MLflow + Airflow processes) in its own state directory and ports, ingests
a full-size raw snapshot (423,006 rows; generation timed apart: both sides then read the same
file), triggers ``crossfit_training_pipeline`` through the REST API with the default grid, and reads
back from Airflow's API, MLflow and the stores. Named baselines, measured in the same invocation:

- ``plain_script``: benchmarks/plain_script.py, one process that validates and cleans the same raw
  snapshot with the package's contract and cleaning, builds V1/V2, fits the same grid in 2 worker
  processes (the pipeline's parallelism on 2 cores) and picks the best on validation; no Airflow,
  MLflow or Feast. The headline is ``trigger -> gate`` divided by its wall time (target <= 1.25).
- ``redis_online_store``: the same two feature views materialized by Feast into a Redis database
  (an empty db of the local server, flushed afterwards) instead of the SQLite file.
- ``machinery_floor``: a second run of the same DAG right after, on a small snapshot
  (:data:`FLOOR_ROWS` raw rows) with the same 8 grid entries shrunk to a few shallow trees each:
  the same tasks, the same MLflow runs, plots, models, emissions and gate, with almost no data to
  work on. Its ``trigger -> gate`` is what the machinery costs by itself on this machine; divided by
  the plain script's wall it is the lowest ratio this DAG could reach (the fits cannot cost less than
  nothing). It runs second, so its gate judges against the first run's champion.
- with ``--overhead-baselines``: the same fits in one plain process, one after another (``bare_fits``),
  and the same training runs with all their logging, one process, no Airflow (``logged_runs``).

Recorded: trigger -> gate and -> run end, the task timeline, where the training tasks' time went
(each run's ``timings.json``), artifact bytes of this run in the artifact store (models, plots,
emissions, other), materialize seconds and the online store's size.

    .venv/bin/python -m benchmarks.bench_training_pipeline [--rows N] [--keep-stack] [--overhead-baselines]

Writes benchmarks/results/training_pipeline.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from crossfit_mlops.dag_contract import TRAINING_DAG as DAG
from crossfit_mlops.dag_contract import TrainingTasks as T
from crossfit_mlops.data.vocabulary import FULL_SIZE

RESULTS = Path(__file__).parent / "results" / "training_pipeline.json"
SNAPSHOT = "2026-11-30"
FLOOR_SNAPSHOT = "2026-12-01"
FLOOR_ROWS = 5000
# the floor run's fits: each grid entry keeps its family and feature version, with a few shallow trees
FLOOR_PARAMS = {"random_forest": {"n_estimators": 5, "max_depth": 3}, "lightgbm": {"n_estimators": 5, "num_leaves": 4}}


def floor_grid(grid: list[dict]) -> list[dict]:
    """The grid's entries, one per (family, feature version, position), each shrunk to a few trees."""
    return [
        {"model": e["model"], "feature_version": e["feature_version"],
         "params": {**FLOOR_PARAMS[e["model"]], "min_samples_leaf" if e["model"] == "random_forest" else "min_child_samples": 1 + i}}
        for i, e in enumerate(grid)
    ]  # fmt: skip


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _mb(size: float) -> float:
    return round(size / 1e6, 1)


def artifact_bytes(root: Path) -> dict[str, int]:
    """Bytes under the artifact store's root, by kind: logged models, plots, emissions, the rest."""
    kinds = {"models": 0, "plots": 0, "emissions": 0, "other": 0}
    for path in root.rglob("*"):
        if path.is_file():
            parts = path.relative_to(root).parts
            kind = "models" if "models" in parts else "plots" if "plots" in parts else "emissions" if "emissions" in parts else "other"
            kinds[kind] += path.stat().st_size
    return kinds


def plain_script(raw: Path, grid: list[dict], snapshot: str = SNAPSHOT) -> dict:
    """Run benchmarks/plain_script.py on ``raw``: its summary, with the peak RSS of its largest
    process (the main one or a fit worker: :class:`~benchmarks.process_memory.PeakMemory`)."""
    from benchmarks.process_memory import PeakMemory

    argv = [sys.executable, str(Path(__file__).parent / "plain_script.py"), "--raw", str(raw), "--snapshot", snapshot,
            "--grid", json.dumps(grid), "--processes", "2"]  # fmt: skip
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        label = {proc.pid: "plain script"}
        with PeakMemory(roots=lambda: [proc.pid], label=lambda pid, _: label.get(pid, "plain script: fit worker"),
                        include_roots=True) as memory:  # fmt: skip
            out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"the plain script failed ({proc.returncode}): {err.strip()[-2000:]}")
    return {**json.loads(out.strip().splitlines()[-1]), "peak_rss_mb": memory.largest()}


def bench_environment(state: Path) -> None:
    """Point this process (and the stack it starts) at a fresh state directory and the benchmark's
    own ports, so a benchmark never touches the user's stack."""
    shutil.rmtree(state, ignore_errors=True)
    os.environ.update({
        "CROSSFIT_STATE_DIR": str(state),
        "CROSSFIT_MLFLOW_PORT": os.environ.get("CROSSFIT_BENCH_MLFLOW_PORT", "5071"),
        "CROSSFIT_AIRFLOW_PORT": os.environ.get("CROSSFIT_BENCH_AIRFLOW_PORT", "8081"),
        "CROSSFIT_API_PORT": os.environ.get("CROSSFIT_BENCH_API_PORT", "8071"),
        "CROSSFIT_WORKER_LOG_PORT": os.environ.get("CROSSFIT_BENCH_WORKER_LOG_PORT", "8794"),
        "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "FEAST_USAGE": "False",
    })  # fmt: skip
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def redis_materialize(settings) -> dict:
    """Feast -> Redis for the same views and snapshot: seconds and the keys' memory."""
    import dataclasses

    import redis

    from crossfit_mlops.features.feast_repo import (
        apply_definitions,
        get_store,
        materialize_snapshot,
    )
    from crossfit_mlops.storage import snapshot_time
    from tests.support.services import empty_redis_db

    with empty_redis_db() as db:
        redis_settings = dataclasses.replace(
            settings, feast_redis=f"127.0.0.1:6379,db={db}", feast_dir=settings.state_dir / "feast-redis-bench",
            feast_registry_path=settings.state_dir / "feast-redis-bench" / "registry.db",
        )  # fmt: skip
        store = get_store(redis_settings)
        apply_definitions(redis_settings, store)
        started = time.perf_counter()
        materialize_snapshot(snapshot_time(SNAPSHOT), settings=redis_settings, store=store)
        seconds = time.perf_counter() - started
        r = redis.Redis(host="127.0.0.1", port=6379, db=db)
        memory = sum(r.memory_usage(key) or 0 for key in r.scan_iter(count=1000))
        return {"materialize_s": round(seconds, 1), "keys": r.dbsize(), "memory_mb": _mb(memory)}


def run_pipeline(client, rows: int, snapshot: str = SNAPSHOT, grid: list[dict] | None = None) -> tuple[str, dict, list[dict]]:
    client.unpause(DAG)
    run_id = client.trigger(DAG, {"snapshot": snapshot, "rows": rows, **({"grid": grid} if grid else {})})
    run = client.wait_for_run(DAG, run_id, timeout=1800, poll=1.0)
    if run["state"] != "success":
        raise SystemExit(f"run {run_id} ended {run['state']}")
    return run_id, run, client.task_instances(DAG, run_id)


def timeline(run: dict, tis: list[dict]) -> dict:
    queued = _ts(run["queued_at"])
    done = [t for t in tis if t["state"] == "success"]
    decision_end = max(_ts(t["end_date"]) for t in done if t["task_id"] in {T.PROMOTE, T.KEEP})
    train = [t for t in done if t["task_id"] == T.TRAIN]
    return {
        "trigger_to_gate_decision_s": round((decision_end - queued).total_seconds(), 1),
        "trigger_to_run_end_s": round((_ts(run["end_date"]) - queued).total_seconds(), 1),
        "training_fanout_wall_s": round((max(_ts(t["end_date"]) for t in train) - min(_ts(t["start_date"]) for t in train)).total_seconds(), 1),
        "materialize_s": next(round(t["duration"], 1) for t in done if t["task_id"] == T.MATERIALIZE),
        "tasks": [
            {"task": t["task_id"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else ""),
             "start_s": round((_ts(t["start_date"]) - queued).total_seconds(), 1), "duration_s": round(t["duration"], 1)}
            for t in sorted(done, key=lambda t: (t["start_date"], t["map_index"]))
        ],  # fmt: skip
    }


def phases(parent: dict, tis: list[dict]) -> tuple[list[dict], dict[str, float]]:
    """Each training run's figures and the sum of its ``timings.json`` phases over the fan-out."""
    import mlflow

    from crossfit_mlops.tracking import fluent
    from crossfit_mlops.tracking.runs import child_runs

    durations = {t["map_index"]: t["duration"] for t in tis if t["task_id"] == T.TRAIN}
    runs, totals = [], {}
    with fluent(parent["tracking_uri"]):
        for r in child_runs(parent["tracking_uri"], parent["experiment_id"], parent["parent_run_id"]):
            timings = mlflow.artifacts.load_dict(f"runs:/{r.info.run_id}/timings.json")
            task_s = durations[int(r.data.tags["airflow.map_index"])]
            for name, value in {**timings["phases_s"], "airflow_task_runner": task_s - timings["task_s"]}.items():
                totals[name] = totals.get(name, 0.0) + value
            m = r.data.metrics
            runs.append({"run": r.info.run_name, "fit_s": round(m["fit_seconds"], 2), "task_s": round(task_s, 1),
                         "val_rmse": round(m["val_rmse"], 1), "val_r2": round(m["val_r2"], 4),
                         "test_r2": round(m["test_r2"], 4), "test_r2_ci": [round(m["test_r2_low"], 4), round(m["test_r2_high"], 4)],
                         "energy_wh": round(m["energy_kwh"] * 1000, 3), "g_co2eq": round(m["emissions_kg_co2eq"] * 1000, 4)})  # fmt: skip
    return sorted(runs, key=lambda r: r["val_rmse"]), {k: round(v, 1) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def overhead_baselines(client, run_id: str, parent: dict, state: Path) -> dict:
    from benchmarks.bench_overhead import bare_fits, logged_runs
    from crossfit_mlops.training.grid import DEFAULT_GRID

    sets = {job["training_set"]["feature_version"]: job["training_set"] for job in client.xcom(DAG, run_id, T.PLAN)}
    return {
        "bare_fits_sequential_s": round(sum(bare_fits(sets, DEFAULT_GRID).values()), 1),
        "logged_runs_sequential": logged_runs(sets, DEFAULT_GRID, parent["tracking_uri"], state / "bench_emissions"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=FULL_SIZE)
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack running afterwards")
    parser.add_argument("--overhead-baselines", action="store_true", help="also the sequential fits / logged runs")
    args = parser.parse_args()

    from crossfit_mlops.settings import get_settings

    state = get_settings().state_dir / "bench" / "training"
    bench_environment(state)
    from crossfit_mlops.data.ingest import ingest_snapshot
    from crossfit_mlops.storage import Catalog
    from crossfit_mlops.training.grid import DEFAULT_GRID
    from crossfit_stack import config, control

    cfg = config.config_from_env()
    t0 = time.perf_counter()
    raw = ingest_snapshot(SNAPSHOT, rows=args.rows, settings=cfg.settings)
    generation_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    client = control.up_and_connect(cfg, DAG)
    stack_start_s = time.perf_counter() - t0
    try:
        run_id, run, tis = run_pipeline(client, args.rows)
        parent = client.xcom(DAG, run_id, T.START_MLFLOW_RUN)
        decision = client.xcom(DAG, run_id, T.JUDGE)
        runs, phase_totals = phases(parent, tis)
        artifacts = artifact_bytes(cfg.mlflow_dir / "artifacts")
        online_mb = _mb(cfg.settings.feast_online_store_path.stat().st_size)
        extra = overhead_baselines(client, run_id, parent, state) if args.overhead_baselines else {}
        floor = timeline(*run_pipeline(client, FLOOR_ROWS, FLOOR_SNAPSHOT, floor_grid(DEFAULT_GRID))[1:])
    finally:
        if not args.keep_stack:
            control.down(cfg)
    script = plain_script(Catalog(cfg.settings).raw_file(raw.snapshot_id), DEFAULT_GRID)
    redis = redis_materialize(cfg.settings)
    times = timeline(run, tis)
    result = {
        "rows": args.rows,
        "grid_entries": len(DEFAULT_GRID),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "airflow_parallelism": cfg.parallelism,
        "generation_s": round(generation_s, 1),
        "stack_start_s": round(stack_start_s, 1),
        **{k: v for k, v in times.items() if k != "tasks"},
        "baseline_plain_script": script,
        "ratio_trigger_to_gate_over_plain_script": round(times["trigger_to_gate_decision_s"] / script["wall_s"], 2),
        "ratio_target": 1.25,
        "machinery_floor": {
            "rows": FLOOR_ROWS, "grid": floor_grid(DEFAULT_GRID),
            **{k: v for k, v in floor.items() if k != "tasks"},
            "ratio_over_plain_script": round(floor["trigger_to_gate_decision_s"] / script["wall_s"], 2),
            "tasks": floor["tasks"],
        },  # fmt: skip
        "artifact_mb": {k: _mb(v) for k, v in artifacts.items()} | {"total": _mb(sum(artifacts.values()))},
        "artifact_target_mb": 50,
        "online_store": {"sqlite_materialize_s": times["materialize_s"], "sqlite_mb": online_mb,
                         "baseline_redis": redis, "target_s": 15, "target_mb": 100},  # fmt: skip
        "sum_phase_s": phase_totals,
        "gate_decision": {"decision": decision["decision"], "reason": decision["reason"]},
        "runs": runs,
        "tasks": times["tasks"],
        **extra,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    report(result)


def report(r: dict) -> None:
    s = r["baseline_plain_script"]
    print(f"generation {r['generation_s']} s; stack start {r['stack_start_s']} s (neither part of the run)")
    print(f"trigger -> gate decision: {r['trigger_to_gate_decision_s']} s (run end {r['trigger_to_run_end_s']} s)")
    print(f"baseline plain script: {s['wall_s']} s (prepare {s['prepare_s']} s, fits {s['fits_wall_s']} s in 2 processes)")
    print(f"ratio trigger->gate / plain script: {r['ratio_trigger_to_gate_over_plain_script']} (target <= {r['ratio_target']})")
    f = r["machinery_floor"]
    print(f"machinery floor ({f['rows']} rows, 8 entries of a few shallow trees): trigger -> gate {f['trigger_to_gate_decision_s']} s, "
          f"{f['ratio_over_plain_script']} x the plain script's wall (the lowest ratio this DAG can reach here)")  # fmt: skip
    print(f"artifacts of the run: {r['artifact_mb']} MB (target <= {r['artifact_target_mb']} MB)")
    o = r["online_store"]
    print(f"online store: SQLite materialize {o['sqlite_materialize_s']} s, {o['sqlite_mb']} MB; "
          f"baseline Redis {o['baseline_redis']['materialize_s']} s, {o['baseline_redis']['memory_mb']} MB "
          f"(target <= {o['target_s']} s, <= {o['target_mb']} MB)")  # fmt: skip
    print("where the training tasks' time went (s, summed over the fan-out): " + ", ".join(f"{k} {v}" for k, v in r["sum_phase_s"].items()))
    print("\ntask timeline (s after the trigger):")
    for t in r["tasks"]:
        print(f"  {t['start_s']:7.1f} +{t['duration_s']:6.1f}  {t['task']}")
    print("\nruns:")
    for run in r["runs"]:
        print(f"  {run['run'][:64]:<64} fit {run['fit_s']:6.2f}s task {run['task_s']:6.1f}s val RMSE {run['val_rmse']:6.1f} "
              f"test R² {run['test_r2']:.3f} [{run['test_r2_ci'][0]:.3f}, {run['test_r2_ci'][1]:.3f}] {run['energy_wh']:.3f} Wh")  # fmt: skip
    print(f"\ngate: {r['gate_decision']['decision']}: {r['gate_decision']['reason']}\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
