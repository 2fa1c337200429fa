"""The packages' shape, checked from their source: floors (in ``crossfit_mlops`` and in
``crossfit_stack``), the ML package never importing the stack nor managing a process, no import
cycle in the stack, one MLflow floor, one publishing idiom, one place that spells task ids, and
functions short enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from crossfit_mlops.dag_contract import (
    BatchTasks,
    ConnectionTasks,
    MonitoringTasks,
    TrainingTasks,
    task_ids,
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "include" / "crossfit_mlops"
STACK = ROOT / "include" / "crossfit_stack"
MAX_FUNCTION_LINES = 60

# Bottom up. A module may import its own floor's modules (within its subpackage) and lower floors.
FLOORS: list[set[str]] = [
    {"settings", "dag_contract", "storage", "metrics", "payloads", "prediction_log", "alerts"},
    {"tracking"},
    {"data"},
    {"features"},
    {"training", "registry", "serving", "monitoring"},  # siblings: none imports another
    {"ops"},
]
SIBLINGS = 4  # the floor whose modules import none of each other

# The stack, bottom up (it may import any of crossfit_mlops; crossfit_mlops never imports it).
STACK_FLOORS: list[set[str]] = [
    {"config", "hostnames", "launch", "log_server", "feast_ui", "preload", "airflow_rest"},
    {"supervisor", "follow"},
    {"programs"},
    {"provision"},
    {"control"},
    {"commands"},
]


def _modules(package: Path = PACKAGE) -> list[Path]:
    return sorted(p for p in package.rglob("*.py"))


def _top(path: Path, package: Path = PACKAGE) -> str:
    """``<package>/<top>/...`` or ``<package>/<top>.py`` -> ``top``."""
    part = path.relative_to(package).parts[0]
    return part.removesuffix(".py")


def _floor(top: str, floors: list[set[str]] = FLOORS) -> int | None:
    return next((i for i, names in enumerate(floors) if top in names), None)


def _imported_names(path: Path) -> list[str]:
    """Every dotted name a module imports, at any depth (lazy and TYPE_CHECKING imports count
    too): ``from a.b import c`` gives ``a.b`` and ``a.b.c``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return found


def _imports(path: Path, package: str = "crossfit_mlops") -> list[str]:
    """Every ``<package>.<top>`` a module imports (at any depth: lazy imports count too)."""
    found = []
    for name in _imported_names(path):
        parts = name.split(".")
        if parts[0] == package and len(parts) > 1:
            found.append(parts[1])
    return found


@pytest.mark.parametrize(("package", "floors"), [(PACKAGE, FLOORS), (STACK, STACK_FLOORS)], ids=["crossfit_mlops", "crossfit_stack"])
def test_no_module_imports_upward_or_sideways(package, floors):
    offences = []
    for path in _modules(package):
        top = _top(path, package)
        if top in {"__init__", "__main__"}:
            continue
        mine = _floor(top, floors)
        assert mine is not None, f"{path} is on no floor: add it to the floors of {package.name}"
        for imported in set(_imports(path, package.name)):
            theirs = _floor(imported, floors)
            if imported == top or theirs is None:
                continue
            if theirs > mine or (theirs == mine and mine == SIBLINGS and floors is FLOORS):
                offences.append(f"{path.relative_to(ROOT)} imports {package.name}.{imported}")
    assert not offences, offences


# --- the ML package and the stack ----------------------------------------------------------------
def test_the_ml_package_never_imports_the_stack():
    """At any depth (a lazy import inside a function counts), nor by a dotted name in a string
    (``importlib.import_module("crossfit_stack...")``, an Airflow callable's path)."""
    import re

    dotted = re.compile(r"^crossfit_stack(\.\w+)*$")
    offences = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        offences += [f"{path.relative_to(ROOT)} imports {n}" for n in _imported_names(path) if n.split(".")[0] == "crossfit_stack"]
        offences += [
            f"{path.relative_to(ROOT)}:{node.lineno} names {node.value!r}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and dotted.match(node.value)
        ]
    assert not offences, offences


