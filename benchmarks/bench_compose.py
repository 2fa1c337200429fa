"""Compose mode's costs, as a new user on a machine with no image registry would meet them.

In a temporary clone of this repository (``git clone`` of the current commit), with the Docker
engine of ``scripts/ensure-docker.sh``:

1. ``--cold`` first removes every stand-in image, every image built on one and Docker's build
   cache, so every image is built from nothing, as on a new machine.
2. Image builds, each timed: the Debian base (debootstrap + import) and each stand-in
   (``scripts/standins.sh build``), the MLflow image, the prediction API image and the project
   image (what ``astro dev start`` builds).
3. ``rebuild_after_code_change_s``: one line appended to a module of the package in the clone,
   then the API image and the project image built again. Baseline, measured in the same run: the
   same image's first build (the ratio is the share of the build a code change costs).
   ``baseline_whole_lock_api``: the API image as it was built before (commit bbb399e: the whole
   ``requirements.lock`` with pip), built without cache in the same run, its time and size beside
   the serving-only image's.
4. ``compose_up_s``: ``scripts/compose.sh up`` with the images built (``CROSSFIT_TRIGGER=0``), then
   ``dag_run_s``: the training DAG triggered through the REST API, until it ends, on ``--rows`` raw
   rows with the DAG's default grid.
5. ``scripts/compose.sh remove`` removes both stacks and their volumes.

    .venv/bin/python -m benchmarks.bench_compose [--cold] [--baseline-api] [--rows N]

Writes benchmarks/results/compose.json and prints it. Nothing else of the project may run in
compose mode meanwhile (the network ``ml-network`` is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "compose.json"


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return round(time.perf_counter() - started, 1), done.stdout + done.stderr


def _cold(clone: Path) -> None:
    _run(["bash", "scripts/standins.sh", "remove"], clone)
    subprocess.run(["docker", "builder", "prune", "-af"], capture_output=True, check=True)


def _builds(clone: Path, env: dict[str, str], project_image: str) -> dict[str, float]:
    seconds, log = _run(["bash", "scripts/standins.sh", "build"], clone, env)
    built = {f"standin {tag}": float(s) for tag, s in re.findall(r"built (\S+) in (\d+) s", log)}
    base = re.search(r"base \S+ ready after (\d+) s", log)
    return {
        "standins_total": seconds,
        "debian_base": float(base.group(1)) if base else 0.0,
        **built,
        "mlflow_image": _run(["docker", "build", "-q", "-t", "crossfit-mlflow:3.17.2", "-f", "services/Dockerfile.mlflow", "services"], clone)[0],
        "api_image": _run(["docker", "build", "-q", "-t", "crossfit-prediction-api:latest", "-f", "services/Dockerfile.api", "."], clone)[0],
        "project_image": _run(["docker", "build", "-q", "-t", project_image, "-f", "Dockerfile", "."], clone)[0],
    }


# services/Dockerfile.api at commit bbb399e: the whole lock (Airflow, CodeCarbon, Evidently, Jupyter...).
# With --no-deps: the stand-in's pip 23.0 refuses the lock's `celery[redis]` extra in hash mode
# (the lock pins every package anyway, so the same packages are installed).
WHOLE_LOCK_API = """FROM python:3.11-slim
WORKDIR /usr/local/airflow
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY include ./include
RUN pip install --no-cache-dir --no-deps -e .
"""


def _baseline_api(clone: Path, work: Path) -> dict:
    dockerfile = work / "Dockerfile.api-whole-lock"
    dockerfile.write_text(WHOLE_LOCK_API)
    tag = "crossfit-bench-whole-lock-api:latest"
    seconds = _run(["docker", "build", "-q", "--no-cache", "-t", tag, "-f", str(dockerfile), "."], clone)[0]
    size = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", tag], capture_output=True, text=True, check=True).stdout
    subprocess.run(["docker", "rmi", tag], capture_output=True, check=True)
    return {"build_s": seconds, "size_mb": round(int(size) / 1e6)}


def _services_env(path: Path) -> None:
    lines = [f"{line.split('=')[0]}={secrets.token_hex(24)}" if line.endswith("=change-me") else line
             for line in (ROOT / "services" / ".env.example").read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def _dag_run(clone: Path, env: dict[str, str], rows: int) -> tuple[float, str]:
    from crossfit_mlops.dag_contract import TRAINING_DAG
    from crossfit_stack.airflow_rest import AirflowClient

    ports = json.loads(_run([sys.executable, "tests/compose/astro_cli.py", "dev", "ports"], clone, env)[1].splitlines()[-1])
    client = AirflowClient(f"http://127.0.0.1:{ports['api']}", "admin", "admin")
    client.wait_for_dag(TRAINING_DAG, timeout=180)
    client.unpause(TRAINING_DAG)
    started = time.perf_counter()
    run_id = client.trigger(TRAINING_DAG, {"rows": rows})
    final = client.wait_for_run(TRAINING_DAG, run_id, timeout=3600, poll=1.0)
    return round(time.perf_counter() - started, 1), final["state"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="remove the stand-ins, their images and the build cache first")
    parser.add_argument("--baseline-api", action="store_true", help="also build the whole-lock API image of before")
    parser.add_argument("--rows", type=int, default=423_006, help="raw rows of the DAG run (default: the real file's)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="compose-bench-"))
    clone = work / "crossfit-mlops"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    from tests.compose.astro_cli import (
        project_name,  # the name `astro dev start` gives this clone's image
    )

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "S3_", "CROSSFIT_"))}
    env |= {"CROSSFIT_COMPOSE_ENV": str(work / "services.env"), "CROSSFIT_TRIGGER": "0",
            "CROSSFIT_ASTRO": f"{sys.executable} {clone / 'tests' / 'compose' / 'astro_cli.py'}"}
    _services_env(work / "services.env")
    result: dict = {"commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip(),
                    "cold": args.cold, "rows": args.rows, "date": time.strftime("%Y-%m-%d")}
    if args.cold:
        _cold(clone)
    image = f"{project_name(clone)}/airflow:latest"
    result["build_s"] = _builds(clone, env, image)
    with (clone / "include" / "crossfit_mlops" / "metrics.py").open("a") as module:
        module.write("# a code change\n")
    result["rebuild_after_code_change_s"] = {
        "api_image": _run(["docker", "build", "-q", "-t", "crossfit-prediction-api:latest", "-f", "services/Dockerfile.api", "."], clone)[0],
        "project_image": _run(["docker", "build", "-q", "-t", image, "-f", "Dockerfile", "."], clone)[0],
    }
    api_size = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", "crossfit-prediction-api:latest"],
                              capture_output=True, text=True, check=True).stdout
    result["api_image_size_mb"] = round(int(api_size) / 1e6)
    if args.baseline_api:
        result["baseline_whole_lock_api"] = _baseline_api(clone, work)
    try:
        result["compose_up_s"] = _run(["bash", "scripts/compose.sh", "up"], clone, env)[0]
        result["dag_run_s"], result["dag_run_state"] = _dag_run(clone, env, args.rows)
    finally:
        result["compose_remove_s"] = _run(["bash", "scripts/compose.sh", "remove"], clone, env)[0]
    sizes = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}"], capture_output=True, text=True).stdout
    result["image_sizes"] = dict(line.rsplit(" ", 1) for line in sizes.splitlines() if "<none>" not in line)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
