"""From a fresh clone to a champion, as a new user would: the install, then ``./start-all.sh``.

In a temporary clone of this repository (``git clone`` of the current commit):

1. ``install_s``: ``scripts/ensure-env.sh`` (a new virtualenv, the locked stack installed by uv)
   with an EMPTY uv cache, so every package is downloaded as on a new machine (target <= 60 s).
   Baseline, measured in the same run: the previous way, ``pip install -r requirements-dev.txt``
   into another new virtualenv (pip's own cache disabled).
2. ``start_all_s``: ``./start-all.sh`` at full size (423,006 raw rows, the default grid) until it
   prints the leaderboard and the prediction API's example (target <= 3 min). Baseline: the plain
   script (benchmarks/plain_script.py) on the same raw snapshot, plus the time to generate it.

    .venv/bin/python -m benchmarks.bench_quickstart [--skip-pip-baseline]

Writes benchmarks/results/quickstart.json and prints a summary. Everything it starts is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "quickstart.json"


def _timed(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    started = time.perf_counter()
    with log.open("w") as out:
        subprocess.run(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
    return round(time.perf_counter() - started, 1)


def main() -> None:
    from tests.support.services import free_port

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-pip-baseline", action="store_true", help="skip the minutes-long pip install")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="quickstart-"))
    clone = work / "crossfit-mlops"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {**os.environ, "UV_CACHE_DIR": str(work / "uv-cache"), "PIP_NO_CACHE_DIR": "1"}
    for name in ("MLFLOW_TRACKING_URI", "AIRFLOW_HOME", "CROSSFIT_STATE_DIR", "CROSSFIT_VENV", "VIRTUAL_ENV"):
        env.pop(name, None)
    result: dict = {"commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()}
    try:
        result["install_s"] = _timed(["bash", "scripts/ensure-env.sh"], clone, env, work / "install.log")
        if not args.skip_pip_baseline:
            venv = work / "pip-venv"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            result["baseline_pip_install_s"] = _timed(
                [str(venv / "bin/python"), "-m", "pip", "install", "-q", "-r", "requirements-dev.txt", "-e", "."], clone, env, work / "pip.log"
            )
        ports = {"CROSSFIT_MLFLOW_PORT": free_port(), "CROSSFIT_AIRFLOW_PORT": free_port(), "CROSSFIT_API_PORT": free_port(),
                 "CROSSFIT_WORKER_LOG_PORT": free_port()}
        run_env = {**env, **{k: str(v) for k, v in ports.items()}}
        result["start_all_s"] = _timed(["./start-all.sh"], clone, run_env, work / "start-all.log")
        printed = (work / "start-all.log").read_text()
        result["start_all_printed_leaderboard"] = "gate: challenger" in printed and "curl -s" in printed
        raw = next((clone / ".state" / "data" / "raw").glob("snapshot=*/athletes.csv"))
        script = subprocess.run(
            [str(clone / ".venv/bin/python"), str(clone / "benchmarks/plain_script.py"), "--raw", str(raw),
             "--snapshot", raw.parent.name.removeprefix("snapshot="), "--processes", "2"],
            capture_output=True, text=True, check=True, cwd=clone,
        )  # fmt: skip
        result["baseline_plain_script"] = json.loads(script.stdout.strip().splitlines()[-1])
        result["baseline_generation_s"] = _timed(
            [str(clone / ".venv/bin/python"), "-m", "crossfit_mlops", "generate", "--out", str(work / "athletes.csv")],
            clone, env, work / "generate.log",
        )  # fmt: skip
        result["baseline_total_s"] = round(result["baseline_generation_s"] + result["baseline_plain_script"]["wall_s"], 1)
    finally:
        subprocess.run(["./stop-all.sh"], cwd=clone, env=env, capture_output=True)
    result["targets"] = {"install_s": 60, "start_all_s": 180}
    result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result.get("baseline_plain_script", {}).pop("runs", None)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
