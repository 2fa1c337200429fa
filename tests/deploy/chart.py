"""The official Airflow Helm chart's values schema, read at test time from where it is on the machine.

No package on PyPI or npm ships the chart or its schema, and the chart's files are not committed
here (they are Apache's, brought by a fetch of the source repository). Where they are read from,
in this order:

1. ``CROSSFIT_AIRFLOW_CHART_DIR``: an unpacked chart, e.g. from
   ``helm pull apache-airflow/airflow --version 1.21.0 --untar`` (Chart.yaml must say 1.21.0);
2. ``CROSSFIT_AIRFLOW_CHART_GIT_DIR``: a git directory of apache/airflow (or a fork with its
   history) that holds CHART_COMMIT;
3. every ``*/repo`` git directory under ``CROSSFIT_MIRROR_ROOT`` (default ``/work/.mirror``, where
   the development machines keep fetched repositories), holding CHART_COMMIT.

From git the files must match the recorded sha256 exactly. When none is found the tests that need
the schema skip, saying so.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

CHART_VERSION = "1.21.0"
# apache/airflow "Add RELEASE_NOTES.rst and Chart.yaml changes for 1.21.0 (#65569)", 2026-04-21
CHART_COMMIT = "b90710803a45d015a221b6045295d0dc9ddb964f"
SCHEMA_SHA256 = "ea9f12c04abc787f5e5d2882626371d7e64e516a90129d692f3efbc93bf373d4"
VALUES_SHA256 = "e203f9665e0b93d0e47efd5541f08485d05f09246e226ab1d7fa14768c7b811c"


@dataclass(frozen=True)
class Chart:
    schema: dict
    defaults: dict
    source: str


def _from_dir(folder: Path) -> Chart:
    meta = yaml.safe_load((folder / "Chart.yaml").read_text())
    if str(meta.get("version")) != CHART_VERSION:
        raise LookupError(f"{folder}/Chart.yaml is chart {meta.get('version')}, not {CHART_VERSION}")
    return Chart(
        schema=json.loads((folder / "values.schema.json").read_text()),
        defaults=yaml.safe_load((folder / "values.yaml").read_text()),
        source=f"{folder} (chart {CHART_VERSION})",
    )


def _show(git_dir: Path, path: str) -> bytes | None:
    done = subprocess.run(["git", "--git-dir", str(git_dir), "show", f"{CHART_COMMIT}:{path}"], capture_output=True)
    return done.stdout if done.returncode == 0 else None


def _from_git(git_dir: Path) -> Chart | None:
    schema, values = _show(git_dir, "chart/values.schema.json"), _show(git_dir, "chart/values.yaml")
    if schema is None or values is None:
        return None
    for name, data, digest in (("values.schema.json", schema, SCHEMA_SHA256), ("values.yaml", values, VALUES_SHA256)):
        if hashlib.sha256(data).hexdigest() != digest:
            raise LookupError(f"{git_dir}: chart/{name} at {CHART_COMMIT[:10]} does not have the recorded sha256")
    return Chart(json.loads(schema), yaml.safe_load(values), f"{git_dir} @ {CHART_COMMIT[:10]} (chart {CHART_VERSION})")


def find_chart() -> Chart | str:
    """The chart files, or a sentence saying what is missing."""
    if folder := os.environ.get("CROSSFIT_AIRFLOW_CHART_DIR"):
        return _from_dir(Path(folder))
    if git_dir := os.environ.get("CROSSFIT_AIRFLOW_CHART_GIT_DIR"):
        found = _from_git(Path(git_dir))
        return found or f"CROSSFIT_AIRFLOW_CHART_GIT_DIR={git_dir} does not hold commit {CHART_COMMIT}"
    mirror = Path(os.environ.get("CROSSFIT_MIRROR_ROOT", "/work/.mirror"))
    for git_dir in sorted(mirror.glob("*/repo")) if mirror.is_dir() else []:
        if found := _from_git(git_dir):
            return found
    return (
        f"the Airflow chart {CHART_VERSION} values schema is not on this machine: set CROSSFIT_AIRFLOW_CHART_DIR "
        f"to an unpacked chart (helm pull apache-airflow/airflow --version {CHART_VERSION} --untar) or "
        f"CROSSFIT_AIRFLOW_CHART_GIT_DIR to an apache/airflow git directory holding {CHART_COMMIT}"
    )


def helm_merge(defaults: dict, values: dict) -> dict:
    """User values over chart defaults as Helm coalesces them: maps merge, the rest replaces, null deletes."""
    merged = copy.deepcopy(defaults)
    for key, value in values.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def strict(schema: dict) -> dict:
    """The chart schema with unknown keys refused where it leaves objects open.

    The published schema accepts any key at the root, in ``workers.celery``, in
    ``workers.kubernetes`` and in each worker set, so a typo there would pass. Here the root and
    those two objects take only their declared properties, and a worker set takes only ``name``
    plus the keys of ``workers`` and ``workers.celery`` (what the chart lets a set override).
    """
    tight = copy.deepcopy(schema)
    tight["additionalProperties"] = False
    workers = tight["properties"]["workers"]["properties"]
    for part in ("celery", "kubernetes"):
        workers[part]["additionalProperties"] = False
    overridable = (set(workers) | set(workers["celery"]["properties"])) - {"celery", "kubernetes", "sets", "enableDefault"}
    workers["celery"]["properties"]["sets"]["items"] = {
        "type": "object",
        "required": ["name"],
        "propertyNames": {"enum": sorted(overridable | {"name"})},
        "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}},
    }
    return tight
