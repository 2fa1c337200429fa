"""A failed validation leaves nothing downstream that a later step could mistake for good, raw
inputs are immutable (their digest is re-checked), and a state folder can move.

Real parts: a generated snapshot, the real validation, feature tables, a Feast repo in the test's
state directory and a point-in-time training set through it; the faults are injected for real
(bytes truncated or replaced on disk, the state folder moved).
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import pandas as pd
import pytest

from crossfit_mlops.data.ingest import ingest_snapshot
from crossfit_mlops.data.schema import RawFileError
from crossfit_mlops.data.validate import ValidationFloorError, validate_and_clean
from crossfit_mlops.features.build import build_feature_table
from crossfit_mlops.features.specs import FEATURE_SETS, feature_set
from crossfit_mlops.features.training_sets import build_training_set
from crossfit_mlops.settings import get_settings
from crossfit_mlops.storage import Catalog, SnapshotNotValidated, current, has_files
from tests.reliability.test_data_bad_inputs import cli

SNAPSHOT = "2026-05-01"
ROWS = 5_000  # about 340 clean athletes: above the default minimum of 200


@pytest.fixture
def built(profile_settings):
    """A snapshot validated "ok", with both feature tables and a V1 training set built on it."""
    from crossfit_mlops.features.feast_repo import apply_definitions

    settings = profile_settings
    ingest_snapshot(SNAPSHOT, rows=ROWS, seed=3, settings=settings)
    validate_and_clean(SNAPSHOT, settings=settings)
    for version in FEATURE_SETS:
        build_feature_table(SNAPSHOT, version, settings)
    apply_definitions(settings)
    training = build_training_set(SNAPSHOT, "v1", settings=settings)
    catalog = Catalog(settings)
    assert all(catalog.feature_table_file(feature_set(v).view_name, SNAPSHOT).is_file() for v in FEATURE_SETS)
    assert training.path("train").is_file()
    return settings, catalog


def assert_nothing_downstream(catalog: Catalog, status: str = "failed") -> dict:
    processed = catalog.processed_dir(SNAPSHOT)
    report = json.loads(catalog.report_file(SNAPSHOT).read_text())
    assert report["status"] == status
    assert not catalog.clean_file(SNAPSHOT).exists() and not catalog.labels_file(SNAPSHOT).exists()
    assert catalog.feature_tables_of(SNAPSHOT) == []
    for version in FEATURE_SETS:
        assert SNAPSHOT not in catalog.feature_snapshots(feature_set(version).view_name), "materialize would read it"
    assert not has_files(catalog.training_sets_of(SNAPSHOT))
    assert not [p for p in processed.parent.iterdir() if p.name.startswith(".")], "no temporaries"
    if catalog.settings.on_object_storage:  # the failed report's version and the one it replaced, no more
        assert len([p for p in processed.iterdir() if p.name.startswith("v-") and has_files(p)]) <= 2
    for version in FEATURE_SETS:
        with pytest.raises(SnapshotNotValidated, match="failed validation"):
            build_feature_table(SNAPSHOT, version, catalog.settings)
    with pytest.raises(SnapshotNotValidated, match="failed validation"):
        build_training_set(SNAPSHOT, "v2", settings=catalog.settings)
    return report


def test_a_floor_failure_removes_the_snapshots_features_and_training_sets(built):
    settings, catalog = built
    with pytest.raises(ValidationFloorError, match="below|floor"):
        validate_and_clean(SNAPSHOT, settings=settings, min_valid_share=0.99)
    report = assert_nothing_downstream(catalog)
    assert "below the floor 0.99" in report["reason"]
    assert any("athlete_features_v1" in p for p in report["removed_downstream"])
    assert (current(catalog.processed_dir(SNAPSHOT)) / "quarantine.parquet").is_file(), "the evidence stays"


def test_a_raw_file_replaced_by_a_broken_one_fails_and_removes_the_earlier_good_outputs(built, tmp_path):
    settings, catalog = built
    raw = catalog.raw_file(SNAPSHOT)
    raw.write_text(raw.read_text().splitlines()[0] + "\n")  # header only
    with pytest.raises(RawFileError) as info:
        validate_and_clean(SNAPSHOT, settings=settings)
    assert info.value.kind == "changed_since_ingest"
    report = assert_nothing_downstream(catalog)
    assert report["raw_file_error"] == "changed_since_ingest"
    result = cli(settings.state_dir, "features", "--snapshot", SNAPSHOT, **settings.as_env())
    assert result.returncode == 2 and "failed validation" in result.stderr, result.stderr


def test_a_truncated_raw_snapshot_is_refused_not_validated(settings):
    """Its sha256 is in the manifest: bytes that changed after ingest are not raw input any more."""
    manifest = ingest_snapshot(SNAPSHOT, rows=ROWS, seed=3, settings=settings)
    raw = Catalog(settings).raw_file(SNAPSHOT)
    data = raw.read_bytes()
    raw.write_bytes(data[: data.rindex(b"\n", 0, len(data) // 2) + 1])  # half the rows, still a valid CSV
    result = cli(settings.state_dir, "validate", "--snapshot", SNAPSHOT)
    assert result.returncode == 2, result.stderr
    assert "changed_since_ingest" in result.stderr and manifest.sha256 in result.stderr
    assert "raw inputs are immutable" in result.stderr and "Traceback" not in result.stderr
    assert json.loads(Catalog(settings).report_file(SNAPSHOT).read_text())["status"] == "failed"
    raw.write_bytes(data)  # the original bytes back: valid again
    assert validate_and_clean(SNAPSHOT, settings=settings).rows_out > 200


def test_a_moved_state_folder_reads_the_snapshot_where_it_is_now(settings, tmp_path, monkeypatch):
    ingest_snapshot(SNAPSHOT, rows=ROWS, seed=3, settings=settings)
    first = validate_and_clean(SNAPSHOT, settings=settings)
    moved_root = tmp_path / "moved"
    shutil.move(settings.state_dir, moved_root)
    monkeypatch.setenv("CROSSFIT_STATE_DIR", str(moved_root))
    moved = get_settings()
    again = validate_and_clean(SNAPSHOT, settings=moved)
    assert again.rows_out == first.rows_out
    report = json.loads(Catalog(moved).report_file(SNAPSHOT).read_text())
    assert report["raw_file"] == str(Catalog(moved).raw_file(SNAPSHOT))


def test_an_old_manifest_with_an_absolute_path_resolves_to_the_current_location(settings, tmp_path):
    """Older manifests stored an absolute path: after a move, the OLD location must not be read,
    even when a (different) file still exists there."""
    ingest_snapshot(SNAPSHOT, rows=ROWS, seed=3, settings=settings)
    catalog = Catalog(settings)
    stale = tmp_path / "old_state" / "athletes.csv"
    stale.parent.mkdir()
    stale.write_text("not,the,snapshot\n")
    manifest_file = catalog.raw_manifest_file(SNAPSHOT)
    recorded = json.loads(manifest_file.read_text())
    recorded.pop("origin")  # as written by the older code
    manifest_file.write_text(json.dumps({**recorded, "path": str(stale)}))
    assert catalog.raw_manifest(SNAPSHOT).path == str(catalog.raw_file(SNAPSHOT))
    cleaned = validate_and_clean(SNAPSHOT, settings=settings)
    assert cleaned.rows_out > 200
    labels = pd.read_parquet(cleaned.labels_path)
    assert len(labels) == cleaned.rows_out


def test_a_rerun_after_a_failure_rebuilds_from_scratch(built):
    """The failure is not sticky: a valid rerun publishes "ok" again and the builders work."""
    settings, catalog = built
    with pytest.raises(ValidationFloorError):
        validate_and_clean(SNAPSHOT, settings=dataclasses.replace(settings, min_valid_share=1.0))
    assert validate_and_clean(SNAPSHOT, settings=settings).rows_out > 200
    assert build_feature_table(SNAPSHOT, "v1", settings).endswith(f"snapshot_{SNAPSHOT}.parquet")
