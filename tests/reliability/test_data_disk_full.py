"""A full disk during a publish, for real: the state directory is a small tmpfs this test mounts
(root only), filled up before the step runs. What the user must see: a clear error (exit 2,
"no space left on device", where), the previous good output intact, no temporary left behind."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.reliability.test_data_bad_inputs import cli

SNAPSHOT = "2026-05-01"


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MiB tmpfs: room for a 5,000-row snapshot and its outputs, then filled to the brim."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(disk: Path) -> None:
    """Write until the disk refuses: every free block is taken."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (64 * 1024, 4096, 512, 1):  # big blocks, then the last partial ones
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def temporaries(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


def test_a_full_disk_keeps_the_previous_outputs_and_says_what_happened(small_disk):
    state = small_disk / "state"
    assert cli(state, "ingest", "--snapshot", SNAPSHOT, "--rows", "5000", "--seed", "3").returncode == 0
    first = cli(state, "validate", "--snapshot", SNAPSHOT)
    assert first.returncode == 0, first.stderr
    assert cli(state, "features", "--snapshot", SNAPSHOT).returncode == 0
    data = state / "data"
    before = {name: digests(data / name) for name in ("raw", "processed", "features")}
    assert before["processed"] and before["features"]

    fill(small_disk)

    again = cli(state, "validate", "--snapshot", SNAPSHOT)
    assert again.returncode == 2, again.stderr
    assert "no space left on device" in again.stderr
    assert f"could not publish {data / 'processed' / f'snapshot={SNAPSHOT}'}" in again.stderr
    assert "Traceback" not in again.stderr
    features = cli(state, "features", "--snapshot", SNAPSHOT)
    assert features.returncode == 2 and "no space left on device" in features.stderr, features.stderr
    new = cli(state, "ingest", "--snapshot", "2026-05-02", "--rows", "5000", "--seed", "3")
    assert new.returncode == 2 and "no space left on device" in new.stderr, new.stderr

    assert {name: digests(data / name) for name in ("raw", "processed", "features")} == before
    assert json.loads((data / "processed" / f"snapshot={SNAPSHOT}" / "validation_report.json").read_text())["status"] == "ok"
    assert not (data / "raw" / "snapshot=2026-05-02").exists(), "no half-written snapshot"
    assert temporaries(state) == []

    (small_disk / "filler").unlink()  # room again: the same commands succeed
    assert cli(state, "validate", "--snapshot", SNAPSHOT).returncode == 0
    assert cli(state, "ingest", "--snapshot", "2026-05-02", "--rows", "5000", "--seed", "3").returncode == 0
    assert temporaries(state) == []
