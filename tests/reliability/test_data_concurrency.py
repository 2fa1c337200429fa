"""Concurrent writers, for real: many processes publishing one result, and two runs (the training
and the monitoring DAG, two CLI calls) working on one snapshot at the same time."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crossfit_mlops.storage import publishing, snapshot_lock
from tests.reliability.test_data_bad_inputs import cli

PROCESSES = 8
PUBLISHES = 200
SNAPSHOT = "2026-05-01"


def _publisher(final: str, worker: int, out: str, env: dict | None = None, publishes: int = PUBLISHES) -> None:
    """``publishes`` results into ``final`` (a folder, or with ``env`` of the S3 profile an
    ``s3://`` URL); the failures, whatever they are, written to ``out``."""
    from crossfit_mlops.storage import location

    os.environ.update(env or {})
    failures = []
    for i in range(publishes):
        token = f"{worker}-{i}"
        try:
            with publishing(location(final)) as tmp:
                (tmp / "a").write_text(token)
                (tmp / "payload").write_bytes(os.urandom(4096))
                (tmp / "b").write_text(token)
        except Exception as exc:  # noqa: BLE001 - every failure counts, whatever it is
            failures.append(f"{type(exc).__name__}: {exc}")
    Path(out).write_text(json.dumps(failures))


def _read_whole(final: Path) -> str:
    """One observation of ``final``: "ok", "missing", "incomplete", or "replaced" (the folder this
    reader opened was swapped out and removed while it read: not a partial result)."""
    try:
        fd = os.open(final, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return "missing"
    try:
        return _judge(final, fd)
    finally:
        os.close(fd)


def _judge(final: Path, fd: int) -> str:
    try:
        names = set(os.listdir(fd))
        tokens = []
        for name in ("a", "b"):
            with open(name, opener=lambda n, flags: os.open(n, flags, dir_fd=fd)) as handle:
                tokens.append(handle.read())
        if {"a", "b", "payload"} <= names and tokens[0] == tokens[1] and tokens[0]:
            return "ok"
    except FileNotFoundError:
        pass
    try:
        same = os.fstat(fd).st_ino == os.stat(final).st_ino
    except FileNotFoundError:
        same = False
    return "incomplete" if same else "replaced"


def _reader(final: str, stop: str, out: str) -> None:
    seen: dict[str, int] = {}
    while not os.path.exists(stop):
        verdict = _read_whole(Path(final))
        seen[verdict] = seen.get(verdict, 0) + 1
    Path(out).write_text(json.dumps(seen))


def test_eight_processes_publishing_one_result_never_fail_nor_leave_debris(tmp_path):
    """On the old code (two renames, no lock): 1,327 "Directory not empty" failures of 1,600 and
    hidden `.old-<pid>` folders left behind."""
    final = tmp_path / "out" / "result"
    with publishing(final) as tmp:  # a first result, so that "missing" is never acceptable
        for name in ("a", "b"):
            (tmp / name).write_text("first")
        (tmp / "payload").write_bytes(b"x")
    spawn = multiprocessing.get_context("spawn")
    stop = tmp_path / "stop"
    reader = spawn.Process(target=_reader, args=(str(final), str(stop), str(tmp_path / "reader.json")))
    reader.start()
    workers = [
        spawn.Process(target=_publisher, args=(str(final), w, str(tmp_path / f"worker{w}.json")))
        for w in range(PROCESSES)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=600)
    stop.touch()
    reader.join(timeout=60)
    assert all(w.exitcode == 0 for w in workers) and reader.exitcode == 0
    failures = [f for w in range(PROCESSES) for f in json.loads((tmp_path / f"worker{w}.json").read_text())]
    assert failures == [], failures[:5]
    assert sorted(p.name for p in final.parent.iterdir()) == ["result"], "no temporary or old folder left"
    assert _read_whole(final) == "ok"
    assert (final / "a").read_text() != "first"
    seen = json.loads((tmp_path / "reader.json").read_text())
    assert seen.get("ok", 0) > 0
    assert seen.get("incomplete", 0) == 0 and seen.get("missing", 0) == 0, seen


# --- the per-snapshot lock ---------------------------------------------------------------------------

HOLD = """
import sys, time
from pathlib import Path
from crossfit_mlops.settings import get_settings
from crossfit_mlops.storage import snapshot_lock

with snapshot_lock(get_settings(), sys.argv[1]):
    Path(sys.argv[2]).touch()
    while not Path(sys.argv[3]).exists():
        time.sleep(0.05)
"""


def _blocked_on_lock(pid: int, lock_file: Path) -> bool:
    """/proc/locks lists a process waiting for a flock with ``->``, with the lock file's inode."""
    inode = str(lock_file.stat().st_ino)
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and str(pid) in fields and any(f.endswith(f":{inode}") for f in fields):
            return True
    return False


def _wait_for(predicate, what: str, limit: float = 300.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def _env(state: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CROSSFIT_")}
    return {**base, "CROSSFIT_STATE_DIR": str(state)}


def validation_waits_for_the_lock(tmp_path: Path, env: dict[str, str], blocked, nothing_written) -> None:
    """One process holds the snapshot's lock; a validation started meanwhile must wait
    (``blocked(pid)``), write nothing (``nothing_written()``), then finish once it is released."""
    assert subprocess.run([sys.executable, "-m", "crossfit_mlops", "ingest", "--snapshot", SNAPSHOT, "--rows", "5000", "--seed", "3"],
                          env=env, capture_output=True, timeout=600).returncode == 0  # fmt: skip
    held, release = tmp_path / "held", tmp_path / "release"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, SNAPSHOT, str(held), str(release)], env=env)
    try:
        _wait_for(held.exists, "the first process to take the lock")
        waiter = subprocess.Popen(
            [sys.executable, "-m", "crossfit_mlops", "validate", "--snapshot", SNAPSHOT],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        _wait_for(lambda: blocked(waiter.pid), "the validation to block on the lock")
        assert nothing_written(), "it waits before writing"
        release.touch()
        out, err = waiter.communicate(timeout=300)
        assert waiter.returncode == 0, err
        assert json.loads(out)["rows_out"] > 200
    finally:
        release.touch()
        holder.wait(timeout=60)


def test_a_validation_waits_while_another_run_holds_the_snapshot(tmp_path):
    state = tmp_path / "state"
    lock_file = state / "locks" / f"snapshot={SNAPSHOT}.lock"
    validation_waits_for_the_lock(
        tmp_path, _env(state), lambda pid: _blocked_on_lock(pid, lock_file),
        lambda: not (state / "data" / "processed" / f"snapshot={SNAPSHOT}").exists(),
    )  # fmt: skip


def test_two_ingests_of_one_new_snapshot_write_it_once(tmp_path):
    """Without the lock both generate the file and the second publish replaces the first one:
    a raw input rewritten under a run that may already be validating it."""
    state = tmp_path / "state"
    args = [sys.executable, "-m", "crossfit_mlops", "ingest", "--snapshot", SNAPSHOT, "--rows", "20000", "--seed", "3"]
    runs = [subprocess.Popen(args, env=_env(state), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(*r.communicate(timeout=600), r.returncode) for r in runs]
    assert [code for _, _, code in results] == [0, 0], [err for _, err, _ in results]
    manifests = [json.loads(out) for out, _, _ in results]
    assert manifests[0] == manifests[1]
    reused = [err for _, err, _ in results if "exists (generated" in err and "reusing it" in err]
    assert len(reused) == 1, "exactly one process generated the snapshot, the other waited and reused it"


def test_two_validations_at_once_both_succeed_and_leave_one_whole_result(tmp_path):
    state = tmp_path / "state"
    assert cli(state, "ingest", "--snapshot", SNAPSHOT, "--rows", "5000", "--seed", "3").returncode == 0
    args = [sys.executable, "-m", "crossfit_mlops", "validate", "--snapshot", SNAPSHOT]
    runs = [subprocess.Popen(args, env=_env(state), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(*r.communicate(timeout=600), r.returncode) for r in runs]
    assert [code for _, _, code in results] == [0, 0], [err for _, err, _ in results]
    processed = state / "data" / "processed"
    assert sorted(p.name for p in processed.iterdir()) == [f"snapshot={SNAPSHOT}"]
    report = json.loads((processed / f"snapshot={SNAPSHOT}" / "validation_report.json").read_text())
    assert report["status"] == "ok"


def test_the_snapshot_lock_is_exclusive_for_writers_and_shared_for_builders(settings):
    import fcntl

    lock_file = settings.state_dir / "locks" / f"snapshot={SNAPSHOT}.lock"
    with snapshot_lock(settings, SNAPSHOT, shared=True), snapshot_lock(settings, SNAPSHOT, shared=True):
        fd = os.open(lock_file, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
