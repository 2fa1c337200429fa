"""Compose mode, validated without a Docker engine.

Every compose file passes ``docker-compose config`` (Debian's Compose 1.29, which validates without
a daemon; ``.ci/run`` installs it), the Astro override is validated merged onto a stand-in of the
file Astro generates, and the names that must agree across files do: the network, the service names
and ports that URIs point at, the volumes, the variables of ``.env.example`` and
``airflow_settings.yaml``. Compose 1.29 does not catch an undefined network; these checks do.
Security: published ports bind to 127.0.0.1 unless ``CROSSFIT_BIND`` says otherwise, MLflow runs
its basic-auth app with the admin credential of the git-ignored ``.env`` and only its server holds
the object store's key.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from urllib.parse import urlparse

import pytest
import yaml

from tests.support.services import ROOT

SERVICES = ROOT / "services" / "docker-compose.yaml"
OVERRIDE = ROOT / "docker-compose.override.yml"
ASTRO_BASE = ROOT / "tests" / "compose" / "astro_base.yml"
ENV_EXAMPLE = ROOT / "services" / ".env.example"


@pytest.fixture(scope="module")
def compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is missing: apt-get install -y --no-install-recommends docker-compose (.ci/run does)")
    return binary


def _config(compose: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "S3_", "CROSSFIT_BIND"))}
    return subprocess.run([compose, *args, "config"], capture_output=True, text=True, cwd=ROOT, env={**base_env, **(env or {})})


def _load(path):
    return yaml.safe_load(path.read_text())


def test_ml_services_stack_is_valid_and_needs_its_secret(compose, tmp_path):
    ok = _config(compose, "-f", str(SERVICES), "--env-file", str(ENV_EXAMPLE))
    assert ok.returncode == 0, ok.stderr
    rendered = yaml.safe_load(ok.stdout)
    # the object store and its bucket step joined the stack (issue: artifacts on an S3-compatible store)
    assert set(rendered["services"]) == {"mlflow-postgres", "mlflow-server", "feast-redis", "seaweedfs", "bucket-init"}
    empty = tmp_path / "empty.env"
    empty.write_text("")
    missing = _config(compose, "-f", str(SERVICES), "--env-file", str(empty))
    assert missing.returncode != 0 and "MLFLOW_DB_PASSWORD" in missing.stderr
    for name in ("MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SECRET_KEY", "S3_ACCESS_KEY", "S3_SECRET_KEY"):
        partial = tmp_path / f"without_{name}.env"
        partial.write_text("\n".join(line for line in ENV_EXAMPLE.read_text().splitlines() if not line.startswith(name + "=")))
        refused = _config(compose, "-f", str(SERVICES), "--env-file", str(partial))
        assert refused.returncode != 0 and name in refused.stderr, (name, refused.stderr)


def test_astro_override_merges_onto_the_astro_services(compose):
    done = _config(compose, "-f", str(ASTRO_BASE), "-f", str(OVERRIDE), env={"MLFLOW_ADMIN_PASSWORD": "x" * 20})
    assert done.returncode == 0, done.stderr
    merged = yaml.safe_load(done.stdout)
    for name in ("scheduler", "dag-processor", "triggerer", "api-server"):
        assert set(merged["services"][name]["networks"]) == {"airflow", "ml-network"}, name
    assert merged["networks"]["ml-network"] == {"external": True, "name": "ml-network"}
    api = merged["services"]["prediction-api"]
    assert api["networks"] == {"ml-network": None} or set(api["networks"]) == {"ml-network"}
    # every MLflow client logs in with the admin credential; without it the override refuses
    assert merged["services"]["scheduler"]["environment"]["MLFLOW_TRACKING_PASSWORD"] == "x" * 20
    refused = _config(compose, "-f", str(ASTRO_BASE), "-f", str(OVERRIDE))
    assert refused.returncode != 0 and "MLFLOW_ADMIN_PASSWORD" in refused.stderr


def test_names_agree_across_files():
    services, override = _load(SERVICES), _load(OVERRIDE)
    settings = _load(ROOT / "airflow_settings.yaml")["airflow"]
    variables = {v["variable_name"]: v["variable_value"] for v in settings["variables"]}

    # one network, created by the ML stack, joined by the Astro project
    # owned by neither stack (compose.sh creates it): a `down` of one must not remove it under the other
    assert services["networks"]["ml-network"] == {"external": True, "name": "ml-network"}
    assert override["networks"]["ml-network"] == {"external": True, "name": "ml-network"}
    for name, service in {**services["services"], **override["services"]}.items():
        assert "ml-network" in service["networks"], f"{name} is not on ml-network"

    # the tracking URI everyone uses points at the MLflow service and its port, which accepts that Host
    server = services["services"]["mlflow-server"]
    uri = urlparse(variables["crossfit_mlflow_tracking_uri"])
    env = override["x-crossfit-env"]
    assert env["MLFLOW_TRACKING_URI"] == variables["crossfit_mlflow_tracking_uri"]
    assert (uri.hostname, uri.port) == ("mlflow-server", 5000)
    command = server["command"]
    assert command[command.index("--port") + 1] == "5000"
    allowed = command[command.index("--allowed-hosts") + 1].split(",")
    assert {"mlflow-server", "mlflow-server:5000"} <= set(allowed)
    backend = command[command.index("--backend-store-uri") + 1]
    assert backend.startswith("postgresql+psycopg2://") and "@mlflow-postgres:5432/" in backend
    assert server["depends_on"]["mlflow-postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in services["services"]["mlflow-postgres"] and "healthcheck" in server
    assert server["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"

    # Feast's online store in compose mode is the stack's Redis
    host, port = env["CROSSFIT_FEAST_REDIS"].split(":")
    assert host in services["services"] and port == "6379"

    # the variables airflow_settings.yaml declares are the ones the package reads
    from crossfit_mlops.settings import AIRFLOW_VARIABLES

    assert set(variables) == set(AIRFLOW_VARIABLES)
    assert (ROOT / variables["crossfit_feast_repo"] / "feature_store.yaml").is_file()


@pytest.mark.parametrize("path", [SERVICES, OVERRIDE], ids=["services", "override"])
def test_volumes_are_declared_and_used(path):
    document = _load(path)
    used = {
        volume.split(":")[0]
        for service in document["services"].values()
        for volume in service.get("volumes", [])
        if not volume.startswith((".", "/"))
    }
    assert used == set(document.get("volumes") or {})


def test_secrets_come_from_a_git_ignored_env_file():
    text = SERVICES.read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    optional = set(re.findall(r"\$\{(\w+):-", text))
    example = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#"))
    assert required and required | optional <= set(example)
    assert "PASSWORD" not in "".join(re.findall(r"POSTGRES_PASSWORD: (\S+)", text)).replace("MLFLOW_DB_PASSWORD", "")
    ignored = subprocess.run(["git", "check-ignore", "-q", "services/.env"], cwd=ROOT)
    assert ignored.returncode == 0, "services/.env must be git-ignored"


def test_dockerfiles_install_the_package_without_path_hacks():
    astro = (ROOT / "Dockerfile").read_text()
    # a Runtime 3 build, optionally one of its Python flavors (-python-3.12): tests/deploy/ checks which
    assert re.search(r"^FROM astrocrpublic\.azurecr\.io/runtime:3\.\d+-\d+(-python-3\.\d+)?$", astro, re.M)
    assert "pip install --no-cache-dir --no-deps -e ." in astro
    for path in ("Dockerfile", "services/Dockerfile.api", "services/Dockerfile.mlflow"):
        assert "sys.path" not in (ROOT / path).read_text() and "PYTHONPATH" not in (ROOT / path).read_text()
    assert "psycopg2" in (ROOT / "services" / "Dockerfile.mlflow").read_text()


# --- security of compose mode ---------------------------------------------------------------------
def _published(service: dict) -> list[str]:
    return [str(p) for p in service.get("ports", [])]


@pytest.mark.parametrize("bind", [None, "0.0.0.0"], ids=["default", "told-otherwise"])
def test_published_ports_bind_to_localhost_unless_told_otherwise(compose, bind, tmp_path):
    env = {"MLFLOW_ADMIN_PASSWORD": "x" * 20, **({"CROSSFIT_BIND": bind} if bind else {})}
    example = {k: v for k, v in (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#"))}
    example.pop("CROSSFIT_BIND")  # what the file would say is tested by the default case
    env_file = tmp_path / "bind.env"
    env_file.write_text("\n".join(f"{k}={v}" for k, v in example.items()))
    services = yaml.safe_load(_config(compose, "-f", str(SERVICES), "--env-file", str(env_file), env=env).stdout)["services"]
    merged = yaml.safe_load(_config(compose, "-f", str(ASTRO_BASE), "-f", str(OVERRIDE), env=env).stdout)["services"]
    published = {name: _published(s) for name, s in {**services, "prediction-api": merged["prediction-api"]}.items()}
    assert {name for name, ports in published.items() if ports} == {"mlflow-server", "prediction-api"}
    want = bind or "127.0.0.1"
    for name, ports in published.items():
        for port in ports:
            assert port.startswith(f"{want}:"), (name, port)


def test_mlflow_runs_basic_auth_and_only_the_server_holds_the_s3_key():
    services = _load(SERVICES)["services"]
    server = services["mlflow-server"]
    command = server["command"]
    assert command[command.index("--app-name") + 1] == "basic-auth"
    assert command[command.index("--artifacts-destination") + 1].startswith("s3://") and "--serve-artifacts" in command
    assert "${MLFLOW_ADMIN_PASSWORD:?" in server["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert server["depends_on"]["bucket-init"]["condition"] == "service_completed_successfully"
    assert "healthcheck" in services["seaweedfs"] and not services["seaweedfs"].get("ports")
    holders = {name for name, s in services.items() if "AWS_SECRET_ACCESS_KEY" in (s.get("environment") or {})}
    assert holders == {"mlflow-server", "bucket-init"}
    override = _load(OVERRIDE)
    env = override["x-crossfit-env"]
    assert not any(k.startswith("AWS_") for k in env), "Airflow and the API need no S3 key"
    assert env["MLFLOW_TRACKING_USERNAME"].startswith("${MLFLOW_ADMIN_USER")
    assert env["MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD"] == "false"
    assert int(env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 2
    ini = (ROOT / "services" / "basic_auth.ini").read_text()
    assert "admin_password" not in ini and "auth_cache_ttl_seconds" in ini
    assert "COPY basic_auth.ini" in (ROOT / "services" / "Dockerfile.mlflow").read_text()


def test_mlflow_exposes_prometheus_metrics_from_a_folder_new_at_every_start(compose):
    rendered = yaml.safe_load(_config(compose, "-f", str(SERVICES), "--env-file", str(ENV_EXAMPLE)).stdout)
    server = rendered["services"]["mlflow-server"]
    command = server["command"]
    folder = command[command.index("--expose-prometheus") + 1]
    # prometheus_client's multiprocess files must not outlive their processes (MLflow never empties
    # the folder): a tmpfs, new at each start of the container, restarts included; not a volume
    assert folder in server.get("tmpfs", []), f"{folder} is not a tmpfs of mlflow-server"
    assert not [v for v in server.get("volumes", []) if folder in str(v)], f"{folder} is also a volume"
    # --expose-prometheus imports prometheus-flask-exporter, which mlflow[auth] does not bring
    dockerfile = (ROOT / "services" / "Dockerfile.mlflow").read_text()
    assert re.search(r"prometheus-flask-exporter==\d", dockerfile), "prometheus-flask-exporter is not pinned in the image"
    # workers mode merges onto this file and keeps MLflow's command and mounts as they are
    assert "mlflow-server" not in _load(ROOT / "services" / "docker-compose.workers.yaml")["services"]


# --- scripts/compose.sh: the secrets file, with stand-ins for docker and astro ---------------------
STUB = """#!/bin/sh
echo "$(basename "$0") $* MLFLOW_ADMIN_PASSWORD=${MLFLOW_ADMIN_PASSWORD:+set}" >> "$STUB_LOG"
case "$(basename "$0") $1 $2" in
  "docker compose version") [ -n "$STUB_COMPOSE_V2" ] || exit 1; echo "$STUB_COMPOSE_V2"; exit 0 ;;
  "docker-compose version"*) echo 1.29.2; exit 0 ;;
  "docker ps"*) echo scheduler-1 ;;
