"""A stand-in for the Astro CLI's ``astro dev`` commands, for machines where the CLI cannot be installed.

The Astro CLI is a Go binary that is not on any package registry these machines reach. This file
does what ``astro dev start|stop|kill|run|ps`` do for an Airflow 3 project, step by step as read in
the CLI's source (github:astronomer/astro-cli at ed93cc59, the v1.45.0 release), with Docker
Compose v2.40.3, the version that release embeds (its go.mod):

- ``dev start`` (airflow/docker.go ``Start``): check the project marker ``.astro/config.yaml``; name
  the project ``<project.name>_<md5(project path)[:6]>`` (container.go ``ProjectNameUnique``) and its
  image ``<that>/airflow:latest``; ``docker build -t IMAGE -f Dockerfile .`` in the project root
  (docker_image.go ``Build``); read the image's labels and refuse one without
  ``io.astronomer.docker.runtime.version``; generate the compose file of an Airflow 3 Runtime
  (airflow/include/airflow3/composeyml.go.tmpl: postgres, db-migration, scheduler, dag-processor,
  api-server, triggerer; see :func:`astro_compose`) and merge ``docker-compose.override.yml`` onto
  it; ``Up`` without building (a service with a ``build:`` section and no image fails, as with the
  CLI); wait for ``/api/v2/monitor/health``; load the Variables of ``airflow_settings.yaml``.
- ``dev stop`` stops the containers (volumes kept); ``dev kill`` is ``down`` with the volumes;
  ``dev run ARGS`` runs ``airflow ARGS`` in the api-server container; ``dev ps`` lists them.

Where it differs from the CLI (the docs say the same): the build has no ``--pull`` (the CLI adds it
for Runtime base images; no registry answers here); ``astro-run-dag`` is never added to
requirements.txt (the project sets ``disable_astro_run``, which the CLI honours too); interpolation
reads the process environment only, as the CLI's loader does (``--env-file /dev/null`` keeps the
Compose CLI from reading a ``.env``); no proxy daemon, but the same port rule (8080 and 5432 when
free, else a free port); Variables are set with the REST API the CLI also uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

RUNTIME_LABEL = "io.astronomer.docker.runtime.version"
OVERRIDE = "docker-compose.override.yml"
SETTINGS_FILE = "airflow_settings.yaml"
# config/config.go defaults
POSTGRES = {"user": "postgres", "password": "postgres", "host": "postgres", "image": "docker.io/postgres:12.6"}
DEFAULT_API_PORT, DEFAULT_PG_PORT = 8080, 5432


def fail(message: str, code: int = 1) -> None:
    print(f"Error: {message}", file=sys.stderr)
    raise SystemExit(code)


def project_name(root: Path) -> str:
    marker = root / ".astro" / "config.yaml"
    if not marker.is_file():
        fail("this is not an Astro project directory (no .astro/config.yaml)")
    name = (yaml.safe_load(marker.read_text()) or {}).get("project", {}).get("name") or root.name
    return f"{name}_{hashlib.md5(str(root).encode()).hexdigest()[:6]}"  # noqa: S324 - the CLI's naming


def normalize(name: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "", name.lower()).lstrip("_-")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(default: int) -> int:
    if port_free(default):
        return default
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _common_env(project: str) -> dict[str, str]:
    conn = f"postgresql://{POSTGRES['user']}:{POSTGRES['password']}@{POSTGRES['host']}:5432"
    return {
        "AIRFLOW__API__BASE_URL": "http://localhost:8080",
        "AIRFLOW__API__PORT": "8080",
        "AIRFLOW__API_AUTH__JWT_SECRET": project,
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://api-server:8080/execution/",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__FERNET_KEY": "d6Vefz3G9U_ynXB3cr7y_Ak35tAHkEGAVxuz_B-jzWw=",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SQL_ALCHEMY_CONN": conn,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": conn,
        "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "True",
        "AIRFLOW__API__SECRET_KEY": project,
        "ASTRONOMER_ENVIRONMENT": "local",
    }


def astro_compose(root: Path, project: str, image: str, api_port: int, pg_port: int) -> dict:
    """The compose file the CLI generates for an Airflow 3 Runtime (defaults: duplicate_volumes on,
    airflow.expose_port off, so ports bind 127.0.0.1; .env passed as env_file when it exists)."""
    labels = {"io.astronomer.docker": "true", "io.astronomer.docker.cli": "true"}
    mounts = [f"{root}/{d}:/usr/local/airflow/{d}:z" for d in ("dags", "plugins", "include", "tests")]
    env = _common_env(project)

    def airflow(component: str, command: list[str], extra_mounts: list[str], **more) -> dict:
        service = {
            "depends_on": ["db-migration"], "image": image, "command": command,
            "restart": "unless-stopped", "networks": ["airflow"], "user": "astro",
            "labels": {**labels, "io.astronomer.docker.component": f"airflow-{component}"},
            "environment": env, "volumes": extra_mounts + ["airflow_logs:/usr/local/airflow/logs"], **more,
        }
        if (root / ".env").is_file():
            service["env_file"] = ".env"
        return service

    settings = [f"{root}/{SETTINGS_FILE}:/usr/local/airflow/{SETTINGS_FILE}:z"] if (root / SETTINGS_FILE).is_file() else []
    return {
        "networks": {"airflow": {"driver": "bridge"}},
        "volumes": {"postgres_data": {"driver": "local"}, "airflow_logs": {"driver": "local"}},
        "services": {
            "postgres": {
                "image": POSTGRES["image"], "restart": "unless-stopped", "networks": ["airflow"], "labels": labels,
                "ports": [f"127.0.0.1:{pg_port}:5432"], "volumes": ["postgres_data:/var/lib/postgresql/data"],
                "environment": {"POSTGRES_USER": POSTGRES["user"], "POSTGRES_PASSWORD": POSTGRES["password"]},
            },
            "db-migration": {
                "depends_on": ["postgres"], "image": image, "command": ["airflow", "db", "migrate"],
                "networks": ["airflow"], "environment": env,
                "labels": {**labels, "io.astronomer.docker.component": "airflow-db-migration"},
            },
            "scheduler": airflow("scheduler", ["airflow", "scheduler"], mounts + settings),
            "dag-processor": airflow("dag-processor", ["airflow", "dag-processor"], mounts),
            "api-server": airflow("api-server", ["airflow", "api-server"], mounts, ports=[f"127.0.0.1:{api_port}:8080"]),
            "triggerer": airflow("triggerer", ["airflow", "triggerer"], mounts[:3]),
        },
    }


class Project:
    def __init__(self, root: Path):
        self.root = root
        self.name = project_name(root)
        self.compose_name = normalize(self.name)
        self.image = f"{self.name}/airflow:latest"
        self.state = Path(os.environ.get("CROSSFIT_STATE_DIR") or root / ".state") / "astro-cli"
        self.rendered = self.state / f"{self.compose_name}.compose.yaml"

    def compose(self, *args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
        files = ["-f", str(self.rendered)]
        if (self.root / OVERRIDE).is_file():
            files += ["-f", str(self.root / OVERRIDE)]
        cmd = ["docker", "compose", "-p", self.compose_name, "--project-directory", str(self.root),
               "--env-file", os.devnull, *files, *args]
        return subprocess.run(cmd, check=check, text=True, capture_output=capture)

    def container(self, service: str) -> str:
        out = self.compose("ps", "-q", service, capture=True).stdout.split()
        if not out:
            fail(f"no running {service} container: start the project with `astro dev start`")
        return out[0]


def build(project: Project) -> dict[str, str]:
    subprocess.run(["docker", "build", "-t", project.image, "-f", "Dockerfile", "."], cwd=project.root, check=True)
    out = subprocess.run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", project.image],
                         check=True, text=True, capture_output=True).stdout
    labels = json.loads(out) or {}
    if RUNTIME_LABEL not in labels:
        fail("runtime version label not found")
    if not labels[RUNTIME_LABEL].startswith("3."):
        fail(f"this stand-in renders the Airflow 3 compose file only (runtime {labels[RUNTIME_LABEL]})")
    return labels


def wait_healthy(api_port: int, timeout: float) -> None:
    url = f"http://localhost:{api_port}/api/v2/monitor/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(2)
    fail(f"The api-server did not become healthy within {timeout:.0f} s ({url}): see `astro dev logs`")


def api_token(base: str) -> str:
    # SIMPLE_AUTH_MANAGER_ALL_ADMINS: the token endpoint issues an admin token without a login
    with urllib.request.urlopen(f"{base}/auth/token", timeout=10) as response:
        return json.loads(response.read())["access_token"]


def load_settings(project: Project, api_port: int) -> None:
    path = project.root / SETTINGS_FILE
    if not path.is_file():
        return
    variables = ((yaml.safe_load(path.read_text()) or {}).get("airflow") or {}).get("variables") or []
    base = f"http://localhost:{api_port}"
    headers = {"Authorization": f"Bearer {api_token(base)}", "Content-Type": "application/json"}
    for var in variables:
        key, value = var["variable_name"], str(var["variable_value"])
        body = json.dumps({"key": key, "value": value}).encode()
        request = urllib.request.Request(f"{base}/api/v2/variables/{key}", data=body, headers=headers, method="PATCH")
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
            request = urllib.request.Request(f"{base}/api/v2/variables", data=body, headers=headers, method="POST")
            urllib.request.urlopen(request, timeout=10).close()
    print(f"Added {len(variables)} variables from {SETTINGS_FILE}")


def start(project: Project, wait: float) -> None:
    build(project)
    api_port, pg_port = free_port(DEFAULT_API_PORT), free_port(DEFAULT_PG_PORT)
    project.state.mkdir(parents=True, exist_ok=True)
    spec = astro_compose(project.root, project.name, project.image, api_port, pg_port)
    project.rendered.write_text(json.dumps(spec, indent=1))
    (project.state / f"{project.compose_name}.ports.json").write_text(json.dumps({"api": api_port, "postgres": pg_port}))
    project.compose("up", "-d", "--no-build", "--pull", "never")
    wait_healthy(api_port, wait)
    load_settings(project, api_port)
    print(f"Airflow UI: http://localhost:{api_port}\nPostgres: localhost:{pg_port}/postgres")


def ports(project: Project) -> dict[str, int]:
    path = project.state / f"{project.compose_name}.ports.json"
    if not path.is_file():
        fail("the project was never started here")
    return json.loads(path.read_text())


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "dev":
        fail("usage: astro_cli.py dev start|stop|kill|run|ps|ports", 2)
    project = Project(Path.cwd().resolve())
    command, rest = argv[1], argv[2:]
    if command == "start":
        start(project, float(os.environ.get("ASTRO_STANDIN_WAIT_S", "300")))
    elif command in ("stop", "kill", "ps") and not project.rendered.is_file():
        print("the project was never started here")
    elif command == "stop":
        project.compose("stop")
    elif command == "kill":
        project.compose("down", "--volumes", "--remove-orphans")
    elif command == "ps":
        project.compose("ps")
    elif command == "ports":
        print(json.dumps(ports(project)))
    elif command == "run":
        return subprocess.run(["docker", "exec", project.container("api-server"), "airflow", *rest]).returncode
    else:
        fail(f"unknown command dev {command}", 2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