# Process management is the stack's: starting a process that outlives the call, signalling or
# waiting for other processes, or driving a supervisor. The ML package may run a bounded one-shot
# command and read its output (``subprocess.run(..., timeout=...)``: ``git rev-parse``), no more.
PROCESS_MODULES = {"signal", "psutil", "supervisor", "multiprocessing", "crossfit_stack"}
PROCESS_CALLS = {
    "kill", "killpg", "fork", "forkpty", "setsid", "setpgid", "setpgrp", "wait", "waitpid", "wait3", "wait4",
    "waitid", "pidfd_open", "posix_spawn", "posix_spawnp", "system", "popen",
    "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
    "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe",
}  # fmt: skip
ONE_SHOT = {"run", "check_output"}


def _process_management(path: Path) -> list[str]:
    found = [f"imports {n}" for n in _imported_names(path) if n.split(".")[0] in PROCESS_MODULES]
    found += [f"imports {n}" for n in _imported_names(path) if n.startswith("subprocess.") and n.split(".")[1] in {"Popen", "call"}]
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)):
            continue
        owner, attr = node.func.value.id, node.func.attr
        if owner == "os" and attr in PROCESS_CALLS:
            found.append(f"{node.lineno}: os.{attr}")
        bounded = attr in ONE_SHOT and any(k.arg == "timeout" for k in node.keywords)
        if owner == "subprocess" and not bounded:
            found.append(f"{node.lineno}: subprocess.{attr} (only run/check_output with a timeout)")
    return found


def test_the_ml_package_manages_no_process():
    offences = {str(p.relative_to(ROOT)): found for p in _modules() if (found := _process_management(p))}
    assert not offences, offences


