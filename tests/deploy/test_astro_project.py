"""The Astro project, checked the way `astro dev start` and the Runtime image's build would, offline.

What the CLI and the image require, and where it was read, is in tests/deploy/astro.py and
tests/deploy/README.md. No Docker engine runs here, so the image is never built: these checks
prove the project has what the CLI looks for and what the ONBUILD steps copy, that the build
context holds the project and none of the state, and that the Runtime carries the pinned Airflow.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from tests.deploy import astro
from tests.support.services import ROOT

CONTEXT_LIMIT_BYTES = 10 * 1024 * 1024  # justified in tests/deploy/README.md ("Build context")


def _runtime() -> tuple[dict, astro.RuntimeBuild]:
    bases = astro.dockerfile_base(ROOT / "Dockerfile")
    assert len(bases) == 1, f"Dockerfile: one FROM expected (the image Astro labels is the last stage), got {bases}"
    match = astro.RUNTIME_IMAGE.match(bases[0])
    assert match, f"Dockerfile FROM {bases[0]} is not an Astro Runtime 3 image (astrocrpublic.azurecr.io/runtime:X.Y-N)"
    build = astro.RUNTIME_CATALOG.get(match["build"])
    assert build, f"Runtime {match['build']} is not in tests/deploy/astro.py RUNTIME_CATALOG: add it from Astronomer's catalog"
    return match.groupdict(), build


def test_the_cli_recognises_an_astro_project():
    config = ROOT / astro.PROJECT_MARKER
    assert config.is_file(), "astro dev start refuses: 'this is not an Astro project directory'"
    name = (yaml.safe_load(config.read_text()) or {}).get("project", {}).get("name")
    assert name and astro.PROJECT_NAME.match(name), f"project.name {name!r} is not a valid (lowercase) Astro project name"


@pytest.mark.parametrize("path", astro.SCAFFOLD_DIRS + astro.SCAFFOLD_FILES)
def test_what_astro_dev_init_writes_is_there(path):
    assert (ROOT / path).exists(), f"{path} (written by `astro dev init`) is missing"


def test_the_runtime_tag_carries_the_airflow_that_requirements_pin():
    tag, build = _runtime()
    pins = astro.pinned_airflow(ROOT)
    assert pins, "no apache-airflow==X pin in requirements*.txt to compare the Runtime with"
    assert set(pins.values()) == {build.airflow}, f"Runtime {tag['build']} carries Airflow {build.airflow}; pinned: {pins}"
    # the local environment runs the same Airflow as the image
    assert importlib.metadata.version("apache-airflow") == build.airflow


def test_the_runtime_ships_the_python_it_is_asked_for():
    tag, build = _runtime()
    python = tag["python"] or build.default_python
    assert python in build.pythons, f"Runtime {tag['build']} ships Python {build.pythons}, not {python}"


def test_the_project_installs_on_the_image_python():
    tag, build = _runtime()
    python = tag["python"] or build.default_python
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(python + ".0"), f"requires-python {requires!r} refuses Python {python}"


def test_onbuild_inputs_exist_and_install_before_the_context_arrives():
    for name in astro.ONBUILD_FILES:
        assert (ROOT / name).is_file(), f"{name} must exist (even empty): the ONBUILD step COPYs it"
    for line in (ROOT / "packages.txt").read_text().splitlines():
        # every word goes to `apt-get install`: a comment would be a package name
        assert not line.strip() or astro.DEBIAN_PACKAGE.match(line.strip()), f"packages.txt: {line!r} is not a Debian package"
    for req in astro.requirements(ROOT / "requirements.txt"):
        # requirements are installed before the project is copied: no local paths
        assert not req.url, f"requirements.txt: {req} points at a path or URL the build does not have yet"
    raw = (ROOT / "requirements.txt").read_text().splitlines()
    assert not [line for line in raw if line.strip().startswith(("-e", "./", "../", "file:"))]


def test_the_image_installs_both_packages_and_what_its_build_imports_exists():
    """`pip install -e .` in the Dockerfile installs what pyproject finds: the ML package and the
    stack, whose preload the image's build writes into airflow_local_settings.py."""
    import importlib.util
    import re

    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {"crossfit_mlops*", "crossfit_stack*"} <= set(found), found
    imported = re.findall(r"from (crossfit_\w+(?:\.\w+)*) import", (ROOT / "Dockerfile").read_text())
    assert imported and all(importlib.util.find_spec(name) for name in imported), imported


def test_the_image_requirements_do_not_pin_airflow():
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert not [line for line in lines if astro.AIRFLOW_PIN_REFUSED.fullmatch(line)]


def test_pyproject_is_not_an_astro_v2_manifest():
    # Astro CLI v2 (pre-release) treats a pyproject.toml with [tool.astro] as its project manifest
    assert "astro" not in tomllib.loads((ROOT / "pyproject.toml").read_text()).get("tool", {})


def test_the_override_extends_astro_services_or_adds_its_own():
    override = yaml.safe_load((ROOT / "docker-compose.override.yml").read_text())
    for name, service in override["services"].items():
        assert name in astro.ASTRO_SERVICES or "image" in service or "build" in service, (
            f"{name} is neither a service of Astro's compose file nor one the override defines"
        )
    settings = yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())["airflow"]
    assert all(isinstance(settings[key], list) for key in ("connections", "pools", "variables"))


def _tracked() -> list[str]:
    done = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [path for path in done.stdout.split("\0") if path and (ROOT / path).is_file()]


