"""Helpers of the live compose tests (``test_compose_live.py``, ``test_compose_workers.py``): the
Docker preconditions, commands with their timings, HTTP with or without basic-auth, waiting,
MLflow's ``@champion`` read through its REST API and its Prometheus metrics."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.services import ROOT

MODEL = "crossfit_total_lift"


def docker_missing() -> str | None:
    """Why the live compose tests cannot run here, or None."""
    if shutil.which("docker") is None:
        return "no docker CLI (scripts/ensure-docker.sh installs the engine)"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker engine answers (scripts/ensure-docker.sh starts dockerd)"
    version = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True)
    if version.returncode != 0 or not version.stdout.strip().lstrip("v").startswith("2."):
        return "Docker Compose v2 is missing (scripts/ensure-docker.sh installs it)"
    return None


def require_docker(what: str) -> None:
    """Skip without a Docker engine; under ``CI=true`` its absence is a failure."""
    missing = docker_missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} cannot run under CI: {missing}")
        pytest.skip(missing)


def run(args: list[str], env: dict | None = None, timeout: float = 1800, check: bool = True, step: str = "",
        log: list | None = None) -> subprocess.CompletedProcess:
    """``args`` in the project root; with ``step``, its duration is appended to ``log``."""
    start = time.monotonic()
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if step and log is not None:
        log.append((step, round(time.monotonic() - start, 1)))
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def basic_auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _json(raw: bytes) -> dict:
    try:
        return json.loads(raw or b"{}")
    except ValueError:
        return {"text": raw.decode(errors="replace")[:500]}


def http(url: str, body: dict | None = None, auth: str | None = None, timeout: float = 10) -> tuple[int, dict]:
    """(status, JSON body); status 0 when nothing answered."""
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = f"Basic {auth}"
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=timeout) as r:
            return r.status, _json(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _json(exc.read())
    except (urllib.error.URLError, OSError) as exc:
        return 0, {"error": str(exc)}


def until(predicate: Callable[[], Any], timeout: float, what: str, every: float = 2.0) -> Any:
    """The first truthy value of ``predicate``; an AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def champion(mlflow_url: str, auth: str, model: str = MODEL) -> dict | None:
    """The model version ``@champion`` points at (MLflow's REST API, basic-auth), or None."""
    status, body = http(f"{mlflow_url}/api/2.0/mlflow/registered-models/alias?name={model}&alias=champion", auth=auth)
    return body["model_version"] if status == 200 else None


def prometheus_counter(url: str, auth: str, name: str, **labels: str) -> float:
    """A counter's value in the Prometheus text that ``GET url`` answers (basic-auth), summed over
    the samples that carry ``labels``; 0 when none does (a counter nothing has counted yet)."""
    from prometheus_client.parser import text_string_to_metric_families

    request = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers.get_content_type() == "text/plain", response.headers["Content-Type"]
        text = response.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())
