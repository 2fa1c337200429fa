"""The S3-backed profile's guarantees, for real, on a SeaweedFS bucket: concurrent publishers and
readers, an uploader killed before its marker, a failed block, and the snapshot lock held across
processes (PostgreSQL advisory locks, since no lock file is seen by another host).

The local profile's versions of these are in test_data_concurrency.py; the failed-validation ones
run on both profiles in test_data_failed_validation.py.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from crossfit_mlops import storage
from crossfit_mlops.storage import CURRENT_FILE, current, has_files, publishing, snapshot_lock
from tests.reliability.test_data_bad_inputs import cli
from tests.reliability.test_data_concurrency import (
    HOLD,
    _publisher,
    _wait_for,
    validation_waits_for_the_lock,
)

SNAPSHOT = "2026-05-01"
PROCESSES, PUBLISHES = 3, 6


def _versions(folder) -> list[str]:
    """The versions with files (SeaweedFS lists an emptied folder until its cleanup runs)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("v-") and has_files(p))


def _judge(final) -> str:
    """One reader's observation through the marker: "ok" (a and b of one publish), "incomplete"."""
    try:
        folder = current(final)
        a, b = (folder / "a").read_text(), (folder / "b").read_text()
    except FileNotFoundError:
        return "replaced"  # the version it resolved was cleaned up while it read: not a partial result
    return "ok" if a == b else "incomplete"


def test_concurrent_publishers_and_readers_see_only_whole_versions(s3_settings, tmp_path):
    final = s3_settings.processed_dir / "result"
    with publishing(final) as tmp:
        (tmp / "a").write_text("first")
        (tmp / "b").write_text("first")
    env = {k: v for k, v in os.environ.items() if k.startswith(("CROSSFIT_", "AWS_"))}
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_publisher, args=(str(final), w, str(tmp_path / f"w{w}.json"), env, PUBLISHES))
               for w in range(PROCESSES)]  # fmt: skip
    for w in workers:
        w.start()
    seen: dict[str, int] = {}
    while any(w.is_alive() for w in workers):
        verdict = _judge(final)
        seen[verdict] = seen.get(verdict, 0) + 1
    for w in workers:
        w.join()
        assert w.exitcode == 0
    failures = [f for w in range(PROCESSES) for f in json.loads((tmp_path / f"w{w}.json").read_text())]
    assert failures == [], failures[:5]
    assert seen.get("ok", 0) > 0 and seen.get("incomplete", 0) == 0, seen
    assert _judge(final) == "ok" and (current(final) / "a").read_text() != "first"
    assert len(_versions(final)) <= 2, "the current version and the one it replaced, no more"


KILLED_BEFORE_MARKER = """
import os, signal, sys
import crossfit_mlops.storage as storage
from crossfit_mlops.storage import location, publishing

def killed(*args, **kwargs):  # the marker is written under this lock: die just before it
    os.kill(os.getpid(), signal.SIGKILL)

storage.advisory_lock = killed
with publishing(location(sys.argv[1])) as tmp:
    (tmp / "a").write_text("second")
    (tmp / "b").write_text("second")
"""


def test_an_uploader_killed_before_its_marker_leaves_the_previous_result_current(s3_settings, monkeypatch):
    final = s3_settings.processed_dir / "result"
    with publishing(final) as tmp:
        (tmp / "a").write_text("first")
        (tmp / "b").write_text("first")
    first = _versions(final)
    done = subprocess.run([sys.executable, "-c", KILLED_BEFORE_MARKER, str(final)], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    orphans = [v for v in _versions(final) if v not in first]
    assert len(orphans) == 1 and (final / orphans[0] / "a").read_text() == "second", "its files were uploaded"
    assert (current(final) / "a").read_text() == "first", "a version without its marker is never read"
    with publishing(final) as tmp:  # a young orphan may be an upload in flight: it stays
        (tmp / "a").write_text("third")
        (tmp / "b").write_text("third")
    assert orphans[0] in _versions(final) and (current(final) / "a").read_text() == "third"
    monkeypatch.setattr(storage, "ORPHAN_SECONDS", 0.0)  # as if an hour had passed
    with publishing(final) as tmp:  # the next publish replaces the result and sweeps the orphan away
        (tmp / "a").write_text("fourth")
        (tmp / "b").write_text("fourth")
    assert (current(final) / "a").read_text() == "fourth"
    assert orphans[0] not in _versions(final) and len(_versions(final)) == 2


def test_a_block_that_raises_publishes_nothing(s3_settings):
    final = s3_settings.processed_dir / "result"
    with publishing(final) as tmp:
        (tmp / "a").write_text("first")
    with pytest.raises(RuntimeError, match="half-way"), publishing(final) as tmp:
        (tmp / "a").write_text("second")
        raise RuntimeError("the step failed half-way")
    assert (current(final) / "a").read_text() == "first" and len(_versions(final)) == 1
    never = s3_settings.processed_dir / "never"
    with pytest.raises(RuntimeError), publishing(never) as tmp:
        (tmp / "a").write_text("x")
        raise RuntimeError("before any publish")
    assert not (never / CURRENT_FILE).exists() and not (current(never) / "a").exists()


# --- the snapshot lock, across processes -----------------------------------------------------------
def _waiting_for_advisory_lock(lock_uri: str) -> bool:
    """Some session is waiting for an advisory lock (pg_locks: granted = false)."""
    import psycopg2

    conn = psycopg2.connect(lock_uri.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            return cursor.fetchone()[0] > 0
    finally:
        conn.close()


def test_a_validation_on_another_process_waits_for_the_snapshot_lock(s3_settings, tmp_path):
    processed = s3_settings.processed_dir / f"snapshot={SNAPSHOT}"
    validation_waits_for_the_lock(
        tmp_path, {**os.environ, **s3_settings.as_env()}, lambda _pid: _waiting_for_advisory_lock(s3_settings.lock_uri),
        lambda: not (processed / CURRENT_FILE).exists(),
    )  # fmt: skip


def test_the_lock_is_released_when_its_holder_is_killed(s3_settings, tmp_path):
    env = s3_settings.as_env()
    held = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, SNAPSHOT, str(held), str(tmp_path / "never")], env={**os.environ, **env})
    _wait_for(held.exists, "the holder to take the lock")
    holder.kill()
    holder.wait(timeout=30)
    started = time.monotonic()
    with snapshot_lock(s3_settings, SNAPSHOT):  # the server ended the dead holder's session and its lock
        pass
    assert time.monotonic() - started < 30


