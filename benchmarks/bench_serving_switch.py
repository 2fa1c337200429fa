"""The prediction API under load on a busy machine, through a champion switch and a re-materialization.

One run, loopback only, stops by itself (every process it starts has a deadline or is ended by it):

- **setup** (the project's own code, in ``<state dir>/bench/serving_switch``, deleted first, or
  ``--state-dir``): one generated snapshot (``--rows``), V1 + V2 feature tables, Feast apply +
  materialize (SQLite online store), a real MLflow server, two LightGBM versions trained on the
  snapshot: version 1 on V2 features (``@champion``) and version 2 on V1 features; the API
  (``python -m crossfit_mlops serve``, 1 worker, ``@champion`` polled every 0.5 s);
- **busy machine**: one CPU burner process per core (a busy loop that exits by itself) during
  both phases;
- **baseline**: ``--clients`` keep-alive clients post ``/predict`` for single athletes for
  ``--seconds``; nothing else happens;
- **events**: the same load; at 25% of ``--seconds`` the snapshot is re-materialized into the
  online store by a separate process (what the DAG's materialize task does), at 40% ``@champion``
  moves to version 2 (other features, other model); the phase lasts ``--seconds`` or until the
  re-materialization has finished, whichever is later.

Every request is recorded (start, end, status or exception, the model version that answered).
Reported per phase: requests, throughput, p50/p90/p99/max, statuses, 5xx, connection errors; for
the events phase also the requests answered by the old model after the first answer by the new one
(a request that *started* after that answer), and the latencies inside the re-materialization.

    .venv/bin/python benchmarks/bench_serving_switch.py [--rows 423006] [--seconds 20] [--clients 16]

Writes ``benchmarks/results/serving_switch.json`` (or ``--out``) and prints a table. The test
``tests/reliability/test_api_load.py`` runs it small and asserts the behaviour, never the timings.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

from crossfit_mlops.data.vocabulary import FULL_SIZE

RESULTS = Path(__file__).parent / "results" / "serving_switch.json"
QUIET = {
    "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "FEAST_USAGE": "False",
    "CODECARBON_LOG_LEVEL": "error", "PYTHONWARNINGS": "ignore",
}  # fmt: skip
LGBM = {"n_estimators": 300, "learning_rate": 0.05, "num_leaves": 15}
SAFETY_SECONDS = 300  # a burner or re-materialization still running this long after its phase ends itself
BURNER = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
REMATERIALIZE = (
    "import sys\n"
    "from crossfit_mlops.features.feast_repo import materialize_snapshot\n"
    "from crossfit_mlops.storage import snapshot_time\n"
    "materialize_snapshot(snapshot_time(sys.argv[1]))\n"
)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


# ------------------------------------------------------------------------------------------ load
class Load:
    """Keep-alive clients posting ``/predict`` until told to stop; every request recorded."""

    def __init__(self, port: int, athletes: list[int], clients: int):
        self.port, self.athletes, self.clients = port, athletes, clients
        self.records: list[tuple[float, float, str, str | None]] = []  # start, end, status, model_version
        self.connections_opened = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(k,)) for k in range(clients)]

    def _connect(self) -> http.client.HTTPConnection:
        with self._lock:
            self.connections_opened += 1
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def _client(self, k: int) -> None:
        conn, local, i = self._connect(), [], k
        while not self._stop.is_set():
            athlete = self.athletes[i % len(self.athletes)]
            i += self.clients
            started = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=json.dumps({"athlete_id": athlete}),
                             headers={"Content-Type": "application/json"})  # fmt: skip
                response = conn.getresponse()
                data = response.read()
                version = json.loads(data).get("model_version") if response.status == 200 else None
                local.append((started, time.perf_counter(), str(response.status), version))
            except (OSError, http.client.HTTPException) as exc:  # a dropped connection: counted, reconnected
                local.append((started, time.perf_counter(), f"connection error: {type(exc).__name__}", None))
                conn.close()
                conn = self._connect()
        conn.close()
        with self._lock:
            self.records.extend(local)

    def start(self) -> float:
        for thread in self._threads:
            thread.start()
        return time.perf_counter()

    def stop(self) -> float:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        return time.perf_counter()


def summarize(records, began: float, ended: float, connections: int, clients: int) -> dict:
    ms = [(end - start) * 1000 for start, end, _, _ in records]
    statuses: dict[str, int] = {}
    for _, _, status, _ in records:
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "requests": len(records), "seconds": round(ended - began, 2),
        "throughput_rps": round(len(records) / (ended - began), 1),
        "p50_ms": round(_percentile(ms, 0.50), 3), "p90_ms": round(_percentile(ms, 0.90), 3),
        "p99_ms": round(_percentile(ms, 0.99), 3), "max_ms": round(max(ms), 3) if ms else None,
        "statuses": statuses,
        "server_errors_5xx": sum(n for s, n in statuses.items() if s.startswith("5")),
        "connection_errors": sum(n for s, n in statuses.items() if s.startswith("connection")),
        "connections_opened": connections, "clients": clients,
    }  # fmt: skip


def switch_facts(records, old: str, new: str, promoted_at: float) -> dict:
    """When the new model first answered, and whether any request started after that got the old."""
    answered_new = [end for _, end, status, version in records if status == "200" and version == new]
    first_new = min(answered_new) if answered_new else None
    old_after = [r for r in records if first_new is not None and r[0] > first_new and r[3] == old]
    return {
        "old_version": old, "new_version": new,
        "answered_by_new_model": len(answered_new),
        "answered_by_old_model_after_first_new_answer": len(old_after),
        "seconds_from_promotion_to_first_new_answer": None if first_new is None else round(first_new - promoted_at, 2),
        "versions_seen": sorted({v for _, _, _, v in records if v}),
    }  # fmt: skip


# ----------------------------------------------------------------------------------------- setup
def prepare(settings, rows: int, snapshot: str) -> dict:
    """Snapshot -> features -> Feast -> two registered versions, version 1 promoted."""
    from crossfit_mlops.data.ingest import ingest_snapshot
    from crossfit_mlops.data.validate import validate_and_clean
    from crossfit_mlops.features.build import build_feature_table
    from crossfit_mlops.features.feast_repo import (
        apply_definitions,
        get_store,
        materialize_snapshot,
    )
    from crossfit_mlops.features.training_sets import build_training_set
    from crossfit_mlops.registry.promotion import promote, register_challenger
    from crossfit_mlops.storage import snapshot_time
    from crossfit_mlops.tracking.runs import ensure_experiment, finish_run, start_parent_run
    from crossfit_mlops.training.grid import TrainingConfig
    from crossfit_mlops.training.train import RunContext, train_candidate

    ingest_snapshot(snapshot, rows=rows, seed=5, settings=settings)
    validate_and_clean(snapshot, settings=settings)
    for version in ("v1", "v2"):
        build_feature_table(snapshot, version, settings=settings)
    store = get_store(settings)
    apply_definitions(settings=settings, store=store)
    materialize_snapshot(snapshot_time(snapshot), settings=settings, store=store)
    uri = settings.mlflow_tracking_uri
    experiment = ensure_experiment(uri, "crossfit_serving_switch_benchmark")
    parent = start_parent_run(uri, experiment, "bench-serving-switch", {"pipeline": "bench_serving_switch"})
    ctx = RunContext(uri, experiment, parent, str(settings.emissions_dir))
    versions = []
    for feature_version in ("v2", "v1"):
        summary = train_candidate(
            TrainingConfig(model="lightgbm", feature_version=feature_version, params=LGBM),
            build_training_set(snapshot, feature_version, settings=settings), ctx,
        )  # fmt: skip
        versions.append(register_challenger(uri, settings.registered_model_name, summary, {"source": "bench"}))
    finish_run(uri, parent)
    promote(uri, settings.registered_model_name, versions[0])
    return {"versions": versions}


def _athletes(settings, snapshot: str) -> list[int]:
    import pandas as pd

    from crossfit_mlops.features.specs import feature_set
    from crossfit_mlops.storage import Catalog

    path = Catalog(settings).feature_table_file(feature_set("v1").view_name, snapshot)
    ids = pd.read_parquet(path, columns=["athlete_id"])["athlete_id"]
    return ids.sample(frac=1.0, random_state=1).astype(int).tolist()


def _burners(seconds: float) -> list[subprocess.Popen]:
    code = BURNER.format(seconds=seconds)
    return [subprocess.Popen([sys.executable, "-c", code], start_new_session=True) for _ in range(os.cpu_count() or 1)]


def _end(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)


# ----------------------------------------------------------------------------------------- phases
def run_phase(port: int, athletes: list[int], args, events=None) -> tuple[dict, list]:
    """One phase of load on a busy machine; ``events(began)`` runs the switch and re-materialization."""
    burners = _burners(args.seconds + SAFETY_SECONDS)
    try:
        time.sleep(0.5)  # the burners are spinning
        load = Load(port, athletes, args.clients)
        began = load.start()
        facts = events(began) if events is not None else {}
        time.sleep(max(0.0, began + args.seconds - time.perf_counter()))
        ended = load.stop()
    finally:
        _end(burners)
    return {**summarize(load.records, began, ended, load.connections_opened, args.clients), **facts}, load.records


def make_events(settings, env: dict, snapshot: str, versions: list[str], args, state: Path):
    """The events phase's timeline: re-materialize at 25%, move ``@champion`` at 40%."""
    from crossfit_mlops.registry.promotion import promote

    def events(began: float) -> dict:
        time.sleep(max(0.0, began + 0.25 * args.seconds - time.perf_counter()))
        log = (state / "rematerialize.log").open("w")
        remat = subprocess.Popen([sys.executable, "-c", REMATERIALIZE, snapshot], env=env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        remat_started = time.perf_counter()
        time.sleep(max(0.0, began + 0.40 * args.seconds - time.perf_counter()))
        promote(settings.mlflow_tracking_uri, settings.registered_model_name, versions[1])
        promoted_at = time.perf_counter()
        try:
            code = remat.wait(timeout=max(1.0, began + args.seconds + SAFETY_SECONDS - 10 - time.perf_counter()))
        except subprocess.TimeoutExpired:
            _end([remat])
            code = None
        remat_ended = time.perf_counter()
        time.sleep(1.0)  # some load after it, too
        return {"_promoted_at": promoted_at, "_remat": (remat_started, remat_ended, code)}

    return events


def _window(records, start: float, end: float) -> dict:
    inside = [(e - s) * 1000 for s, e, _, _ in records if s >= start and e <= end]
    return {"requests": len(inside), "p50_ms": round(_percentile(inside, 0.5), 3), "p99_ms": round(_percentile(inside, 0.99), 3)}


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=FULL_SIZE, help="raw rows of the generated snapshot")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each phase")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--state-dir", type=Path, default=None, help="default: <state dir>/bench/serving_switch")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