esac
exit 0
"""


def _compose_sh(tmp_path, env_file, compose_v2: str = "2.40.3", args: tuple[str, ...] = ("up",)):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("docker", "docker-compose", "astro"):
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.log"
    import os

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "S3_"))},
        "PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_LOG": str(log),
        "CROSSFIT_COMPOSE_ENV": str(env_file), "CROSSFIT_WORKERS_ENV": str(env_file), "CROSSFIT_TRIGGER": "0",
        "STUB_COMPOSE_V2": compose_v2,
    }
    env.pop("CROSSFIT_ASTRO", None)
    done = subprocess.run(["bash", str(ROOT / "scripts" / "compose.sh"), *args], env=env, capture_output=True, text=True, timeout=60)
    return done, (log.read_text() if log.exists() else "")


def test_compose_refuses_the_example_password(tmp_path):
    env_file = tmp_path / "services.env"
    env_file.write_text(ENV_EXAMPLE.read_text().replace("S3_ACCESS_KEY=change-me", "S3_ACCESS_KEY=somekey"))
    done, calls = _compose_sh(tmp_path, env_file)
    assert done.returncode == 1, done.stderr
    assert "still has the example value change-me for: MLFLOW_DB_PASSWORD MLFLOW_ADMIN_PASSWORD" in done.stderr
    assert calls == "", "no container may start with an example password"


def test_compose_generates_missing_secrets_owner_only_and_never_prints_them(tmp_path):
    import stat

    env_file = tmp_path / "services.env"
    done, calls = _compose_sh(tmp_path, env_file)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line and not line.startswith("#"))
    secrets = [values[k] for k in ("MLFLOW_DB_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SECRET_KEY", "S3_ACCESS_KEY", "S3_SECRET_KEY")]
    assert len(set(secrets)) == len(secrets) and all(len(v) == 48 for v in secrets)
    assert "=change-me" not in env_file.read_text()
    assert not any(v in done.stdout + done.stderr for v in secrets), "a secret was printed"
    assert f"password: MLFLOW_ADMIN_PASSWORD in {env_file}" in done.stdout
    # the ML stack got the file, and astro (whose override interpolates it) the admin password
    assert f"--env-file {env_file} up -d --build --wait" in calls
    assert "astro dev start --no-browser MLFLOW_ADMIN_PASSWORD=set" in calls
    again, _ = _compose_sh(tmp_path, env_file)  # a second start keeps the generated values
    assert again.returncode == 0 and dict(
        line.split("=", 1) for line in env_file.read_text().splitlines() if line and not line.startswith("#")
    ) == values


# --- the breaks of the first real start (issue 22), each checked where it can be without an engine --
def test_compose_refuses_compose_v1_before_starting_anything(tmp_path):
    """Compose 1.29 does not know `up --wait`: it printed its usage, exited 0 and started nothing."""
    done, calls = _compose_sh(tmp_path, tmp_path / "services.env", compose_v2="")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Docker Compose 1.29.2 is not supported: compose mode needs Compose v2" in done.stderr
    assert " up " not in calls and "astro" not in calls


def test_compose_builds_the_api_image_before_the_astro_project_starts(tmp_path):
    """`astro dev start` starts the merged services without building: the API image must exist."""
    done, calls = _compose_sh(tmp_path, tmp_path / "services.env")
    assert done.returncode == 0, done.stderr
    build = calls.index("docker build -q -t crossfit-prediction-api:latest -f services/Dockerfile.api .")
    assert build < calls.index("astro dev start")


def _example_with(tmp_path, **values: str):
    lines = [line for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")]
    pairs = dict(line.split("=", 1) for line in lines) | values
    path = tmp_path / "custom.env"
    path.write_text("\n".join(f"{k}={v}" for k, v in pairs.items()))
    return path


def test_mlflow_allowed_hosts_follow_the_published_port(compose, tmp_path):
    """With MLFLOW_PORT=5123 the host calls 127.0.0.1:5123: MLflow answered 403 'Invalid Host header'."""
    env_file = _example_with(tmp_path, MLFLOW_PORT="5123")
    server = yaml.safe_load(_config(compose, "-f", str(SERVICES), "--env-file", str(env_file)).stdout)["services"]["mlflow-server"]
    hosts = server["command"][server["command"].index("--allowed-hosts") + 1].split(",")
    assert {"127.0.0.1:5123", "localhost:5123", "mlflow-server", "mlflow-server:5000"} <= set(hosts)
    assert any(":5123:5000" in p for p in _published(server))


def test_the_prediction_api_port_can_be_changed(compose):
    env = {"MLFLOW_ADMIN_PASSWORD": "x" * 20, "CROSSFIT_API_PORT": "8123"}
    merged = yaml.safe_load(_config(compose, "-f", str(ASTRO_BASE), "-f", str(OVERRIDE), env=env).stdout)["services"]
    assert [p.removesuffix("/tcp") for p in _published(merged["prediction-api"])] == ["127.0.0.1:8123:8000"]


def test_the_state_volume_has_one_owner_whichever_container_starts_first():
    """The API ran as root and created .state/feast before the scheduler (user astro) could."""
    api = _load(OVERRIDE)["services"]["prediction-api"]
    assert api["user"] == "50000:0" and "crossfit-state:/usr/local/airflow/.state" in api["volumes"]
    dockerfile = (ROOT / "services" / "Dockerfile.api").read_text()
    assert "chown -R 50000:0 /usr/local/airflow" in dockerfile and "USER 50000:0" in dockerfile


def test_lightgbm_finds_its_openmp_runtime_where_it_runs():
    """Four train_candidate tasks failed: libgomp.so.1 missing (and the API could not load the model)."""
    packages = (ROOT / "packages.txt").read_text().split()
    assert "libgomp1" in packages
    assert "libgomp1" in (ROOT / "services" / "Dockerfile.api").read_text()


def test_the_metadata_database_driver_is_explicit():
    """Astro's compose file gives Airflow postgresql://, which SQLAlchemy 2.1 opens with psycopg 3."""
    assert re.search(r"^psycopg\[binary\]==3\.", (ROOT / "requirements.txt").read_text(), re.M)
    assert re.search(r"^psycopg==3\.", (ROOT / "requirements.lock").read_text(), re.M)


