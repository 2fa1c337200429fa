"""Online prediction latency and throughput: this project's API against the tutorial's two-hop path.

Both paths serve the same model (``@champion``) on the same Feast online store, in one run:

- **api** (one hop): ``POST /predict {"athlete_id": N}`` to ``python -m crossfit_mlops serve``
  (FastAPI + uvicorn, 1 worker), which reads the online store itself;
- **two-hop** (the named baseline, the seed tutorial's pattern): the client reads the athlete's
  features from Feast's online store, then POSTs them to ``mlflow models serve`` (1 worker).

The load generator runs in a separate process (``--loadgen``): threads with keep-alive HTTP
connections, cycling through athlete ids. Single-athlete latency p50/p99 at concurrency 1, then
throughput (and latency) at concurrency 16 for a fixed duration; then the API at concurrency 16 on
athlete ids that no snapshot has (answered 404 from the athlete index). Targets: API p99 < 5 ms at
concurrency 1; API throughput >= 10x two-hop at concurrency 16 (the goal issue 24 states).

Live traffic (issue 26): the **api** runs as ``serve`` does by default, with the prediction log,
``/metrics`` and the shadow challenger on (a V1 LightGBM ``@challenger``, so the shadow reads its
own features from the online store; the default share, a quarter of the requests). A second API process, **api-off**
(the named baseline of this comparison: ``CROSSFIT_SERVING_LOG=false``,
``CROSSFIT_SERVING_METRICS=false``, ``CROSSFIT_SHADOW_SHARE=0``), serves the same champion; both
are measured at concurrency 1 and 16 in the same run, and a third, **api-log** (log and metrics on,
``CROSSFIT_SHADOW_SHARE=0``) and a fourth, **api-shadow-all** (``CROSSFIT_SHADOW_SHARE=1``), at
concurrency 1: the shadow's own share of the cost. Target: p99 < 5 ms at concurrency 1 with
everything on.

Setup (in ``<state dir>/bench/serving``, deleted first): a generated snapshot (default full size,
423,006 raw rows), Feast apply + materialize, a real MLflow server, and the champion trained by the
project's code: the default grid's best entry of the benchmark run (LightGBM on V2, 600 trees).

    .venv/bin/python benchmarks/bench_serving.py [--rows N] [--requests 3000] [--seconds 15] [--out FILE]

Writes benchmarks/results/serving.json (or ``--out``) and prints a table. To measure another
checkout of the package in the same conditions, put its ``include`` first on ``PYTHONPATH``: the
API process inherits it (the result records which package served).
"""

from __future__ import annotations

import argparse
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
from crossfit_mlops.features.specs import FEATURE_SETS

RESULTS = Path(__file__).parent / "results" / "serving.json"
CHAMPION_CONFIG = {
    "model": "lightgbm",
    "feature_version": "v2",
    "params": {
        "n_estimators": 600, "learning_rate": 0.03, "num_leaves": 15,
        "min_child_samples": 40, "subsample": 0.8, "colsample_bytree": 0.8,
    },
}
CHALLENGER_CONFIG = {**CHAMPION_CONFIG, "feature_version": "v1"}  # the shadow: its own feature read
LIVE_OFF = {"CROSSFIT_SERVING_LOG": "false", "CROSSFIT_SERVING_METRICS": "false", "CROSSFIT_SHADOW_SHARE": "0"}
NO_SHADOW = {"CROSSFIT_SHADOW_SHARE": "0"}  # log + metrics on: the shadow's own share of the cost
SHADOW_ALL = {"CROSSFIT_SHADOW_SHARE": "1"}  # every request shadowed (the default share is 0.25)


def _cpu_seconds(process) -> float:
    """User + system CPU seconds of a process and its children (uvicorn/gunicorn workers)."""
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        times = proc.cpu_times()
        total += times.user + times.system
    return total