def test_the_process_management_check_catches_what_it_names(tmp_path):
    """The check above is not empty: it flags each kind of process control it names."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os, signal, subprocess\nfrom crossfit_stack import control\n"
        "def f(pid):\n    import psutil\n    os.kill(pid, 9)\n    subprocess.Popen(['x'])\n"
        "    subprocess.run(['git'])\n    subprocess.run(['git'], timeout=5)\n"
    )
    found = _process_management(sample)
    assert {"imports signal", "imports psutil", "imports crossfit_stack"} <= set(found), found
    assert [f for f in found if "os.kill" in f] and [f for f in found if "subprocess.Popen" in f], found
    assert len([f for f in found if "subprocess.run" in f]) == 1, found  # the one without a timeout


def _stack_graph() -> dict[str, set[str]]:
    """Module -> the stack modules it imports, at any depth (TYPE_CHECKING and lazy imports count)."""
    modules = {p.stem for p in _modules(STACK)}
    graph = {}
    for path in _modules(STACK):
        names = {n.split(".")[1] for n in _imported_names(path) if n.startswith("crossfit_stack.")}
        graph[path.stem] = {n for n in names if n in modules and n != path.stem}
    return graph


def test_the_stack_has_no_import_cycle_not_even_at_type_level():
    graph, done, path = _stack_graph(), set(), []

    def visit(module: str) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(module):], module]))
        if module in done:
            return
        path.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert graph["control"] and "config" in graph["programs"], graph  # the walk saw the real imports


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
    ``os.environ[...] = ``, ``os.environ.update({...})`` / ``setdefault``, ``monkeypatch.setenv`` of
    an ``MLFLOW_*_URI``?"""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr in {"set_tracking_uri", "set_registry_uri"}:
            return True
        if node.func.attr == "setenv" and node.args and isinstance(node.args[0], ast.Constant):  # pytest's monkeypatch
            return node.args[0].value in URI_VARIABLES
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
    block, a child process's own environment): the package, the DAGs, the benchmarks, the scripts
    and the tests (a test's ``monkeypatch.setenv`` is process-wide for every client it makes)."""
    folders = ("dags", "benchmarks", "scripts", "tests")
    files = [*_modules(), *_modules(STACK), *(p for folder in folders for p in (ROOT / folder).rglob("*.py"))]
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


def test_no_function_in_the_packages_is_longer_than_60_lines():
    long = []
    for path in [*_modules(), *_modules(STACK)]:
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
ALLOWED = {(PACKAGE / "tracking" / "aliases.py", TrainingTasks.GATE)}


@pytest.mark.parametrize("folder", ["include", "tests", "benchmarks", "scripts", "notebooks"])
def test_no_task_id_is_spelled_outside_the_dags_and_the_contract(folder):
    offences = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        if path == PACKAGE / "dag_contract.py":
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


def test_no_module_name_collides_with_another():
    """A module's name says what it holds and is its own: no two modules of the two packages share
    a name, and none is named like a subpackage (``serving/features.py`` beside ``features/``)."""
    from collections import Counter

    modules = [p for p in (*PACKAGE.rglob("*.py"), *(ROOT / "include" / "crossfit_stack").rglob("*.py"))
               if p.stem not in {"__init__", "__main__"}]  # fmt: skip
    counts = Counter(p.stem for p in modules)
    subpackages = {p.parent.name for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE}
    assert not [name for name, n in counts.items() if n > 1], sorted(p.relative_to(ROOT).as_posix() for p in modules if counts[p.stem] > 1)
    assert not [p for p in modules if p.stem in subpackages], [p.relative_to(ROOT).as_posix() for p in modules if p.stem in subpackages]


SETTINGS_MODULES = {PACKAGE / "settings.py", ROOT / "include" / "crossfit_stack" / "config.py"}


def _crossfit_variable_reads(path: Path, root: Path = ROOT) -> list[str]:
    """``CROSSFIT_*`` variables read in ``path``: ``x.get("CROSSFIT_...")``, ``getenv(...)``,
    ``environ["CROSSFIT_..."]``, or a helper called with an environment and the name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        key = None
        if isinstance(node, ast.Call) and node.args:
            func, args = node.func, node.args
            if (isinstance(func, ast.Attribute) and func.attr in {"get", "getenv", "pop", "setdefault"}) or (
                isinstance(func, ast.Name) and func.id == "getenv"
            ):
                key = args[0]
            elif len(args) >= 2 and (
                (isinstance(args[0], ast.Name) and args[0].id in {"env", "environ"})
                or (isinstance(args[0], ast.Attribute) and args[0].attr == "environ")
            ):
                key = args[1]
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str) and key.value.startswith("CROSSFIT_"):
            found.append(f"{path.relative_to(root)}:{node.lineno} {key.value}")
    return found


def test_crossfit_variables_are_read_only_by_the_settings_modules():
    """Every ``CROSSFIT_*`` variable is read, typed and validated in one place per package
    (``crossfit_mlops/settings.py``, ``crossfit_stack/config.py``), never by hand elsewhere."""
    sources = [*PACKAGE.rglob("*.py"), *(ROOT / "include" / "crossfit_stack").rglob("*.py")]
    reads = [r for p in sorted(sources) if p not in SETTINGS_MODULES for r in _crossfit_variable_reads(p)]
    assert not reads, reads


def test_the_variable_check_finds_each_way_of_reading(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        'import os\nos.environ.get("CROSSFIT_A")\nos.getenv("CROSSFIT_B")\nos.environ["CROSSFIT_C"]\n'
        '_number(env, "CROSSFIT_D", 1)\nos.environ["CROSSFIT_E"] = "1"\n'
    )
    assert [r.split(" ")[1] for r in _crossfit_variable_reads(probe, tmp_path)] == ["CROSSFIT_A", "CROSSFIT_B", "CROSSFIT_C", "CROSSFIT_D"]