# --- workers mode (services/docker-compose.workers.yaml): the live test is test_compose_workers.py ---
WORKERS_FILE = ROOT / "services" / "docker-compose.workers.yaml"
WORKERS_EXAMPLE = ROOT / "services" / "workers.env.example"
AIRFLOW_SERVICES = ("airflow-init", "scheduler", "dag-processor", "triggerer", "api-server", "worker-1", "worker-2")


def test_workers_mode_shares_no_volume_between_airflow_containers():
    from crossfit_mlops.dag_contract import TRAINING_QUEUE

    workers = _load(WORKERS_FILE)
    services = workers["services"]
    for name in AIRFLOW_SERVICES:
        assert "volumes" not in services[name], f"{name} mounts a volume: workers mode shares no disk"
        assert services[name]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    for name in ("worker-1", "worker-2"):
        command = services[name]["command"]
        assert TRAINING_QUEUE in command[command.index("--queues") + 1].split(",")
        assert services[name]["hostname"] == name
    env = services["worker-1"]["environment"]
    assert env["CROSSFIT_DATA_URL"].startswith("s3://") and env["CROSSFIT_LOCK_URI"].startswith("postgresql")
    assert env["CROSSFIT_FEAST_REGISTRY_URI"].startswith("postgresql") and env["CROSSFIT_FEAST_REDIS"]
    # the pipeline's own S3 identity, not MLflow's
    assert env["AWS_ACCESS_KEY_ID"].startswith("${PIPELINE_S3_ACCESS_KEY:?")
    # its own network, created and removed by compose (not compose mode's external ml-network)
    assert workers["networks"]["ml-network"]["external"] is False