# --------------------------------------------------------------------------------------- loadgen
def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def loadgen(args: argparse.Namespace) -> None:
    """One measurement, printed as JSON: ``--mode api|two-hop``, concurrency, requests or seconds."""
    import http.client

    ids = json.loads(Path(args.ids_file).read_text())
    host, port = args.target.split(":")
    two_hop = None
    if args.mode == "two-hop":
        from crossfit_mlops.serving.two_hop import TwoHopClient

        two_hop = TwoHopClient(f"http://{args.target}/invocations")
    lock = threading.Lock()  # Feast's SQLite reads in the client are not shared across threads

    def one(conn: http.client.HTTPConnection, athlete: int) -> None:
        if two_hop is None:
            body, path = json.dumps({"athlete_id": athlete}), "/predict"
        else:
            with lock:
                payload = two_hop.payload([athlete])
            body, path = json.dumps(payload), "/invocations"
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if response.status != args.expect:
            raise RuntimeError(f"{response.status}: {data[:300]!r}")

    latencies: list[float] = []
    errors: list[str] = []
    counter = {"next": 0}
    stop_at = None  # set once the warm-up is done: the timed window is the measurement's alone

    def worker() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        local = []
        while True:
            with counter_lock:
                index = counter["next"]
                counter["next"] += 1
            if stop_at is None and index >= args.requests:
                break
            if stop_at is not None and time.perf_counter() >= stop_at:
                break
            started = time.perf_counter()
            try:
                one(conn, ids[index % len(ids)])
                local.append(time.perf_counter() - started)
            except Exception as exc:  # counted, reported
                errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
        with counter_lock:
            latencies.extend(local)

    counter_lock = threading.Lock()
    warm = http.client.HTTPConnection(host, int(port), timeout=30)
    for athlete in ids[: args.warmup]:
        one(warm, athlete)
    warm.close()
    began = time.perf_counter()
    stop_at = began + args.seconds if args.seconds else None
    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    ms = [v * 1000 for v in latencies]
    if not ms:
        raise SystemExit(f"{args.mode} c={args.concurrency}: no request succeeded in {elapsed:.1f} s; first errors: {errors[:3]}")
    if args.raw:
        Path(args.raw).write_text(json.dumps(ms))
    print(json.dumps({
        "mode": args.mode, "concurrency": args.concurrency, "requests": len(ms), "errors": len(errors),
        "first_errors": errors[:3], "seconds": round(elapsed, 2), "throughput_rps": round(len(ms) / elapsed, 1),
        "p50_ms": round(_percentile(ms, 0.50), 3), "p90_ms": round(_percentile(ms, 0.90), 3),
        "p99_ms": round(_percentile(ms, 0.99), 3), "max_ms": round(max(ms), 3), "mean_ms": round(sum(ms) / len(ms), 3),
    }))


# ----------------------------------------------------------------------------------------- setup
def _prepare(settings, rows: int, snapshot: str) -> dict:
    """Snapshot -> features -> Feast -> champion, with the project's own functions."""
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

    ingest_snapshot(snapshot, rows=rows, settings=settings)
    validate_and_clean(snapshot, settings=settings)
    for version in FEATURE_SETS:
        build_feature_table(snapshot, version, settings=settings)
    store = get_store(settings)
    apply_definitions(settings=settings, store=store)
    materialize_snapshot(snapshot_time(snapshot), versions=("v1", "v2"), settings=settings, store=store)
    uri = settings.mlflow_tracking_uri
    experiment = ensure_experiment(uri, "crossfit_serving_benchmark")
    parent = start_parent_run(uri, experiment, "bench-serving", {"pipeline": "bench_serving"})
    ctx = RunContext(uri, experiment, parent, str(settings.emissions_dir))
    summaries = {}
    for role, config in (("champion", CHAMPION_CONFIG), ("challenger", CHALLENGER_CONFIG)):
        training_set = build_training_set(snapshot, config["feature_version"], settings=settings)
        summaries[role] = train_candidate(TrainingConfig(**config), training_set, ctx)
    finish_run(uri, parent)
    version = register_challenger(uri, settings.registered_model_name, summaries["champion"], {"source": "bench_serving"})
    promote(uri, settings.registered_model_name, version)
    shadow = register_challenger(uri, settings.registered_model_name, summaries["challenger"], {"source": "bench_serving"})
    summary = summaries["champion"]
    return {"model_version": version, "run": summary["run_name"], "val_rmse": round(summary["val_rmse"], 1),
            "shadow_challenger_version": shadow}  # fmt: skip