def _start_api(env: dict, state: Path, port: int) -> subprocess.Popen:
    from crossfit_stack.control import wait_for_url

    log = state / "api.log"
    api = subprocess.Popen(
        [sys.executable, "-m", "crossfit_mlops", "serve", "--port", str(port), "--log-level", "warning"],
        env={**env, "CROSSFIT_SERVING_REFRESH_S": "0.5"}, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    wait_for_url(f"http://127.0.0.1:{port}/ready", api, log, 180)
    return api


def main() -> None:
    args = _parse_args()
    load_before = round(os.getloadavg()[0], 2)  # before the burners: what the rest of the machine does
    from crossfit_mlops.settings import get_settings

    state = (args.state_dir or get_settings().state_dir / "bench" / "serving_switch").resolve()
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        mlflow_port = sock.getsockname()[1]
    os.environ.update({**QUIET, "CROSSFIT_STATE_DIR": str(state), "CROSSFIT_MLFLOW_PORT": str(mlflow_port)})
    for name in ("MLFLOW_TRACKING_URI", "CROSSFIT_FEAST_DIR", "CROSSFIT_FEAST_REGISTRY", "CROSSFIT_FEAST_ONLINE_STORE",
                 "CROSSFIT_FEAST_REDIS", "CROSSFIT_FEAST_REGISTRY_URI", "CROSSFIT_RAW_FILE"):  # fmt: skip
        os.environ.pop(name, None)
    from crossfit_stack import config, control

    cfg = config.config_from_env()
    # this process talks to MLflow through explicit clients (settings.mlflow_tracking_uri); the
    # server, the API and the helper processes get the URI in their own environment
    settings = cfg.settings
    child_env = {**os.environ, **settings.as_env()}
    procs: list[subprocess.Popen] = []
    control.start_mlflow(cfg, {**child_env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        snapshot = date.today().isoformat()
        started = time.perf_counter()
        world = prepare(settings, args.rows, snapshot)
        setup_s = time.perf_counter() - started
        athletes = _athletes(settings, snapshot)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            api_port = sock.getsockname()[1]
        procs.append(_start_api(child_env, state, api_port))
        print(f"setup {setup_s:.0f} s; {len(athletes)} athletes; {os.cpu_count()} CPU burners during each phase")
        baseline, _ = run_phase(api_port, athletes, args)
        print_phase("baseline", baseline)
        events = make_events(settings, child_env, snapshot, world["versions"], args, state)
        during, records = run_phase(api_port, athletes, args, events)
        promoted_at = during.pop("_promoted_at")
        remat_start, remat_end, remat_code = during.pop("_remat")
        during["switch"] = switch_facts(records, world["versions"][0], world["versions"][1], promoted_at)
        during["rematerialization"] = {
            "exit_code": remat_code, "seconds": round(remat_end - remat_start, 1),
            "requests_inside": _window(records, remat_start, remat_end),
        }  # fmt: skip
        print_phase("switch + rematerialization", during)
    finally:
        _end(procs)
        control.stop_service(cfg, "mlflow")
    result = {
        "rows": args.rows, "athletes": len(athletes), "clients": args.clients, "seconds_per_phase": args.seconds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "cpu_burners": os.cpu_count(),
                    "load_average_1m_before": load_before},
        "package": str(Path(sys.modules["crossfit_mlops"].__file__).parent),
        "setup_s": round(setup_s, 1), "baseline": baseline, "switch_and_rematerialization": during,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "benchmarks/bench_serving_switch.py " + " ".join(sys.argv[1:]),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


def print_phase(name: str, phase: dict) -> None:
    print(f"  {name:28s} {phase['requests']:6d} req {phase['throughput_rps']:7.1f} req/s  p50 {phase['p50_ms']:7.2f} ms  "
          f"p99 {phase['p99_ms']:7.2f} ms  5xx {phase['server_errors_5xx']}  connection errors {phase['connection_errors']}  "
          f"statuses {phase['statuses']}")  # fmt: skip
    if "switch" in phase:
        print(f"  {'':28s} switch {phase['switch']}\n  {'':28s} rematerialization {phase['rematerialization']}")


if __name__ == "__main__":
    main()
