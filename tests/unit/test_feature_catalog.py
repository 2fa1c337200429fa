"""The feature catalog (``docs/feature-catalog.md``): generated from the specs, so it cannot drift.

The committed page must equal what ``python -m crossfit_mlops catalog`` writes now; a feature added,
renamed, re-typed or given other bounds without regenerating the page fails here. The registry
column (which model versions use a feature) is checked against a real MLflow server in
``tests/integration/test_feature_catalog_registry.py``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from crossfit_mlops.features.catalog import (
    COMMAND,
    catalog_entries,
    model_versions_by_feature,
    render_catalog,
)
from crossfit_mlops.features.specs import FEATURE_SETS, feature_bounds

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "feature-catalog.md"


def test_the_committed_page_is_the_generated_one():
    assert PAGE.read_text() == render_catalog(), f"docs/feature-catalog.md is stale: run `{COMMAND}`"


def test_every_feature_is_listed_once_with_its_views_services_and_bounds():
    entries = {e.name: e for e in catalog_entries()}
    every = {spec.name for fs in FEATURE_SETS.values() for spec in fs.features}
    assert set(entries) == every and len(entries) == len(every)
    for version, fs in FEATURE_SETS.items():
        for spec in fs.features:
            entry = entries[spec.name]
            assert fs.view_name in entry.views and fs.service_name in entry.services
            assert entry.bounds == feature_bounds(version)[spec.name].describe() and entry.dtype == spec.dtype
    # a V1 feature is in both views; BMI only in V2's
    assert entries["age"].views == ("athlete_features_v1", "athlete_features_v2")
    assert entries["bmi"].views == ("athlete_features_v2",) and entries["age"].bounds == "between 18 and 90"
    page = render_catalog()
    assert all(f"| `{name}` |" in page for name in every)
    assert "model versions |" not in page and "--tracking-uri" in page  # says how to get them


def test_the_registry_column_lists_the_versions_trained_on_each_feature():
    usage = {
        "athlete_features_v1": [{"version": "1", "aliases": []}, {"version": "3", "aliases": ["champion"]}],
        "athlete_features_v2": [{"version": "2", "aliases": ["challenger"]}],
    }
    by_feature = model_versions_by_feature(usage)
    assert sorted(v["version"] for v in by_feature["age"]) == ["1", "2", "3"]  # in both views
    assert [v["version"] for v in by_feature["bmi"]] == ["2"]
    page = render_catalog(usage, registry="http://mlflow.example:5000")
    assert "| model versions |" in page and "http://mlflow.example:5000" in page
    age = next(line for line in page.splitlines() if line.startswith("| `age` |"))
    assert age.endswith("| v3 (@champion), v2 (@challenger), v1 |")
    bmi = next(line for line in page.splitlines() if line.startswith("| `bmi` |"))
    assert bmi.endswith("| v2 (@challenger) |")
    empty = render_catalog({}, registry="http://mlflow.example:5000")
    assert next(line for line in empty.splitlines() if line.startswith("| `age` |")).endswith("| none |")


def test_a_feature_defined_twice_differently_is_refused(monkeypatch):
    from dataclasses import replace

    v2 = FEATURE_SETS["v2"]
    changed = tuple(replace(f, description="something else") if f.name == "age" else f for f in v2.features)
    monkeypatch.setitem(FEATURE_SETS, "v2", replace(v2, features=changed))
    with pytest.raises(ValueError, match="'age' is defined twice"):
        catalog_entries()


def test_the_command_writes_the_page(tmp_path):
    out = tmp_path / "catalog.md"
    done = subprocess.run(
        [sys.executable, "-m", "crossfit_mlops", "catalog", "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.read_text() == PAGE.read_text()