def _wait_shadow(port: int, version: str, timeout: float = 60) -> None:
    """Until the API's /model shows ``version`` as the shadow challenger."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/model", timeout=10) as answer:
            shadow = json.load(answer).get("shadow") or {}
        if (shadow.get("challenger") or {}).get("version") == version:
            return
        time.sleep(0.3)
    raise SystemExit(f"the API never loaded the shadow challenger v{version}: {shadow}")


def _live_counters(port: int) -> dict:
    """What /metrics says the log and the shadow did over the whole run."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(("crossfit_prediction_log_records", "crossfit_shadow_requests")):
                key = sample.name.removeprefix("crossfit_").removesuffix("_total")
                out["/".join([key, *sample.labels.values()])] = sample.value
    return out


def _interleaved(measure, modes: tuple[str, ...], args: argparse.Namespace, state: Path) -> dict:
    """c=1 latency of each mode over ``args.live_rounds`` rounds taken in turn, pooled."""
    pooled: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu: dict[str, float] = dict.fromkeys(modes, 0.0)
    per_round = max(100, args.requests // args.live_rounds)
    for round_ in range(args.live_rounds):
        for mode in modes if round_ % 2 == 0 else tuple(reversed(modes)):
            raw = state / f"raw-{mode}-{round_}.json"
            result = measure(mode, 1, requests=per_round, raw=raw)
            pooled[mode] += json.loads(raw.read_text())
            cpu[mode] += result["server_cpu_ms_per_request"] / args.live_rounds
    out = {}
    for mode, ms in pooled.items():
        out[mode] = {
            "requests": len(ms), "p50_ms": round(_percentile(ms, 0.50), 3), "p90_ms": round(_percentile(ms, 0.90), 3),
            "p99_ms": round(_percentile(ms, 0.99), 3), "mean_ms": round(sum(ms) / len(ms), 3),
            "server_cpu_ms_per_request": round(cpu[mode], 3),
        }
        print(f"  {mode:15s} pooled {len(ms)} req: p50 {out[mode]['p50_ms']:.3f} ms, p90 {out[mode]['p90_ms']:.3f} ms, "
              f"p99 {out[mode]['p99_ms']:.3f} ms, server CPU {out[mode]['server_cpu_ms_per_request']:.3f} ms/req")
    return out


def _live_summary(runs: dict, c: int, live: dict) -> dict:
    on, off = runs["api_c1"], runs["api-off_c1"]
    return {
        "baseline": "api-off (CROSSFIT_SERVING_LOG=false, CROSSFIT_SERVING_METRICS=false, CROSSFIT_SHADOW_SHARE=0)",
        "single_athlete_c1": {"off_baseline": off, "log_and_metrics_only": runs["api-log_c1"], "on": on,
                              "on_shadow_share_1": runs["api-shadow-all_c1"]},  # fmt: skip
        f"throughput_c{c}": {"off_baseline": runs[f"api-off_c{c}"], "on": runs[f"api_c{c}"]},
        "p50_ratio_c1": round(on["p50_ms"] / off["p50_ms"], 3),
        "p99_ratio_c1": round(on["p99_ms"] / off["p99_ms"], 3),
        f"throughput_ratio_c{c}": round(runs[f"api_c{c}"]["throughput_rps"] / runs[f"api-off_c{c}"]["throughput_rps"], 3),
        "on_p99_ms_c1": on["p99_ms"],
        "target_p99_ms_below": 5.0,
        "log_and_shadow_counters": live,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=FULL_SIZE)
    parser.add_argument("--requests", type=int, default=3000, help="requests at concurrency 1")
    parser.add_argument("--seconds", type=float, default=15.0, help="duration at concurrency 16")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="api")
    parser.add_argument("--target", default="")
    parser.add_argument("--ids-file", default="")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--expect", type=int, default=200, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--raw", default="", help=argparse.SUPPRESS)
    parser.add_argument("--live-rounds", type=int, default=5,
                        help="live-traffic comparison at c=1: rounds, each mode in turn (--requests in all)")
    args = parser.parse_args()
    if args.loadgen:
        loadgen(args)
        return

    import psutil

    from crossfit_mlops.settings import get_settings

    state = get_settings().state_dir / "bench" / "serving"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    quiet = {
        "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "FEAST_USAGE": "False",
        "CODECARBON_LOG_LEVEL": "error", "PYTHONWARNINGS": "ignore",
    }
    os.environ.update({**quiet, "CROSSFIT_STATE_DIR": str(state), "CROSSFIT_MLFLOW_PORT": "5072"})
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from crossfit_stack import config, control
    from crossfit_stack.control import wait_for_url

    load_before = round(os.getloadavg()[0], 2)
    cfg = config.config_from_env()
    # this process talks to MLflow through explicit clients (settings.mlflow_tracking_uri); the
    # server, the API and the helper processes get the URI in their own environment
    settings = cfg.settings
    child_env = {**os.environ, **settings.as_env()}
    procs: list[subprocess.Popen] = []
    control.start_mlflow(cfg, {**child_env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        snapshot = date.today().isoformat()
        t0 = time.perf_counter()
        champion = _prepare(settings, args.rows, snapshot)
        setup_s = time.perf_counter() - t0
        import pandas as pd

        from crossfit_mlops.features.specs import feature_set
        from crossfit_mlops.storage import Catalog

        ids = pd.read_parquet(Catalog(settings).feature_table_file(feature_set("v2").view_name, snapshot), columns=["athlete_id"])
        ids_file = state / "athlete_ids.json"
        ids_file.write_text(json.dumps(ids["athlete_id"].sample(frac=1.0, random_state=1).astype(int).tolist()))

        api_port, mlflow_port, off_port, log_port, all_port = 8092, 8093, 8094, 8095, 8096
        mlflow_log = state / "mlflow-serve.log"
        # `mlflow models serve` execs `uvicorn` by name: the venv's bin must be on PATH
        env = {**child_env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        servers = {}
        live_modes = (("api", api_port, {}), ("api-off", off_port, LIVE_OFF), ("api-log", log_port, NO_SHADOW),
                      ("api-shadow-all", all_port, SHADOW_ALL))  # fmt: skip
        for mode, port, extra in live_modes:
            log = state / f"{mode}.log"
            servers[mode] = subprocess.Popen(
                [sys.executable, "-m", "crossfit_mlops", "serve", "--port", str(port), "--log-level", "warning"],
                env={**env, **extra}, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
            )
            procs.append(servers[mode])
            wait_for_url(f"http://127.0.0.1:{port}/ready", servers[mode], log)
        for port in (api_port, all_port):
            _wait_shadow(port, champion["shadow_challenger_version"])
        serve = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
             f"models:/{settings.registered_model_name}@champion", "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(mlflow_port), "-w", "1"],
            env=env, stdout=mlflow_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        procs.append(serve)
        wait_for_url(f"http://127.0.0.1:{mlflow_port}/ping", serve, mlflow_log)

        unknown_file = state / "unknown_ids.json"
        unknown_file.write_text(json.dumps(list(range(900_000_000, 900_000_000 + 20_000))))

        ports = {"api": api_port, "api-off": off_port, "api-log": log_port, "api-shadow-all": all_port, "two-hop": mlflow_port}
        servers["two-hop"] = serve

        def measure(mode: str, concurrency: int, ids_path: Path = ids_file, expect: int = 200, requests: int = 0,
                    raw: Path | None = None) -> dict:  # fmt: skip
            target = f"127.0.0.1:{ports[mode]}"
            cmd = [sys.executable, __file__, "--loadgen", "--mode", mode, "--target", target, "--ids-file", str(ids_path),
                   "--concurrency", str(concurrency), "--expect", str(expect)]
            cmd += ["--requests", str(requests or args.requests), "--seconds", "0"] if concurrency == 1 else ["--seconds", str(args.seconds)]
            cmd += ["--raw", str(raw)] if raw else []
            server = psutil.Process(servers[mode].pid)
            cpu_before = _cpu_seconds(server)
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                raise SystemExit(f"loadgen {mode} c={concurrency} failed: {done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            # CPU the server spent per request: what the code costs, less sensitive to a busy machine
            # than wall-clock latency (includes the warm-up requests, so a slight overestimate)
            result["server_cpu_ms_per_request"] = round(
                (_cpu_seconds(server) - cpu_before) * 1000 / (result["requests"] + args.warmup), 3
            )
            print(f"  {mode:8s} {expect} c={concurrency:<3d} {result['requests']:6d} req, {result['errors']} errors, "
                  f"p50 {result['p50_ms']:7.3f} ms, p99 {result['p99_ms']:7.3f} ms, {result['throughput_rps']:8.1f} req/s, "
                  f"server CPU {result['server_cpu_ms_per_request']:.3f} ms/req")
            return result

        print("measuring (load generator in a separate process):")
        runs = {}
        for mode in ("api-off", "api-log", "api", "api-shadow-all", "two-hop"):
            runs[f"{mode}_c1"] = measure(mode, 1)
        for mode in ("api-off", "api", "two-hop"):
            runs[f"{mode}_c{args.concurrency}"] = measure(mode, args.concurrency)
        runs["unknown"] = measure("api", args.concurrency, unknown_file, expect=404)
        print(f"live traffic at c=1, {args.live_rounds} interleaved rounds (a busy machine drifts less between modes):")
        interleaved = _interleaved(measure, ("api-off", "api-log", "api", "api-shadow-all"), args, state)
        time.sleep(6)  # the log's flush interval (5 s) and the shadow's backlog
        live = _live_counters(api_port)
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        control.stop_service(cfg, "mlflow")

    c = args.concurrency
    ratio = runs[f"api_c{c}"]["throughput_rps"] / runs[f"two-hop_c{c}"]["throughput_rps"]
    result = {
        "rows": args.rows,
        "athletes_in_online_store": len(ids),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1m_before_after": [load_before, round(os.getloadavg()[0], 2)]},
        "champion": {**champion, **CHAMPION_CONFIG},
        "setup_s": round(setup_s, 1),
        "workers": {"api": 1, "api_off": 1, "mlflow_models_serve": 1},
        "single_athlete_c1": {"api": runs["api_c1"], "two_hop_baseline": runs["two-hop_c1"]},
        f"throughput_c{c}": {"api": runs[f"api_c{c}"], "two_hop_baseline": runs[f"two-hop_c{c}"]},
        "targets": {"api_p99_ms_below": 5.0, "throughput_ratio_at_least": 10.0},
        "api_p99_ms": runs["api_c1"]["p99_ms"],
        "throughput_ratio": round(ratio, 2),
        f"unknown_athletes_c{c}": runs["unknown"],
        "live_traffic": {**_live_summary(runs, c, live), "interleaved_c1": interleaved},
        "package": str(Path(sys.modules["crossfit_mlops"].__file__).parent),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nAPI single-athlete p99 {result['api_p99_ms']} ms (target < 5 ms); "
          f"throughput at c={c}: API {runs[f'api_c{c}']['throughput_rps']} req/s vs two-hop "
          f"{runs[f'two-hop_c{c}']['throughput_rps']} req/s = {ratio:.2f}x (target >= 10x); unknown ids at c={c}: "
          f"{runs['unknown']['throughput_rps']} req/s")
    on, off = interleaved["api"], interleaved["api-off"]
    print(f"live traffic (log + metrics + shadow) at c=1, interleaved: p50 {off['p50_ms']} -> {on['p50_ms']} ms, "
          f"p99 {off['p99_ms']} -> {on['p99_ms']} ms (target < 5 ms); at c={c}: {runs[f'api-off_c{c}']['throughput_rps']} -> "
          f"{runs[f'api_c{c}']['throughput_rps']} req/s; {live}\nwritten to {args.out}")


if __name__ == "__main__":
    main()
