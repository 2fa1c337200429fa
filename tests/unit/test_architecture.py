"""The package's shape, checked from its source: floors, one MLflow floor, one publishing idiom,
one place that spells task ids, and functions short enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from crossfit_mlops.contract import (
    BatchTasks,
    ConnectionTasks,
    MonitoringTasks,
    TrainingTasks,
    task_ids,
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "include" / "crossfit_mlops"
MAX_FUNCTION_LINES = 60

# Bottom up. A module may import its own floor's modules (within its subpackage) and lower floors.
FLOORS: list[set[str]] = [
    {"settings", "contract", "storage", "metrics", "payloads"},
    {"tracking"},
    {"data"},
    {"features"},
    {"training", "registry", "serving", "monitoring"},  # siblings: none imports another
    {"ops"},
]


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _top(path: Path) -> str:
    """``crossfit_mlops/<top>/...`` or ``crossfit_mlops/<top>.py`` -> ``top``."""
    part = path.relative_to(PACKAGE).parts[0]
    return part.removesuffix(".py")


def _floor(top: str) -> int | None:
    return next((i for i, names in enumerate(FLOORS) if top in names), None)


def _imports(path: Path) -> list[str]:
    """Every ``crossfit_mlops.<top>`` a module imports (at any depth: lazy imports count too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "crossfit_mlops" and len(parts) > 1:
                found.append(parts[1])
    return found


def test_no_module_imports_upward_or_sideways():
    offences = []
    for path in _modules():
        top = _top(path)
        if top in {"__init__", "__main__"}:
            continue
        mine = _floor(top)
        assert mine is not None, f"{path} is on no floor: add it to FLOORS"
        for imported in set(_imports(path)):
            theirs = _floor(imported)
            if imported == top or theirs is None:
                continue
            if theirs > mine or (theirs == mine and mine == 4):
                offences.append(f"{path.relative_to(ROOT)} imports crossfit_mlops.{imported}")
    assert not offences, offences


def test_serving_registry_and_monitoring_stand_on_the_tracking_floor_not_on_training():
    for sub in ("serving", "registry", "monitoring"):
        for path in (PACKAGE / sub).rglob("*.py"):
            assert "training" not in _imports(path), path


URI_VARIABLES = {"MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"}


def _is_environ(node: ast.AST) -> bool:
    """``os.environ``."""
    return isinstance(node, ast.Attribute) and node.attr == "environ" and isinstance(node.value, ast.Name) and node.value.id == "os"


def _sets_process_uri(node: ast.AST) -> bool:
    """Does ``node`` set MLflow's process-wide URI: ``mlflow.set_tracking_uri/set_registry_uri``, or
    ``os.environ[...] = ``, ``os.environ.update({...})`` / ``setdefault`` of an ``MLFLOW_*_URI``?"""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr in {"set_tracking_uri", "set_registry_uri"}:
            return True
        if _is_environ(node.func.value) and node.func.attr in {"update", "setdefault", "__setitem__"}:
            keys = [a.value for a in node.args if isinstance(a, ast.Constant)]
            keys += [k.value for a in node.args if isinstance(a, ast.Dict) for k in a.keys if isinstance(k, ast.Constant)]
            keys += [k.arg for k in node.keywords]
            return bool(URI_VARIABLES & set(keys))
    if isinstance(node, ast.Assign):
        return any(
            isinstance(t, ast.Subscript) and _is_environ(t.value) and isinstance(t.slice, ast.Constant)
            and t.slice.value in URI_VARIABLES
            for t in node.targets
        )  # fmt: skip
    return False


def test_the_process_wide_tracking_uri_is_set_in_one_helper_only():
    """Everything else passes the URI explicitly (``tracking.client(uri)``, ``fluent(uri)`` for a
    block, a child process's own environment): the package, the DAGs and the benchmarks."""
    files = [*_modules(), *(ROOT / "dags").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    users = sorted({p for p in files if any(_sets_process_uri(n) for n in ast.walk(ast.parse(p.read_text())))})
    assert users == [PACKAGE / "tracking" / "__init__.py"], users


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            yield owner, node.func.attr, node.lineno


def test_write_then_rename_exists_once():
    """Only storage.publishing renames a written result into place; every writer uses it."""
    offences = []
    for path in _modules():
        if path == PACKAGE / "storage.py":
            continue
        for owner, attr, line in _calls(path):
            if (owner == "os" and attr in {"replace", "rename"}) or attr == "rename" or (owner == "shutil" and attr == "move"):
                offences.append(f"{path.relative_to(ROOT)}:{line} {owner}.{attr}")
    assert not offences, offences


def test_no_function_in_the_package_is_longer_than_60_lines():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


TASK_IDS = {tid for tasks in (TrainingTasks, MonitoringTasks, BatchTasks, ConnectionTasks) for tid in task_ids(tasks).values()}
# The only string equal to a task id outside the DAG files and the contract: the registry's name
# for the namespace of the gate's version tags (gate.decision, gate.reason ...), which the API's
# /model and `registry show` print under that key. It is not a reference to the task.
ALLOWED = {(PACKAGE / "tracking" / "registry.py", TrainingTasks.GATE)}


@pytest.mark.parametrize("folder", ["include", "tests", "benchmarks", "scripts", "notebooks"])
def test_no_task_id_is_spelled_outside_the_dags_and_the_contract(folder):
    offences = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        if path == PACKAGE / "contract.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in TASK_IDS and (path, node.value) not in ALLOWED:
                offences.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not offences, offences


DOC_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_docs_name_only_files_that_exist(page):
    """Every repository path the README or a page of docs/ names (in backticks or as a link) is in
    the repository. A link is read from the page's own folder, as the site and GitHub read it."""
    import re

    text = page.read_text()
    named = set(re.findall(r"`([A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+\.[a-z]{2,5})`", text))
    linked = set(re.findall(r"\]\(((?!https?:|#)[^)#\s]+)\)", text))
    bases = [ROOT, ROOT / "include", PACKAGE]
    generated = (".state/", "plots/", "emissions/", "data/", "monitoring/")  # written by a run, not committed
    missing = sorted(n for n in named if not n.startswith(generated) and not any((b / n).exists() for b in bases))
    missing += sorted(n for n in linked if not (page.parent / n).exists())
    assert not missing, missing