def test_workers_mode_recovers_from_a_dead_worker_within_a_test_run():
    env = _load(WORKERS_FILE)["services"]["worker-1"]["environment"]
    assert env["AIRFLOW__CELERY__TASK_ACKS_LATE"] == "True" and env["AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER"] == "1"
    assert int(env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"]) < 300  # Airflow's default
    assert int(env["AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT"]) < 600


def test_workers_mode_generates_its_secrets_with_a_real_fernet_key(tmp_path):
    import stat

    from cryptography.fernet import Fernet

    env_file = tmp_path / "workers.env"
    env_file.write_text("MLFLOW_PORT=5123\n")  # a file that lacks variables gets them added
    done, calls = _compose_sh(tmp_path, env_file, args=("workers", "up"))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line and not line.startswith("#"))
    expected = {line.split("=", 1)[0] for path in (ENV_EXAMPLE, WORKERS_EXAMPLE) for line in path.read_text().splitlines()
                if "=" in line and not line.startswith("#")}  # fmt: skip
    assert set(values) == expected and values["MLFLOW_PORT"] == "5123"
    assert "change-me" not in values.values()
    Fernet(values["AIRFLOW_FERNET_KEY"].encode())  # raises on anything but a Fernet key
    assert not any(values[k] in done.stdout + done.stderr for k in ("AIRFLOW_ADMIN_PASSWORD", "PIPELINE_S3_SECRET_KEY"))
    assert "-f services/docker-compose.yaml -f services/docker-compose.workers.yaml" in calls and "up -d --build --wait" in calls
    assert not [line for line in calls.splitlines() if line.startswith("astro")], "workers mode needs no Astro CLI"
