"""The cost curve: what the machinery costs at 1x and 4x the full size, and on the S3-backed profile.

For each scale (a multiple of the full size, 423,006 raw rows; 4x = 1,692,024 rows with ids beyond
the real data, :func:`~crossfit_mlops.data.generate.id_space_for`), on a fresh local stack of its
own: generate the raw snapshot (timed apart), start the stack, trigger ``crossfit_training_pipeline``
through the REST API with the default grid (as benchmarks/bench_training_pipeline.py does), stop
the stack, then run benchmarks/plain_script.py on the same raw file with nothing else of the stack
running. Each run is the stack's first, so each gate decides without a champion. Recorded per scale:

- ``trigger_to_gate_s``: from the run's queued time to the end of the gate's decision task;
- ``plain_script_wall_s``: the plain script's wall time on the same raw file;
- ``machinery_cost_s`` = trigger -> gate - plain script wall, and their ``ratio``;
- ``largest_task``: the task process with the highest peak RSS, and every task's peak
  (:class:`~benchmarks.process_memory.PeakMemory`: ``VmHWM`` of each Airflow task process, read
  every 0.25 s), and the plain script's largest process measured the same way.

The first scale's stack also runs the machinery floor of bench_training_pipeline (the same DAG,
:data:`~benchmarks.bench_training_pipeline.FLOOR_ROWS` raw rows, the grid shrunk to a few shallow
trees), right after its run, as that benchmark does. ``--profiles local,s3`` adds the first scale's
run (the full size by default) on the S3-backed profile (:func:`s3_environment`), same invocation; a
name other than ``s3`` is a ``CROSSFIT_PROFILE``, and one the stack does not know is recorded as not
measured, with the stack's own refusal as the reason.

    .venv/bin/python -m benchmarks.bench_cost_curve [--scales 1,4] [--profiles local,s3] [--note TEXT]

Writes benchmarks/results/cost_curve.json (earlier runs kept under ``history``) and prints a summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.bench_training_pipeline import (
    DAG,
    FLOOR_ROWS,
    FLOOR_SNAPSHOT,
    SNAPSHOT,
    bench_environment,
    floor_grid,
    plain_script,
    run_pipeline,
    timeline,
)
from benchmarks.process_memory import PeakMemory, task_instance_id
from crossfit_mlops.data.vocabulary import FULL_SIZE

RESULTS = Path(__file__).parent / "results" / "cost_curve.json"
TARGETS = {
    "machinery_cost_at_full_size_s": 15.0,  # at most
    "largest_task_peak_rss_gb": 4.0,  # at most, at every scale
    "s3_over_local_trigger_to_gate": 1.3,  # at most, at full size
}


def _mb(size: float) -> float:
    return round(size / 1e6, 1)


def _task_name(ti: dict) -> str:
    return ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")


def machine_load() -> dict:
    """What else the machine is doing: the load averages and ``uptime``'s line."""
    line = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    return {"load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()], "uptime": line}


def stack_run(base: Path, profile: str, scale: float, with_floor: bool, extra_env: dict[str, str] | None = None,
              label: str | None = None) -> dict:  # fmt: skip
    """One scale on a fresh stack of ``profile`` (and ``extra_env``) under ``base``: stack start,
    generation (after the start: on object storage the bucket exists only then), the run, the floor."""
    from crossfit_mlops.data.generate import id_space_for
    from crossfit_mlops.data.ingest import ingest_snapshot
    from crossfit_mlops.data.sources import Simulator
    from crossfit_mlops.storage import Catalog
    from crossfit_mlops.training.grid import DEFAULT_GRID
    from crossfit_stack import config, control, programs, provision

    rows = round(scale * FULL_SIZE)
    bench_environment(base / f"{label or profile}-{scale:g}x")
    os.environ.update({**(extra_env or {}), "CROSSFIT_PROFILE": profile})
    cfg = config.config_from_env()  # refuses a profile the stack does not know
    t0 = time.perf_counter()
    try:  # a start that fails half-way (a port taken) stops what it started too
        client = control.up_and_connect(cfg, DAG)
        stack_start_s = time.perf_counter() - t0
        if cfg.settings.on_object_storage:  # the pipeline's key pair, as the stack gives its tasks
            os.environ.update(programs.client_env(cfg, provision.ensure_secrets(cfg)))
        t0 = time.perf_counter()
        source = Simulator(SNAPSHOT, rows=rows, max_athlete_id=id_space_for(rows))
        raw = ingest_snapshot(SNAPSHOT, settings=cfg.settings, source=source)
        generation_s = time.perf_counter() - t0
        raw_file = Catalog(cfg.settings).raw_file(raw.snapshot_id)  # read while the stack (its store) runs
        raw_mb = _mb(raw_file.stat().st_size)
        load_before = machine_load()
        launchers = [p["pid"] for p in control.supervisor(cfg).all_info() if p["pid"]]
        with PeakMemory(roots=lambda: launchers, label=task_instance_id) as memory:
            run_id, run, tis = run_pipeline(client, rows)
        load_after = machine_load()
        floor = timeline(*run_pipeline(client, FLOOR_ROWS, FLOOR_SNAPSHOT, floor_grid(DEFAULT_GRID))[1:]) if with_floor else None
    finally:
        control.down(cfg)
    names = {ti["id"]: _task_name(ti) for ti in tis}
    peaks = {names.get(ti_id, ti_id): peak for ti_id, peak in memory.by_label().items()}
    times = timeline(run, tis)
    return {
        "profile": label or profile, "data": cfg.settings.data_url or "the state directory", "scale": scale, "rows": rows,
        "raw_origin": raw.origin, "raw_mb": raw_mb,
        "generation_s": round(generation_s, 1), "stack_start_s": round(stack_start_s, 1),
        "load_at_trigger": load_before, "load_at_gate": load_after,
        **{k: v for k, v in times.items() if k != "tasks"},
        "largest_task": _largest(peaks),
        "task_peak_rss_mb": {name: _mb(peak) for name, peak in sorted(peaks.items(), key=lambda kv: -kv[1])},
        "tasks_without_a_reading": sorted({_task_name(ti) for ti in tis if ti["state"] == "success"} - set(peaks)),
        "memory_poller_cpu_s": round(memory.cpu_s, 2),
        "tasks": times["tasks"],
        "raw_file": str(raw_file),
        **({"floor": floor} if floor else {}),
    }  # fmt: skip


def _largest(peaks: dict[str, int]) -> dict | None:
    if not peaks:
        return None
    name = max(peaks, key=peaks.__getitem__)
    return {"task": name, "peak_rss_mb": _mb(peaks[name])}


def scale_row(measured: dict) -> dict:
    """The run's figures beside the plain script's on the same raw file."""
    from crossfit_mlops.training.grid import DEFAULT_GRID

    script = plain_script(Path(measured.pop("raw_file")), DEFAULT_GRID)
    gate = measured["trigger_to_gate_decision_s"]
    return {
        **{k: v for k, v in measured.items() if k not in {"tasks", "floor"}},
        "trigger_to_gate_s": gate,
        "plain_script_wall_s": script["wall_s"],
        "machinery_cost_s": round(gate - script["wall_s"], 1),
        "ratio": round(gate / script["wall_s"], 2),
        "plain_script": {k: v for k, v in script.items() if k != "runs"},
        "tasks": measured["tasks"],
    }  # fmt: skip


def floor_row(floor: dict, plain_wall_s: float) -> dict:
    from crossfit_mlops.training.grid import DEFAULT_GRID

    return {
        "rows": FLOOR_ROWS, "grid": floor_grid(DEFAULT_GRID),
        **{k: v for k, v in floor.items() if k != "tasks"},
        "ratio_over_full_size_plain_script": round(floor["trigger_to_gate_decision_s"] / plain_wall_s, 2),
        "tasks": floor["tasks"],
    }  # fmt: skip


@contextlib.contextmanager
def s3_environment() -> Iterator[dict[str, str]]:
    """The S3-backed profile on the local stack: the pipeline's data in the stack's own SeaweedFS
    bucket (``CROSSFIT_DATA_URL``), MLflow's artifacts in another, snapshot locks and Feast's
    registry in a PostgreSQL database of its own, the online store in an empty Redis database
    (what the S3 profile needs: tests/support/services.py ``s3_profile``); executor and MLflow's
    database as the local profile's."""
    from crossfit_stack import programs
    from tests.support.services import empty_redis_db, free_port_block, postgres_database

    with postgres_database("crossfit_bench_s3") as db, empty_redis_db() as redis_db:
        yield {
            "CROSSFIT_OBJECT_STORE": "seaweedfs", "CROSSFIT_S3_PORT": str(free_port_block(programs.OBJECT_STORE_PORTS)),
            "CROSSFIT_ARTIFACTS_DESTINATION": "s3://crossfit-mlflow-artifacts/", "CROSSFIT_DATA_URL": "s3://crossfit-data",
            "CROSSFIT_LOCK_URI": db, "CROSSFIT_FEAST_REGISTRY_URI": db, "CROSSFIT_FEAST_REDIS": f"127.0.0.1:6379,db={redis_db}",
        }  # fmt: skip


def other_profile(base: Path, profile: str, scale: float, local: dict | None) -> dict:
    """The run of the first scale on ``profile`` (``s3``: :func:`s3_environment`; else a
    ``CROSSFIT_PROFILE``) beside the local one, or why it was not measured. No plain script: the
    comparison is with the local run's trigger -> gate."""
    from crossfit_stack.config import StackSettingsError

    try:
        if profile == "s3":
            with s3_environment() as env:
                measured = stack_run(base, "local", scale, with_floor=False, extra_env=env, label="s3")
        else:
            measured = stack_run(base, profile, scale, with_floor=False)
    except StackSettingsError as refused:
        return {"profile": profile, "measured": False, "reason": f"the stack refused the profile: {refused}"}
    finally:
        for name in ("CROSSFIT_OBJECT_STORE", "CROSSFIT_S3_PORT", "CROSSFIT_ARTIFACTS_DESTINATION", "CROSSFIT_DATA_URL",
                     "CROSSFIT_LOCK_URI", "CROSSFIT_FEAST_REGISTRY_URI", "CROSSFIT_FEAST_REDIS", "CROSSFIT_S3_ENDPOINT"):  # fmt: skip
            os.environ.pop(name, None)
    row = {k: v for k, v in measured.items() if k not in {"raw_file", "floor"}}
    row["trigger_to_gate_s"] = row["trigger_to_gate_decision_s"]
    if local:
        row["over_local_trigger_to_gate"] = round(row["trigger_to_gate_s"] / local["trigger_to_gate_s"], 2)
    return {"measured": True, **row}


def targets(scales: list[dict], profiles: list[dict]) -> dict:
    """Each target of issue 25's cost curve: the figure, the limit, met or not (None: not measured)."""
    by_scale = {row["scale"]: row for row in scales}
    full, top = by_scale.get(1), by_scale[max(by_scale)]
    peaks = [row["largest_task"]["peak_rss_mb"] / 1e3 for row in scales if row["largest_task"]]
    s3 = next((p for p in profiles if p.get("measured") and "over_local_trigger_to_gate" in p), None)
    values = {
        "machinery_cost_at_full_size_s": full["machinery_cost_s"] if full else None,
        "largest_task_peak_rss_gb": round(max(peaks), 2) if peaks else None,
        "s3_over_local_trigger_to_gate": s3["over_local_trigger_to_gate"] if s3 else None,
    }
    out = {name: {"value": value, "at_most": TARGETS[name]} for name, value in values.items()}
    for target in out.values():
        target["met"] = None if target["value"] is None else target["value"] <= target["at_most"]
    if full and top and top is not full:
        out["ratio_lower_at_largest_scale"] = {"value": [full["ratio"], top["ratio"]], "met": top["ratio"] < full["ratio"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,4", help="multiples of the full size, comma-separated (default 1,4)")
    parser.add_argument("--profiles", default="local,s3",
                        help="stack profiles; the first runs every scale, the others the first scale only; "
                             "s3: the local stack with the pipeline's data on its object store (default local,s3)")  # fmt: skip
    parser.add_argument("--note", default="", help="what else ran on the machine, recorded with the result")
    args = parser.parse_args()
    scales = [float(s) for s in args.scales.split(",")]
    first, *others = args.profiles.split(",")

    from crossfit_mlops.settings import get_settings

    base = get_settings().state_dir / "bench" / "cost_curve"
    started = machine_load()
    measured = [stack_run(base, first, scale, with_floor=i == 0) for i, scale in enumerate(scales)]
    floor = measured[0].pop("floor")
    rows = [scale_row(m) for m in measured]
    local_full = next((row for row in rows if row["scale"] == 1), None)
    profiles = [other_profile(base, name, scales[0], rows[0]) for name in others]
    result = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_at_start": started,
                    "load_at_end": machine_load(), "note": args.note},  # fmt: skip
        "grid": "the default grid (8 entries)",
        "scales": rows,
        "machinery_floor": floor_row(floor, (local_full or rows[0])["plain_script_wall_s"]),
        "profiles": profiles,
        "targets": targets(rows, profiles),
    }
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else None
    history = [*previous.pop("history", []), previous] if previous else []  # the earlier runs, oldest first
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({**result, "history": history}, indent=2) + "\n")
    report(result)


