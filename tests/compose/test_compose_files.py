"""Compose mode, validated without a Docker engine.

Every compose file passes ``docker-compose config`` (Debian's Compose 1.29, which validates without
a daemon; ``.ci/run`` installs it), the Astro override is validated merged onto a stand-in of the
file Astro generates, and the names that must agree across files do: the network, the service names
and ports that URIs point at, the volumes, the variables of ``.env.example`` and
``airflow_settings.yaml``. Compose 1.29 does not catch an undefined network; these checks do.
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

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_DB_")}
    return subprocess.run([compose, *args, "config"], capture_output=True, text=True, cwd=ROOT, env={**base_env, **(env or {})})


def _load(path):
    return yaml.safe_load(path.read_text())


def test_ml_services_stack_is_valid_and_needs_its_secret(compose, tmp_path):
    ok = _config(compose, "-f", str(SERVICES), "--env-file", str(ENV_EXAMPLE))
    assert ok.returncode == 0, ok.stderr
    rendered = yaml.safe_load(ok.stdout)
    assert set(rendered["services"]) == {"mlflow-postgres", "mlflow-server", "feast-redis"}
    empty = tmp_path / "empty.env"
    empty.write_text("")
    missing = _config(compose, "-f", str(SERVICES), "--env-file", str(empty))
    assert missing.returncode != 0 and "MLFLOW_DB_PASSWORD" in missing.stderr


def test_astro_override_merges_onto_the_astro_services(compose):
    done = _config(compose, "-f", str(ASTRO_BASE), "-f", str(OVERRIDE))
    assert done.returncode == 0, done.stderr
    merged = yaml.safe_load(done.stdout)
    for name in ("scheduler", "dag-processor", "triggerer", "api-server"):
        assert set(merged["services"][name]["networks"]) == {"airflow", "ml-network"}, name
    assert merged["networks"]["ml-network"] == {"external": True, "name": "ml-network"}
    api = merged["services"]["prediction-api"]
    assert api["networks"] == {"ml-network": None} or set(api["networks"]) == {"ml-network"}


def test_names_agree_across_files():
    services, override = _load(SERVICES), _load(OVERRIDE)
    settings = _load(ROOT / "airflow_settings.yaml")["airflow"]
    variables = {v["variable_name"]: v["variable_value"] for v in settings["variables"]}

    # one network, created by the ML stack, joined by the Astro project
    assert services["networks"]["ml-network"]["name"] == "ml-network"
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