def test_two_validations_at_once_both_succeed_and_leave_one_current_result(s3_settings):
    env = s3_settings.as_env()
    assert cli(s3_settings.state_dir, "ingest", "--snapshot", SNAPSHOT, "--rows", "5000", "--seed", "3", **env).returncode == 0
    args = [sys.executable, "-m", "crossfit_mlops", "validate", "--snapshot", SNAPSHOT]
    runs = [subprocess.Popen(args, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(*r.communicate(timeout=600), r.returncode) for r in runs]
    assert [code for _, _, code in results] == [0, 0], [err for _, err, _ in results]
    processed = s3_settings.processed_dir / f"snapshot={SNAPSHOT}"
    assert json.loads((current(processed) / "validation_report.json").read_text())["status"] == "ok"
    assert len(_versions(processed)) == 2, "the second run's version and the first's it replaced"


def test_two_ingests_of_one_new_snapshot_write_it_once(s3_settings):
    env = s3_settings.as_env()
    args = [sys.executable, "-m", "crossfit_mlops", "ingest", "--snapshot", SNAPSHOT, "--rows", "20000", "--seed", "3"]
    runs = [subprocess.Popen(args, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(*r.communicate(timeout=600), r.returncode) for r in runs]
    assert [code for _, _, code in results] == [0, 0], [err for _, err, _ in results]
    reused = [err for _, err, _ in results if "reusing it" in err]
    assert len(reused) == 1, "one process generated the snapshot, the other waited and reused it"
    assert len(_versions(s3_settings.raw_dir / f"snapshot={SNAPSHOT}")) == 1


# --- a full object store ---------------------------------------------------------------------------
@pytest.fixture
def full_store(tmp_path, s3_services, monkeypatch):
    """A SeaweedFS of its own on a 48 MiB tmpfs (root only), with the session's lock database."""
    from tests.support.services import object_store

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        with object_store(disk / "state") as store:
            for name, value in {**s3_services[0], **store.env("full")}.items():
                monkeypatch.setenv(name, value)
            yield store
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_full_object_store_fails_the_publish_and_keeps_the_previous_result(full_store):
    from crossfit_mlops.settings import get_settings
    from crossfit_mlops.storage import PublishError

    final = get_settings().processed_dir / "result"
    with publishing(final) as tmp:
        (tmp / "a").write_text("first")
    fs = full_store.filesystem()
    with pytest.raises(OSError):  # fill the store: 2 MiB objects until it refuses one
        for i in range(100):
            fs.pipe_file(f"{full_store.bucket}/filler/{i}", os.urandom(2 << 20))
    with pytest.raises(PublishError) as info, publishing(final) as tmp:
        (tmp / "a").write_text("second")
        (tmp / "payload").write_bytes(os.urandom(4 << 20))
    message = str(info.value)
    assert f"could not publish {final}" in message and full_store.endpoint in message
    assert "refused the upload" in message and "previous result" in message
    assert (current(final) / "a").read_text() == "first", "the previous result is still the one read"
    assert len(_versions(final)) == 1, "the failed upload left no version behind"


def test_a_raw_file_dropped_into_the_bucket_is_ingested_byte_for_byte(s3_settings, tmp_path):
    """On the S3 profile the drop-in path is in the bucket (every host sees it): ingest copies it
    into the snapshot untouched and records it as provided."""
    from crossfit_mlops.data.generate import write_snapshot
    from crossfit_mlops.data.ingest import ingest_snapshot
    from crossfit_mlops.storage import sha256_of

    local = tmp_path / "athletes.csv"
    write_snapshot(local, rows=3000, seed=11)
    drop_in = s3_settings.raw_file_override
    assert str(drop_in) == f"{s3_settings.data_url}/data/raw/athletes.csv"
    drop_in.fs.put_file(str(local), drop_in.path)
    manifest = ingest_snapshot(SNAPSHOT, settings=s3_settings)
    assert manifest.source == "provided" and manifest.sha256 == sha256_of(local)
    assert str(drop_in) in manifest.origin