def report(r: dict) -> None:
    print(f"load at start: {r['machine']['load_at_start']['uptime']}")
    for row in r["scales"]:
        largest = row["largest_task"] or {}
        print(f"{row['profile']} {row['scale']:g}x ({row['rows']} rows): trigger -> gate {row['trigger_to_gate_s']} s, "
              f"plain script {row['plain_script_wall_s']} s, machinery {row['machinery_cost_s']} s, ratio {row['ratio']}; "
              f"largest task {largest.get('task')} {largest.get('peak_rss_mb')} MB; plain script's largest process "
              f"{(row['plain_script']['peak_rss_mb'] or {}).get('peak_rss_mb')} MB")  # fmt: skip
    f = r["machinery_floor"]
    print(f"machinery floor ({f['rows']} rows): trigger -> gate {f['trigger_to_gate_decision_s']} s")
    for p in r["profiles"]:
        if p["measured"]:
            print(f"{p['profile']} 1x: trigger -> gate {p['trigger_to_gate_s']} s, {p.get('over_local_trigger_to_gate')} x local")
        else:
            print(f"{p['profile']}: not measured: {p['reason']}")
    for name, t in r["targets"].items():
        print(f"target {name}: {t['value']} ({'met' if t['met'] else 'not measured' if t['met'] is None else 'MISSED'})")
    print(f"load at end: {r['machine']['load_at_end']['uptime']}\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
