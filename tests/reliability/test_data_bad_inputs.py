"""Bad inputs at the data half's edges, through the real CLI (what a user types and sees).

Each test starts `python -m crossfit_mlops ...` in a fresh state directory and asserts the exit
code, the message and what was (not) written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crossfit_mlops.data.generate import write_snapshot
from tests.unit.test_contract import frame_of, valid_row, write_csv

SNAPSHOT = "2026-05-01"


def cli(state: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run the CLI with ``state`` as CROSSFIT_STATE_DIR and ``env`` on top of a clean environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CROSSFIT_")}
    return subprocess.run(
        [sys.executable, "-m", "crossfit_mlops", *args],
        env={**base, "CROSSFIT_STATE_DIR": str(state), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_an_explicit_raw_file_that_does_not_exist_is_refused(tmp_path):
    state = tmp_path / "state"
    result = cli(state, "ingest", "--snapshot", SNAPSHOT, "--rows", "500", CROSSFIT_RAW_FILE="/nope.csv")
    assert result.returncode == 2, result.stderr
    assert "CROSSFIT_RAW_FILE=/nope.csv: no such file" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (state / "data").exists(), "nothing generated in its place"

    folder = tmp_path / "a_folder.csv"
    folder.mkdir()
    result = cli(state, "ingest", "--snapshot", SNAPSHOT, "--rows", "500", CROSSFIT_RAW_FILE=str(folder))
    assert result.returncode == 2 and f"CROSSFIT_RAW_FILE={folder}: not a regular file" in result.stderr


def test_without_a_provided_file_ingest_generates_and_says_so(tmp_path):
    state = tmp_path / "state"
    result = cli(state, "ingest", "--snapshot", SNAPSHOT, "--rows", "500", "--seed", "4")
    assert result.returncode == 0, result.stderr
    assert "will be generated" in result.stderr
    manifest = json.loads((state / "data/raw" / f"snapshot={SNAPSHOT}" / "manifest.json").read_text())
    assert manifest["source"] == "generated" and "simulator (500 rows, seed 4" in manifest["origin"]
    assert manifest["path"] == "athletes.csv", "stored relative to the snapshot folder"


def test_a_provided_file_at_the_drop_in_path_is_used_and_recorded(tmp_path):
    state = tmp_path / "state"
    drop_in = state / "data" / "raw" / "athletes.csv"
    write_snapshot(drop_in, rows=500, seed=9)
    result = cli(state, "ingest", "--snapshot", SNAPSHOT)
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["source"] == "provided" and str(drop_in) in manifest["origin"]


@pytest.mark.parametrize("value", ["-1", "nan", "1.5"])
def test_a_quality_floor_outside_0_1_is_refused(tmp_path, value):
    state = tmp_path / "state"
    result = cli(state, "validate", "--snapshot", SNAPSHOT, "--min-valid-share", value)
    assert result.returncode == 2 and "--min-valid-share" in result.stderr and "between 0 and 1" in result.stderr
    result = cli(state, "validate", "--snapshot", SNAPSHOT, CROSSFIT_MIN_VALID_SHARE=value)
    assert result.returncode == 2 and "CROSSFIT_MIN_VALID_SHARE" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_snapshot_too_small_to_train_on_is_refused(tmp_path):
    state = tmp_path / "state"
    provided = tmp_path / "five_rows.csv"
    write_csv(provided, frame_of(*(valid_row(athlete_id=float(i)) for i in range(1, 6))))  # 5 good rows
    assert cli(state, "ingest", "--snapshot", SNAPSHOT, CROSSFIT_RAW_FILE=str(provided)).returncode == 0

    result = cli(state, "validate", "--snapshot", SNAPSHOT)
    assert result.returncode == 2, result.stderr
    assert "fewer than the 200 needed to train on" in result.stderr and "CROSSFIT_MIN_CLEAN_ROWS" in result.stderr
    processed = state / "data/processed" / f"snapshot={SNAPSHOT}"
    assert json.loads((processed / "validation_report.json").read_text())["status"] == "failed"
    assert not (processed / "athletes_clean.parquet").exists()
    result = cli(state, "features", "--snapshot", SNAPSHOT)
    assert result.returncode == 2 and "failed validation" in result.stderr

    lowered = cli(state, "validate", "--snapshot", SNAPSHOT, CROSSFIT_MIN_CLEAN_ROWS="5")
    assert lowered.returncode == 0, lowered.stderr


def test_an_impossible_snapshot_date_writes_nothing(tmp_path):
    state = tmp_path / "state"
    for command in (["ingest", "--rows", "500"], ["validate"], ["features"]):
        result = cli(state, command[0], "--snapshot", "2026-13-45", *command[1:])
        assert result.returncode == 2, result.stderr
        assert "'2026-13-45' is not a real date" in result.stderr
    assert files_under(state) == [], "not even the state folder: the id is checked first"
