"""What the Astro CLI and the Astro Runtime image require of a project, and where that was read.

Read in the Astro CLI's source, github:astronomer/astro-cli at ed93cc59e54def23d0c404c0a491583179177143
(the v1.45.0 release; the cited files are the same at tag v1.45.0, 1e725a3c), and in Astronomer's
images; see tests/deploy/README.md for the full list. The checks in test_astro_project.py mirror
these statically: no Docker engine or Astro CLI runs here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from docker.utils.build import exclude_paths
from packaging.requirements import InvalidRequirement, Requirement

# config/config.go IsProjectDir: a folder is an Astro project iff .astro/config.yaml exists.
PROJECT_MARKER = ".astro/config.yaml"
# cmd/airflow.go ensureProjectName (case-insensitive there); lowercase here because the name
# becomes the image name `<name>_<hash>/airflow` (airflow/container.go, airflow/airflow.go).
PROJECT_NAME = re.compile(r"^[a-z0-9]([a-z0-9_-]*[a-z0-9])$")

# pkg/airflowrt/scaffold.go Scaffold + airflow/airflow.go Init (IncludeTests, IncludeReadme and
# IncludeSettingsYaml are true): what `astro dev init` writes for an Airflow 3 runtime. The example
# DAG and its test are left out (this project has its own); .env is not committed (.env.example is).
SCAFFOLD_DIRS = ("dags", "plugins", "include", ".astro", "tests/dags")
SCAFFOLD_FILES = (
    ".gitignore", ".dockerignore", "packages.txt", "dags/.airflowignore",
    ".astro/dag_integrity_exceptions.txt", "Dockerfile", "requirements.txt", "README.md",
    "airflow_settings.yaml", ".astro/test_dag_integrity_default.py", PROJECT_MARKER,
)
# airflow/include/airflow3/composeyml.go.tmpl: the services of the compose file Astro generates.
ASTRO_SERVICES = frozenset({"postgres", "db-migration", "scheduler", "dag-processor", "api-server", "triggerer"})
# pkg/airflowrt/include/dockerignore: what the generated .dockerignore leaves out.
ASTRO_DOCKERIGNORE = ("astro", ".git", ".env", "airflow_settings.yaml", "logs/", ".venv", "airflow.db", "airflow.cfg")

# airflow/constants.go (the Airflow 3 registry and image name) and airflow_versions/runtime_versions.go
# (the tag format: "<Airflow major>.<minor>-<Astronomer patch>"), plus the Python flavors
# (`-python-3.12`) that Astronomer's docs and the CLI's tests use.
RUNTIME_IMAGE = re.compile(
    r"^astrocrpublic\.azurecr\.io/runtime:(?P<build>(?P<series>3\.\d+)-\d+)(?:-python-(?P<python>3\.\d+))?$"
)


@dataclass(frozen=True)
class RuntimeBuild:
    airflow: str
    pythons: tuple[str, ...]
    default_python: str


# Astronomer's runtime catalog (https://updates.astronomer.io/astronomer-runtime, runtimeVersionsV3
# .<build>.metadata), as the astro-cli repository mirrors it: "3.3-8" carries Airflow 3.3.2 and ships
# Python 3.12, 3.13 and 3.14 with 3.14 by default (pkg/imagebuild/runtimepython_test.go,
# pkg/runtimeversions tests; docs/manifest-reference.md at 27ccd320: "`3.3-8` carries 3.3.2").
# Not fetched live (no internet here): add a build here, from that catalog, when the Dockerfile moves.
RUNTIME_CATALOG = {
    "3.3-8": RuntimeBuild(airflow="3.3.2", pythons=("3.12", "3.13", "3.14"), default_python="3.14"),
}

# Astronomer's ONBUILD steps (ap-airflow common/Dockerfile.onbuild-bullseye at f18bbcf8; the same
# order on Runtime 3.3-2 per `docker image inspect` quoted by a public project): COPY packages.txt,
# apt-get install every word of it, COPY requirements.txt, pip install it (refusing an
# `apache-airflow` pin), then COPY the whole context. Both files must exist, even empty.
ONBUILD_FILES = ("packages.txt", "requirements.txt")
AIRFLOW_PIN_REFUSED = re.compile(r"apache-airflow\s*[=~>]{1,2}.*")  # used with grep -Eqx: whole line
DEBIAN_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=\S+)?$")


def dockerfile_base(dockerfile: Path) -> list[str]:
    """The images of every FROM line (a single-stage build has one)."""
    return re.findall(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)", dockerfile.read_text(), re.M | re.I)


def dockerignore_patterns(root: Path) -> list[str]:
    """The patterns of ``root/.dockerignore``, read the way the Docker SDK's build() reads them."""
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def build_context(root: Path) -> set[str]:
    """Every path (file or folder, relative) that ``docker build root`` sends, per .dockerignore.

    The matching is the Docker SDK's (docker.utils.build.exclude_paths, a port of moby's
    fileutils), with the Dockerfile always included as the engine does.
    """
    return set(exclude_paths(str(root), dockerignore_patterns(root), dockerfile="Dockerfile"))


def requirement_files(root: Path) -> list[Path]:
    return sorted(root.glob("requirements*.txt"))


def requirements(path: Path) -> list[Requirement]:
    """The requirement lines of one pip requirements file (comments and options skipped)."""
    found = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            found.append(Requirement(line))
        except InvalidRequirement as exc:
            raise AssertionError(f"{path.name}: {raw!r} is not a requirement: {exc}") from exc
    return found


def pinned_airflow(root: Path) -> dict[str, str]:
    """``{file: version}`` for every ``apache-airflow==X`` pin in the project's requirement files."""
    pins = {}
    for path in requirement_files(root):
        for req in requirements(path):
            if req.name.lower() == "apache-airflow":
                versions = [spec.version for spec in req.specifier if spec.operator == "=="]
                assert versions, f"{path.name}: apache-airflow is not pinned exactly ({req})"
                pins[path.name] = versions[0]
    return pins
