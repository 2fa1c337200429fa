"""Compose mode for real: both stacks on one Docker network, started the way a user starts them.

``scripts/compose.sh up`` starts the ML services stack (MLflow with basic-auth on PostgreSQL,
SeaweedFS, Redis), builds the prediction API's image, then starts the Astro project the way
``astro dev start`` does (``tests/compose/astro_cli.py``: the CLI cannot be installed here, so a
stand-in renders the CLI's Airflow 3 compose file and merges ``docker-compose.override.yml``,
with Docker Compose v2.40.3, the release the CLI embeds). Every base image is a local stand-in
(``scripts/standins.sh``: no registry is reachable here). Then, as a user would:
``feast apply`` in the scheduler container (the README's command and the package's), the training
DAG unpaused and triggered through the published REST API, ``@champion`` read from MLflow's REST
API with the basic-auth credential, ``/predict`` answered by the API container; faults injected
for real (the scheduler's process killed mid-run, the MLflow container restarted during a run, the
Feast Redis container stopped and started while the API serves); ``compose.sh down`` / ``up``
keeps the registry, the runs and the champion. Without a Docker engine the module is skipped, and
under ``CI=true`` that is a failure.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from crossfit_mlops.dag_contract import TRAINING_DAG, TrainingTasks
from crossfit_stack.airflow_rest import AirflowClient
from tests.compose.live import (
    basic_auth,
    champion,
    http,
    prometheus_counter,
    require_docker,
    run,
    until,
)
from tests.support.pipeline import GRID
from tests.support.services import ROOT, free_port

pytestmark = pytest.mark.timeout(3000)
ROWS = 5000
LOG = []  # (step, seconds): printed at the end of the module, for the timings in the docs


_run = functools.partial(run, log=LOG)  # a step's duration goes to this module's LOG


@dataclass
class Stacks:
    env: dict[str, str]
    airflow: str
    mlflow: str
    api: str
    auth: str
    astro: list[str]

    def compose_sh(self, *args: str, step: str = "") -> subprocess.CompletedProcess:
        return _run(["bash", "scripts/compose.sh", *args], env=self.env, step=step)

    def container(self, service: str) -> str:
        found = _run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.service={service}",
                      "--filter", "network=ml-network"]).stdout.split()
        assert found, f"no running {service} container on ml-network"
        return found[0]

    def exec(self, service: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run(["docker", "exec", self.container(service), "bash", "-c", command], check=check, timeout=600)

    def client(self) -> AirflowClient:
        return AirflowClient(self.airflow, "admin", "admin")


def _services_env(path: Path, mlflow_port: int, api_port: int) -> None:
    lines = []
    for line in (ROOT / "services" / ".env.example").read_text().splitlines():
        key = line.split("=", 1)[0]
        if line.endswith("=change-me"):
            line = f"{key}={secrets.token_hex(24)}"
        elif key == "MLFLOW_PORT":
            line = f"MLFLOW_PORT={mlflow_port}"  # not 5000: the allowed hosts must follow the port
        elif key == "CROSSFIT_API_PORT":
            line = f"CROSSFIT_API_PORT={api_port}"
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def _teardown(env: dict[str, str]) -> None:
    done = subprocess.run(["bash", "scripts/compose.sh", "remove"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"compose.sh remove failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    left = _run(["docker", "ps", "-aq", "--filter", "network=ml-network"], check=False).stdout.split()
    assert not left, f"containers left on ml-network after compose.sh remove: {left}"


@pytest.fixture(scope="module")
def stacks(tmp_path_factory) -> Stacks:
    require_docker("compose mode")
    if _run(["docker", "network", "ls", "-q", "--filter", "name=^ml-network$"]).stdout.strip():
        pytest.fail("a Docker network ml-network exists: another compose-mode stack runs here (scripts/compose.sh down)")
    tmp = tmp_path_factory.mktemp("compose")
    mlflow_port, api_port = free_port(), free_port()
    services_env = tmp / "services.env"
    _services_env(services_env, mlflow_port, api_port)
    astro = [sys.executable, str(ROOT / "tests" / "compose" / "astro_cli.py")]
    env = {**os.environ, "CROSSFIT_COMPOSE_ENV": str(services_env), "CROSSFIT_ASTRO": " ".join(astro),
           "CROSSFIT_TRIGGER": "0", "CROSSFIT_STATE_DIR": str(tmp / "state")}
    for name in [k for k in env if k.startswith(("MLFLOW_", "S3_")) or k in ("CROSSFIT_BIND", "CROSSFIT_API_PORT")]:
        env.pop(name)
    _run(["bash", "scripts/standins.sh", "build"], env=env, step="stand-in images (missing ones only)")
    try:
        _run(["bash", "scripts/compose.sh", "up"], env=env, step="compose.sh up (builds included)")
        ports = json.loads(_run([*astro, "dev", "ports"], env=env).stdout)
        values = dict(line.split("=", 1) for line in services_env.read_text().splitlines() if "=" in line and not line.startswith("#"))
        auth = basic_auth(values["MLFLOW_ADMIN_USER"], values["MLFLOW_ADMIN_PASSWORD"])
        yield Stacks(env, f"http://127.0.0.1:{ports['api']}", f"http://127.0.0.1:{mlflow_port}",
                     f"http://127.0.0.1:{api_port}", auth, astro)
    finally:
        _teardown(env)
        print("\ncompose-mode timings (s):", json.dumps(LOG))


_http, _until = http, until


def _unauthorized_count(stacks: Stacks) -> float:
    """How many calls MLflow answered 401 since its container started (its Prometheus counter)."""
    return prometheus_counter(f"{stacks.mlflow}/metrics", stacks.auth, "mlflow_http_request_total", status="401")


def _champion(stacks: Stacks) -> str | None:
    version = champion(stacks.mlflow, stacks.auth)
    return version["version"] if version else None


def _trigger(stacks: Stacks, snapshot: str) -> str:
    conf = {"snapshot": snapshot, "rows": ROWS, "grid": GRID, "r2_floor": -0.5}
    return stacks.client().trigger(TRAINING_DAG, conf)


ATHLETES: dict[str, int] = {}


def _known_athlete(stacks: Stacks, snapshot: str) -> int:
    """An athlete of the snapshot, read where the pipeline wrote it (the scheduler's state volume)."""
    if snapshot not in ATHLETES:
        # os._exit after the print: pyarrow's threads can abort the interpreter's own exit (seen: 134)
        out = stacks.exec("scheduler", "python -c \"import os, sys; from crossfit_mlops import storage; "
                          f"print(int(storage.catalog().load_clean('{snapshot}')['athlete_id'].iloc[0])); "
                          "sys.stdout.flush(); os._exit(0)\"").stdout
        ATHLETES[snapshot] = int(out.strip().splitlines()[-1])
    return ATHLETES[snapshot]


# --- the stacks and the user's commands --------------------------------------------------------------
def test_both_stacks_share_one_network_and_the_runtime_user(stacks):
    names = _run(["docker", "network", "inspect", "ml-network", "--format", "{{range .Containers}}{{.Name}} {{end}}"]).stdout
    for service in ("mlflow-server", "feast-redis", "seaweedfs", "mlflow-postgres", "scheduler", "dag-processor",
                    "triggerer", "api-server", "prediction-api"):
        assert service in names, (service, names)
    assert stacks.exec("scheduler", "id -u; id -g").stdout.split() == ["50000", "0"]
    assert stacks.exec("prediction-api", "id -u; id -g").stdout.split() == ["50000", "0"]
    # MLflow answers the host on its non-default published port (allowed hosts follow MLFLOW_PORT)
    status, _ = _http(f"{stacks.mlflow}/api/2.0/mlflow/experiments/search?max_results=1", auth=stacks.auth)
    assert status == 200
    assert _http(f"{stacks.mlflow}/api/2.0/mlflow/experiments/search?max_results=1")[0] == 401  # basic-auth on
    # MLflow's Prometheus metrics (--expose-prometheus), behind the credential like the API. Only
    # this test calls MLflow without it, so the 401s counted are exactly its calls, whichever of
    # the two workers answered them: both workers write their counts, /metrics sums them
    assert _http(f"{stacks.mlflow}/metrics")[0] == 401
    before = _unauthorized_count(stacks)
    for _ in range(8):
        assert _http(f"{stacks.mlflow}/api/2.0/mlflow/experiments/search?max_results=1")[0] == 401
    assert _unauthorized_count(stacks) - before == 8
    assert prometheus_counter(f"{stacks.mlflow}/metrics", stacks.auth, "mlflow_http_request_total", status="200") > 0
    files = stacks.exec("mlflow-server", "ls /mlflow/metrics").stdout.split()  # e.g. counter_<pid>.db
    assert len({f.rsplit("_", 1)[-1] for f in files}) == 2, files  # the two workers' files, no other process's


def test_feast_apply_in_the_scheduler_container_both_ways(stacks):
    readme = stacks.exec("scheduler", "cd include/feast/repo/feature_repo && feast apply", check=False)
    assert readme.returncode == 0, readme.stderr[-3000:]
    package = stacks.exec("scheduler", "python -m crossfit_mlops feast-apply", check=False)
    assert package.returncode == 0, package.stderr[-3000:]
    owners = stacks.exec("scheduler", "stat -c '%u:%g %n' .state .state/feast").stdout
    assert all(line.startswith("50000:0") for line in owners.splitlines()), owners


def test_training_dag_reaches_a_champion_and_the_api_serves_it(stacks):
    client = stacks.client()
    client.wait_for_dag(TRAINING_DAG, timeout=180)
    client.unpause(TRAINING_DAG)
    start = time.monotonic()
    run_id = _trigger(stacks, "2026-12-01")
    final = client.wait_for_run(TRAINING_DAG, run_id, timeout=1200, poll=2.0)
    LOG.append(("training DAG run, trigger to end", round(time.monotonic() - start, 1)))
    assert final["state"] == "success", final
    version = _until(lambda: _champion(stacks), 60, "@champion in MLflow")
    athlete = _known_athlete(stacks, "2026-12-01")
    status, body = _until(lambda: (r := _http(f"{stacks.api}/predict", {"athlete_id": athlete}))[0] == 200 and r,
                          240, f"/predict answered for athlete {athlete}")
    assert body["model_version"] == version and body["prediction"] > 0, body


# --- faults ------------------------------------------------------------------------------------------
def _task_states(stacks: Stacks, run_id: str) -> dict[str, str]:
    return {f"{t['task_id']}[{t.get('map_index', -1)}]": t["state"] for t in stacks.client().task_instances(TRAINING_DAG, run_id)}


def test_scheduler_killed_and_mlflow_restarted_mid_run_end_in_a_clear_state(stacks):
    client = stacks.client()
    before = _champion(stacks)
    start = time.monotonic()
    run_id = _trigger(stacks, "2026-12-02")
    _until(lambda: any(s == "running" for s in _task_states(stacks, run_id).values()), 300, "a running task")
    scheduler = stacks.container("scheduler")
    pid = _run(["docker", "inspect", "--format", "{{.State.Pid}}", scheduler]).stdout.strip()
    restarts = int(_run(["docker", "inspect", "--format", "{{.RestartCount}}", scheduler]).stdout)
    _run(["pkill", "-KILL", "-P", pid, "-f", "airflow scheduler"], check=False)  # the scheduler process, as a crash
    _until(lambda: int(_run(["docker", "inspect", "--format", "{{.RestartCount}}", scheduler]).stdout) > restarts
           and _run(["docker", "inspect", "--format", "{{.State.Running}}", scheduler]).stdout.strip() == "true",
           120, "the restart policy to bring the scheduler back")
    _until(lambda: any(k.startswith(TrainingTasks.TRAIN) and s == "running" for k, s in _task_states(stacks, run_id).items())
           or client.dag_run(TRAINING_DAG, run_id)["state"] != "running", 600, "the training fan-out")
    assert _unauthorized_count(stacks) > 0  # counted by the first test
    _run(["docker", "restart", "-t", "5", stacks.container("mlflow-server")], step="MLflow container restart")
    final = client.wait_for_run(TRAINING_DAG, run_id, timeout=1500, poll=3.0)
    states = _task_states(stacks, run_id)
    assert final["state"] in ("success", "failed"), final
    assert not [k for k, s in states.items() if s in ("running", "queued", "scheduled", "up_for_retry")], states
    LOG.append((f"run with both faults, trigger to end ({final['state']})", round(time.monotonic() - start, 1)))
    after = _champion(stacks)
    assert after is not None and (before is None or int(after) >= int(before)), (before, after)  # nothing lost
    # the restarted server counts from zero: its metrics folder (a tmpfs) kept no file of the old workers
    assert _unauthorized_count(stacks) == 0


def test_redis_restarted_while_the_api_serves(stacks):
    athlete = _known_athlete(stacks, "2026-12-01")
    version = _champion(stacks)
    # the API swaps to a new champion within its refresh period: compare answers of one version
    status, before = _until(lambda: (r := _http(f"{stacks.api}/predict", {"athlete_id": athlete}))[0] == 200
                            and r[1]["model_version"] == version and r, 120, f"the API serving @champion v{version}")
    redis = stacks.container("feast-redis")
    _run(["docker", "stop", "-t", "10", redis])
    try:
        _until(lambda: _http(f"{stacks.api}/ready")[0] == 503, 60, "/ready to report the online store down")
        status, body = _http(f"{stacks.api}/predict", {"athlete_id": athlete})
        assert status == 503, (status, body)
    finally:
        _run(["docker", "start", redis])
    _until(lambda: _http(f"{stacks.api}/ready")[0] == 200, 120, "/ready to recover")
    status, after = _http(f"{stacks.api}/predict", {"athlete_id": athlete})
    assert status == 200 and after["model_version"] == version, after
    assert after["prediction"] == before["prediction"], (before, after)  # the features survived the restart


# --- stop and start again: the named volumes keep everything -----------------------------------------
def test_down_and_up_keep_registry_runs_and_champion(stacks):
    version = _champion(stacks)
    runs = {r["dag_run_id"] for r in stacks.client().dag_runs(TRAINING_DAG)}
    stacks.compose_sh("down", step="compose.sh down")
    assert not _run(["docker", "ps", "-q", "--filter", "network=ml-network"], check=False).stdout.strip()
    stacks.compose_sh("up", step="compose.sh up again (images cached)")
    assert _until(lambda: _champion(stacks), 120, "MLflow back") == version
    assert runs <= {r["dag_run_id"] for r in stacks.client().dag_runs(TRAINING_DAG)}
    athlete = _known_athlete(stacks, "2026-12-01")
    status, body = _until(lambda: (r := _http(f"{stacks.api}/predict", {"athlete_id": athlete}))[0] == 200 and r,
                          240, "/predict after the restart")
    assert body["model_version"] == version, body