def test_the_project_lands_in_the_image():
    context = astro.build_context(ROOT)
    needed = {"Dockerfile", "pyproject.toml", "README.md", astro.PROJECT_MARKER, *astro.ONBUILD_FILES,
              "include/feast/repo/feature_repo/feature_store.yaml", "include/feast/repo/feature_repo/feature_definitions.py",
              ".astro/test_dag_integrity_default.py", "plugins/README.md", ".state/.gitkeep"}
    # both packages: the image's scheduler preload is the stack's (Dockerfile)
    needed |= {p for p in _tracked() if p.startswith(("dags/", "include/crossfit_mlops/", "include/crossfit_stack/", "tests/"))}
    assert needed - context == set(), "left out of the build context"
    assert not {p for p in context if p.startswith(("docs/screenshots/", "benchmarks/results/"))}


# What a clone looks like after ./start-all.sh, a run, the tests and a notebook: everything that is
# generated, cached or secret, beside the committed files.
AFTER_A_RUN = (
    ".venv/bin/python", ".venv/lib/python3.11/site-packages/mlflow/__init__.py",
    ".state/data/raw/snapshot=2026-11-01/athletes.csv", ".state/mlflow/mlflow.db", ".state/mlflow/artifacts/1/x/model.pkl",
    ".state/airflow/airflow.db", ".state/airflow/logs/dag_id=x/run.log", ".state/feast/registry.db", ".state/run/mlflow.pid",
    ".git/HEAD", ".env", "services/.env", "athletes.csv", "emissions.csv", "include/crossfit_mlops/emissions_x.csv",
    "mlruns/0/meta.yaml", "logs/scheduler.log", "airflow.db", "airflow.cfg", "astro",
    "include/crossfit_mlops/__pycache__/settings.cpython-311.pyc", "tests/unit/__pycache__/x.pyc", "dags/__pycache__/x.pyc",
    "include/crossfit_mlops.egg-info/PKG-INFO", ".pytest_cache/v/cache/lastfailed", ".ruff_cache/0.14.6/x",
    "notebooks/.ipynb_checkpoints/exploration-checkpoint.ipynb", "docs/screenshots/new.png", "benchmarks/results/new.json",
)


def test_a_used_working_tree_sends_only_the_project(tmp_path):
    tracked = _tracked()
    for path in (*tracked, *AFTER_A_RUN):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).touch()
    shutil.copy(ROOT / ".dockerignore", tmp_path / ".dockerignore")
    context = astro.build_context(tmp_path)
    assert set(AFTER_A_RUN) & context == set(), "generated, cached or secret files reach the image"
    left_out = set(tracked) - context
    expected = {p for p in tracked if p.startswith(("docs/screenshots/", "benchmarks/results/"))} | {"airflow_settings.yaml"}
    assert left_out == expected, "committed files left out of the image beyond screenshots, results and the settings file"
    for pattern in astro.ASTRO_DOCKERIGNORE:
        assert pattern in astro.dockerignore_patterns(ROOT), f".dockerignore lost Astro's own {pattern!r}"


def test_the_real_build_context_is_small():
    context = astro.build_context(ROOT)
    files = [p for p in context if (ROOT / p).is_file() and not (ROOT / p).is_symlink()]
    size = sum((ROOT / p).stat().st_size for p in files)
    heavy = {p.split("/")[0] for p in context} & {".venv", ".git", "mlruns", ".pytest_cache", ".ruff_cache"}
    assert heavy == set(), f"build context holds {heavy}"
    assert {p for p in context if p.startswith(".state/")} <= {".state/.gitkeep"}
    assert size < CONTEXT_LIMIT_BYTES, f"build context is {size / 2**20:.1f} MiB in {len(files)} files"


def test_the_secrets_file_stays_out_of_git_and_the_image():
    for path in (".env", "services/.env"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, f"{path} is not git-ignored"
    assert subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=ROOT).returncode == 1
    mlflow_env = (Path(importlib.util.find_spec("mlflow").origin).parent / "environment_variables.py").read_text()
    package = "".join(p.read_text() for p in (ROOT / "include" / "crossfit_mlops").rglob("*.py"))
    for line in (ROOT / ".env.example").read_text().splitlines():
        key, sep, value = line.lstrip("# ").partition("=")
        if not sep or " " in key:
            continue
        assert value == "", f".env.example sets {key}: an example holds no value"
        assert f'"{key}"' in package or f'"{key}"' in mlflow_env, f".env.example names {key}, which nothing reads"


def _parse_test(project: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "CROSSFIT_STATE_DIR": str(tmp_path / "state"), "PYTHONDONTWRITEBYTECODE": "1"}
    test = project / ".astro" / "test_dag_integrity_default.py"
    return subprocess.run([sys.executable, "-m", "pytest", str(test), "-q", "-p", "no:cacheprovider"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_astro_dev_parse_passes_the_dags_and_catches_a_broken_one(tmp_path):
    # one run on a copy of the project's DAGs plus a broken file: only the broken file may fail
    project = tmp_path / "project"
    shutil.copytree(ROOT / ".astro", project / ".astro")
    shutil.copytree(ROOT / "dags", project / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    (project / "dags" / "broken_dag.py").write_text("from airflow.sdk import dag\nraise RuntimeError('broken on purpose')\n")
    done = _parse_test(project, tmp_path)
    assert done.returncode == 1, done.stdout[-3000:]
    failing = set(re.findall(r"(\S+/dags/\S+\.py): Traceback", done.stdout))
    assert failing == {str(project / "dags" / "broken_dag.py")}, done.stdout[-3000:]
    assert "broken on purpose" in done.stdout
