"""The storage catalog: the schema's key columns, where every artifact of a snapshot lives, how it
is read back, and the one way anything is written (:func:`publishing`).

Layout under the state directory (roots from :mod:`crossfit_mlops.settings`)::

    data/raw/snapshot=<id>/athletes.csv             immutable input (generated, or a provided file)
    data/raw/snapshot=<id>/manifest.json            source, rows, sha256 (path relative to the folder)
    locks/snapshot=<id>.lock                        the snapshot's lock (:func:`snapshot_lock`)
    data/processed/snapshot=<id>/                   clean data, labels, quarantine, rejected rows, report
    data/features/<view>/snapshot_<id>.parquet      one feature view's offline source, one file a snapshot
    data/training/snapshot=<id>/sample=<n>/<v>/     train / validation / test of feature version v
    data/predictions/snapshot=<id>/run=<key>/       batch predictions of one run
    monitoring/snapshot=<id>/run=<key>/             one monitoring run's report, dashboard, summary

With ``CROSSFIT_DATA_URL=s3://bucket/prefix`` the same layout lives in the bucket (``data/``,
``emissions/``, ``monitoring/`` under the prefix) and the roots are universal-pathlib paths over
s3fs: the same code reads and writes either. Two things differ on object storage, where nothing is
renamed in one step and no lock file is seen by another host:

- a published folder is a version under it (``<folder>/v-<time>-<host>-<pid>/``) named by the
  marker ``<folder>/_CURRENT.json``, written last in one PUT; readers go through :func:`current`,
  so a half-uploaded version is never read, and the previous one stays until the next publish;
- the snapshot's lock is a PostgreSQL advisory lock (``CROSSFIT_LOCK_URI``), not ``flock``.

Nothing heavy is imported here: DAG files and the CLI use it at parse time.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crossfit_mlops.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

# --- the schema's key columns --------------------------------------------------------------------
ENTITY_KEY = "athlete_id"  # the real id of the raw file: Feast's join key
EVENT_TIMESTAMP = "event_timestamp"  # the snapshot's time: Feast's point-in-time column
TARGET = "total_lift"  # candj + snatch + deadlift + backsq, in pounds

# --- file names inside a snapshot's folders ------------------------------------------------------
RAW_FILE = "athletes.csv"
MANIFEST_FILE = "manifest.json"
CLEAN_FILE = "athletes_clean.parquet"
LABELS_FILE = "labels.parquet"
QUARANTINE_FILE = "quarantine.parquet"
REJECTED_FILE = "rejected.parquet"
REPORT_FILE = "validation_report.json"

_SNAPSHOT_ID = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_FEATURE_FILE = re.compile(r"^snapshot_(\d{4}-\d{2}-\d{2})\.parquet$")


def check_snapshot_id(snapshot_id: str) -> str:
    """Snapshot ids are ISO dates (the day the athlete profiles were read), and real ones: every
    path of a snapshot is built through this check, so nothing is written for ``2026-13-45``."""
    if not isinstance(snapshot_id, str) or not _SNAPSHOT_ID.match(snapshot_id):
        raise ValueError(f"snapshot id must be an ISO date like 2026-11-22, got {snapshot_id!r}")
    try:
        date.fromisoformat(snapshot_id)
    except ValueError as exc:
        raise ValueError(f"snapshot id {snapshot_id!r} is not a real date ({exc})") from None
    return snapshot_id


def snapshot_time(snapshot_id: str) -> pd.Timestamp:
    """The event time of a snapshot: midnight UTC of its date."""
    import pandas as pd

    return pd.Timestamp(check_snapshot_id(snapshot_id), tz="UTC")


def safe_key(run_key: str) -> str:
    """A run key (an Airflow run id has ``:`` and ``+``) made safe as a file name."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", run_key)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class RawSnapshot:
    """A raw snapshot's manifest: what the file is and where it came from.

    On disk ``path`` is relative to the snapshot's folder (``athletes.csv``), so the state folder
    can move; :meth:`Catalog.raw_manifest` returns it resolved to where the file is now.
    """

    snapshot_id: str
    path: str
    sha256: str
    source: str  # "generated" | "provided"
    rows: int | None
    seed: int | None = None  # generator seed, for generated snapshots
    season_shift: float = 0.0  # the generator's simulated later season (0 = none)
    origin: str | None = None  # what wrote it: the provided file's path, or the simulator's settings

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Catalog:
    """Every artifact path by snapshot, and the loaders. Build it from the settings in force."""

    settings: Settings

    # --- raw ------------------------------------------------------------------------------------
    def raw_dir(self, snapshot_id: str) -> Path:
        return self.settings.raw_dir / f"snapshot={check_snapshot_id(snapshot_id)}"

    def raw_file(self, snapshot_id: str) -> Path:
        return current(self.raw_dir(snapshot_id)) / RAW_FILE

    def raw_manifest_file(self, snapshot_id: str) -> Path:
        return current(self.raw_dir(snapshot_id)) / MANIFEST_FILE

    def raw_manifest(self, snapshot_id: str) -> RawSnapshot:
        """The manifest, with ``path`` resolved to the raw file's current location.

        Manifests store the file name relative to the snapshot folder; older ones stored an
        absolute path, which is read as its file name in this folder (never as the old location,
        which may be a stale copy or gone after the state folder moved).
        """
        folder = current(self.raw_dir(snapshot_id))
        path = folder / MANIFEST_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no raw snapshot {snapshot_id} at {self.raw_dir(snapshot_id)}: ingest it first")
        recorded = json.loads(path.read_text())
        known = {f.name for f in fields(RawSnapshot)}
        manifest = RawSnapshot(**{k: v for k, v in recorded.items() if k in known})
        return replace(manifest, path=str(folder / Path(manifest.path).name))

    # --- processed --------------------------------------------------------------------------------
    def processed_dir(self, snapshot_id: str) -> Path:
        return self.settings.processed_dir / f"snapshot={check_snapshot_id(snapshot_id)}"

    def report_file(self, snapshot_id: str) -> Path:
        return current(self.processed_dir(snapshot_id)) / REPORT_FILE

    def clean_file(self, snapshot_id: str) -> Path:
        return current(self.processed_dir(snapshot_id)) / CLEAN_FILE

    def labels_file(self, snapshot_id: str) -> Path:
        return current(self.processed_dir(snapshot_id)) / LABELS_FILE

    def load_clean(self, snapshot_id: str) -> pd.DataFrame:
        return self._load_processed(snapshot_id, CLEAN_FILE, "cleaned data")

    def load_labels(self, snapshot_id: str) -> pd.DataFrame:
        return self._load_processed(snapshot_id, LABELS_FILE, "labels")

    def _load_processed(self, snapshot_id: str, name: str, what: str) -> pd.DataFrame:
        folder = current(self.processed_dir(snapshot_id))
        path = folder / name
        if not path.is_file():
            report = folder / REPORT_FILE
            why = ""
            if report.is_file():
                why = f" (validation status: {json.loads(report.read_text()).get('status')}, see {report})"
            raise FileNotFoundError(f"no {what} for snapshot {snapshot_id} at {path}{why}: validate it first")
        return read_parquet(path)

    # --- features ---------------------------------------------------------------------------------
    def feature_table_dir(self, view_name: str) -> Path:
        """Folder of one feature view's offline source: one parquet file per snapshot."""
        return self.settings.features_dir / view_name

    def feature_table_file(self, view_name: str, snapshot_id: str) -> Path:
        return self.feature_table_dir(view_name) / f"snapshot_{check_snapshot_id(snapshot_id)}.parquet"

    def feature_snapshots(self, view_name: str) -> list[str]:
        """Snapshot ids that have a table of ``view_name``, oldest first."""
        folder = self.feature_table_dir(view_name)
        return sorted(m.group(1) for p in folder.glob("snapshot_*.parquet") if (m := _FEATURE_FILE.match(p.name)))

    def feature_tables_of(self, snapshot_id: str) -> list[Path]:
        """Every feature view's table of ``snapshot_id`` (whatever views exist on disk)."""
        name = f"snapshot_{check_snapshot_id(snapshot_id)}.parquet"
        return sorted(self.settings.features_dir.glob(f"*/{name}"))

    # --- what a validation verdict governs ----------------------------------------------------------
    def validation_status(self, snapshot_id: str) -> str | None:
        """The status of the snapshot's published validation report (None: never validated)."""
        report = self.report_file(snapshot_id)
        return json.loads(report.read_text()).get("status") if report.is_file() else None

    def require_validated(self, snapshot_id: str, what: str) -> None:
        """Refuse to build ``what`` on a snapshot whose published validation is not "ok"."""
        status = self.validation_status(snapshot_id)
        if status != "ok":
            verdict = "was never validated" if status is None else f"failed validation (status {status!r})"
            raise SnapshotNotValidated(
                f"refusing to build {what} of snapshot {snapshot_id}: it {verdict}; "
                f"see {self.report_file(snapshot_id)} (validate it first)"
            )

    def remove_downstream(self, snapshot_id: str) -> list[str]:
        """Remove what was built from a snapshot's clean data (feature tables, training sets), so
        that nothing a later step reads survives a failed validation. Returns what was removed."""
        removed = []
        for table in self.feature_tables_of(snapshot_id):
            table.unlink(missing_ok=True)
            removed.append(str(table))
        training = self.training_sets_of(snapshot_id)
        if has_files(training):
            remove_tree(training)
            removed.append(str(training))
        return removed

    # --- training sets, predictions, monitoring ---------------------------------------------------
    def training_sets_of(self, snapshot_id: str) -> Path:
        """The folder of every training set (all samples, all versions) of a snapshot."""
        return self.settings.training_dir / f"snapshot={check_snapshot_id(snapshot_id)}"

    def training_set_dir(self, snapshot_id: str, sample_size: int, version: str) -> Path:
        """Train/validation/test parquet files of one feature version, keyed by snapshot and sample."""
        sample = "all" if not sample_size else str(int(sample_size))
        return self.training_sets_of(snapshot_id) / f"sample={sample}" / version

    def predictions_dir(self, snapshot_id: str, run_key: str) -> Path:
        return self._run_partition(self.settings.predictions_dir, snapshot_id, run_key)

    def monitoring_dir(self, snapshot_id: str, run_key: str) -> Path:
        return self._run_partition(self.settings.monitoring_dir, snapshot_id, run_key)

    @staticmethod
    def _run_partition(base: Path, snapshot_id: str, run_key: str) -> Path:
        """``<base>/snapshot=<id>/run=<key>``: one output folder per (snapshot, run)."""
        return base / f"snapshot={check_snapshot_id(snapshot_id)}" / f"run={safe_key(run_key)}"


def catalog(settings: Settings | None = None) -> Catalog:
    from crossfit_mlops.settings import get_settings

    return Catalog(settings or get_settings())


class SnapshotNotValidated(RuntimeError):
    """A builder was asked for outputs of a snapshot whose validation is missing or failed."""


# --- the per-snapshot lock -----------------------------------------------------------------------
@contextmanager
def snapshot_lock(settings: Settings, snapshot_id: str, *, shared: bool = False) -> Iterator[None]:
    """Hold the snapshot's lock for the block: ``flock`` on ``<state>/locks/snapshot=<id>.lock``.

    Ingest and validation hold it exclusively: two runs (the training and the monitoring DAG, two
    CLI calls) never write or judge one snapshot at once, the second waits and then sees the
    first's result. Builders of outputs derived from the clean data hold it shared: they run in
    parallel with each other, never while the snapshot is being (re)validated, so a failed
    validation's clean-up cannot be overtaken by a builder publishing after it.

    The lock file stays (removing it would let a waiter lock an unlinked file); the kernel drops
    the lock when its holder exits, killed or not, so a crash never leaves the snapshot locked.

    On object storage (``settings.on_object_storage``) the holders run on different hosts: the
    lock is a PostgreSQL advisory lock on ``CROSSFIT_LOCK_URI`` instead, with the same shared and
    exclusive modes; the server drops it when the holder's connection ends, killed or not.
    """
    import fcntl

    if settings.on_object_storage:
        with advisory_lock(settings.lock_uri, f"snapshot:{settings.data_url}:{check_snapshot_id(snapshot_id)}", shared=shared):
            yield
        return

    name = f"snapshot={check_snapshot_id(snapshot_id)}.lock"  # checked before anything is created
    folder = settings.state_dir / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class LockError(RuntimeError):
    """The cross-host lock could not be taken (its database is unreachable or refused us)."""


@contextmanager
def advisory_lock(lock_uri: str, name: str, *, shared: bool = False) -> Iterator[None]:
    """Hold a PostgreSQL advisory lock named ``name`` (hashed to the server's 64-bit key) for the
    block, on its own connection: closing it (or the holder dying) releases the lock."""
    import psycopg2

    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    dsn = re.sub(r"^postgresql\+\w+://", "postgresql://", lock_uri)
    try:
        conn = psycopg2.connect(dsn, connect_timeout=10, application_name="crossfit-lock")
    except psycopg2.Error as exc:
        where = re.sub(r"//[^@/]*@", "//***@", lock_uri)  # never print a password
        raise LockError(f"cannot take the lock {name!r}: its database {where} is unreachable ({str(exc).strip()})") from None
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock_shared(%s)" if shared else "SELECT pg_advisory_lock(%s)", (key,))
        yield
    finally:
        conn.close()


# --- where things are, on a local disk or in a bucket ---------------------------------------------
CURRENT_FILE = "_CURRENT.json"
UNPUBLISHED = "_unpublished"  # what current() names for a folder without a marker: never exists


def is_remote(path: object) -> bool:
    """True for a bucket path (a universal-pathlib path that is not a local :class:`Path`)."""
    return not isinstance(path, Path | str) and hasattr(path, "storage_options")


def location(value: str | os.PathLike, settings: Settings | None = None) -> Path:
    """A path as a string (from XCom, a manifest, a flag) back as a path object: a local
    :class:`Path`, or for an ``s3://`` URL a bucket path with the settings' endpoint."""
    if is_remote(value):
        return value  # type: ignore[return-value]
    text = os.fspath(value) if not isinstance(value, str) else value
    if "://" not in text:
        return Path(text)
    from upath import UPath

    from crossfit_mlops.settings import get_settings

    return UPath(text, **(settings or get_settings()).storage_options())  # type: ignore[return-value]


def current(folder: Path) -> Path:
    """Where a published folder's files are now.

    Local: the folder itself (it was put in place by one atomic exchange). In a bucket: the version
    that ``<folder>/_CURRENT.json`` names; a folder without that marker (never published, or an
    upload that died half-way) resolves to a path that does not exist, so it reads as absent.
    """
    if not is_remote(folder):
        return folder
    version = _marker(folder).get("version")  # one GET: a file object would fail on a new marker
    return folder / version if version else folder / UNPUBLISHED


def read_parquet(path: Path, **kwargs: Any) -> pd.DataFrame:
    """``pandas.read_parquet`` of a local file or a bucket object."""
    import pandas as pd

    if is_remote(path):
        return pd.read_parquet(str(path), storage_options=dict(path.storage_options), **kwargs)
    return pd.read_parquet(path, **kwargs)


@contextmanager
def local_copy(folder: Path) -> Iterator[Path]:
    """A local folder with ``folder``'s files, for a tool that reads only local files (MLflow's
    ``log_artifacts``): the folder itself when local, else a temporary download removed after."""
    if not is_remote(folder):
        yield Path(folder)
        return
    with tempfile.TemporaryDirectory(prefix="crossfit-download-") as scratch:
        target = Path(scratch) / folder.name
        target.mkdir()
        for file in folder.rglob("*"):
            if file.is_file():
                local = target / file.relative_to(folder).as_posix()
                local.parent.mkdir(parents=True, exist_ok=True)
                folder.fs.get_file(file.path, str(local))
        yield target


def has_files(path: Path) -> bool:
    """``path`` exists: a local file or folder, or in a bucket an object at or under it (an
    object store may keep listing an emptied folder, SeaweedFS does, so a prefix is not enough)."""
    if not is_remote(path):
        return path.exists()
    found = path.fs.find(path.path, detail=True)  # s3fs names the prefix itself a "directory"
    return any(info.get("type") == "file" for info in found.values())


def remove_tree(path: Path) -> None:
    """Remove a folder and everything under it (a bucket prefix: every object under it)."""
    if is_remote(path):
        if path.exists():
            path.fs.rm(path.path, recursive=True)
    else:
        shutil.rmtree(path)


# --- publishing ----------------------------------------------------------------------------------
class PublishError(OSError, RuntimeError):
    """A result could not be written or put in place (a full disk, a vanished folder); the
    previous one (if any) is untouched and no temporary is left. A RuntimeError too, so that the
    callers' "refuse and say why" handling (the CLI's exit 2) covers it."""


class OutputPathError(ValueError):
    """An output path that is not ours to replace: a device, a FIFO, a socket, a symlink, a folder."""


def check_output_file(path: Path, what: str = "the output") -> Path:
    """``path`` if a file may be published there: a new path or an existing regular file.

    Publishing renames a temporary over ``path``: given ``/dev/null``, a FIFO or a symlink it would
    replace the device, the pipe or the link itself. Refused before anything is written, naming
    what is there. The parent folder must be a folder (it is created when missing).
    """
    import stat

    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    kinds = {stat.S_ISLNK: "a symbolic link", stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO",
             stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}  # fmt: skip
    if mode is not None and not stat.S_ISREG(mode):
        kind = next((name for test, name in kinds.items() if test(mode)), "not a regular file")
        raise OutputPathError(f"{what} {path} is {kind}: give a new path or a regular file to replace")
    parent = next((p for p in path.parents if os.path.lexists(p)), None)
    if parent is not None and not parent.is_dir():
        raise OutputPathError(f"{what} {path}: {parent} is not a directory")
    return path


@contextmanager
def publishing(final: Path, *, directory: bool = True, staging: Path | None = None) -> Iterator[Path]:
    """Write a result under a hidden temporary name, then put it in place in one step.

    Yields the temporary path: a new empty directory (``directory=True``) to fill, or a file path
    to write. When the block ends without an error, the temporary replaces ``final``; when it
    raises (a bug, a full disk, a kill), the temporary is removed and ``final`` (the previous good
    result, if any) is untouched. So no reader ever sees a half-written result, and a rerun
    replaces its own output and nothing else.

    ``staging``: the folder that holds the temporary (default: ``final``'s parent; it must be on
    the same file system). Used where ``final``'s folder is read as a whole (a Feast source).

    A directory replaces the previous one in one atomic exchange (Linux ``renameat2``; two
    renames where a file system lacks it); concurrent publishers into the same folder are
    serialized by a lock on that folder (no lock file is left behind), so they neither fail nor
    leave debris. A full disk raises :class:`PublishError` saying so.
    """
    if is_remote(final):
        with _publishing_remote(final, directory) as tmp:
            yield tmp
        return
    final = Path(final)
    if not directory:
        check_output_file(final)  # a rename over a device, a pipe or a link would replace it
    holder = Path(staging) if staging is not None else final.parent
    tmp = holder / f".{final.name}.tmp-{os.getpid()}-{time.time_ns()}"
    try:
        with _disk_errors_explained(final, every_error=True):
            holder.mkdir(parents=True, exist_ok=True)
            final.parent.mkdir(parents=True, exist_ok=True)
            if directory:
                tmp.mkdir()
        with _disk_errors_explained(final):
            yield tmp  # an error of the caller's own (not the disk's) passes unchanged
        if not tmp.exists():
            raise PublishError(errno.ENOENT, f"nothing was written to publish as {final}")
        with _disk_errors_explained(final, every_error=True):
            if tmp.is_dir():
                _replace_directory(tmp, final)
            else:
                os.replace(tmp, final)  # atomic for a file, even over an existing one
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


@contextmanager
def _publishing_remote(final: Path, directory: bool) -> Iterator[Path]:
    """:func:`publishing` into a bucket: the block fills a local scratch folder (the system's temp
    folder, never the state directory); then a file is one PUT (a reader sees the old object or
    the new one), and a folder is uploaded as a new version and made current by its marker."""
    scratch = Path(tempfile.mkdtemp(prefix="crossfit-publish-"))
    tmp = scratch / final.name
    try:
        if directory:
            tmp.mkdir()
        with _disk_errors_explained(final):
            yield tmp
        if not tmp.exists():
            raise PublishError(errno.ENOENT, f"nothing was written to publish as {final}")
        try:
            if tmp.is_dir():
                _upload_version(tmp, final)
            else:
                final.fs.put_file(str(tmp), final.path)
        except OSError as exc:  # s3fs turns the store's refusals into OSErrors
            endpoint = final.storage_options.get("endpoint_url", "AWS S3")
            raise PublishError(
                exc.errno or errno.EIO,
                f"could not publish {final}: the object store at {endpoint} refused the upload ({exc}); "
                "a full or unreachable store, or a key pair without write access to the bucket, ends here. "
                "Nothing was changed there: the previous result, if any, is still the one read, and "
                "no partial upload is ever read",
            ) from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _upload_version(tmp: Path, final: Path) -> None:
    """Upload ``tmp`` as a new version of ``final``, then point the marker at it (one PUT, the
    last write). Under the folder's lock: the marker records the version it replaced; the one
    that version had replaced is removed (a reader that resolved the previous marker may still be
    reading the previous version, so it stays). A version whose marker was never written (an
    uploader killed half-way) is never read, and is removed by a later publish once it is older
    than :data:`ORPHAN_SECONDS` (younger, it may be another publisher's upload in flight).
    An upload that fails removes its own version and leaves the marker as it was."""
    from crossfit_mlops.settings import get_settings

    version = f"v-{time.time_ns()}-{safe_key(socket.gethostname())}-{os.getpid()}"
    target = final / version
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    try:
        for file in files:
            final.fs.put_file(str(file), f"{target.path}/{file.relative_to(tmp).as_posix()}")
    except BaseException:
        with contextlib.suppress(Exception):
            remove_tree(target)
        raise
    with advisory_lock(get_settings().lock_uri, f"publish:{final}"):
        before = _marker(final)
        previous = before.get("version")
        marker = {"version": version, "previous": previous, "files": [p.relative_to(tmp).as_posix() for p in files],
                  "host": socket.gethostname(), "published_at": time.time()}  # fmt: skip
        final.fs.pipe_file((final / CURRENT_FILE).path, json.dumps(marker).encode())
        stale = {before.get("previous")} - {None, version, previous}
        now_ns = time.time_ns()
        for entry in final.iterdir():
            name = entry.name
            if name in stale or (name.startswith("v-") and name not in (version, previous) and _age_s(name, now_ns) > ORPHAN_SECONDS):
                remove_tree(entry)


ORPHAN_SECONDS = 3600.0  # an unmarked version older than this is an uploader's debris, not an upload in flight


def _marker(folder: Path) -> dict[str, Any]:
    try:
        return json.loads(folder.fs.cat_file((folder / CURRENT_FILE).path))
    except FileNotFoundError:
        return {}


def _age_s(version: str, now_ns: int) -> float:
    """Seconds since a version's upload began (its name starts with ``v-<time_ns>``)."""
    try:
        return (now_ns - int(version.split("-")[1])) / 1e9
    except (IndexError, ValueError):
        return 0.0


@contextmanager
def _disk_errors_explained(final: Path, every_error: bool = False) -> Iterator[None]:
    """Turn a full disk (or, with ``every_error``, any OS error) into a :class:`PublishError`."""
    try:
        yield
    except PublishError:
        raise
    except OSError as exc:
        if every_error or is_disk_full(exc):
            raise _publish_error(exc, final) from exc
        raise


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_disk_full(exc: OSError) -> bool:
    """A full disk, a quota or a file too large: the errors no retry can fix."""
    # pyarrow's writers raise OSError without an errno, with the system's message in the text
    return exc.errno in _FULL or "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc)


def _publish_error(exc: OSError, final: Path) -> PublishError:
    """What the user reads when a result cannot be written: what happened, where, what is left."""
    code = exc.errno or (errno.ENOSPC if is_disk_full(exc) else errno.EIO)
    what = "no space left on device" if code in _FULL else (exc.strerror or str(exc))
    return PublishError(
        code,
        f"could not publish {final}: {what} ({exc}); nothing was changed there "
        "(the previous result, if any, is intact) and the temporary output was removed",
    )


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` itself (flock on its descriptor), held for the block."""
    import fcntl

    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


@functools.cache
def _renameat2():
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or a libc without it (glibc < 2.28)
        return None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``, not wrapped by Python's
    os module). False where the kernel or file system does not support it."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(a))


def _replace_directory(tmp: Path, final: Path) -> None:
    """Put ``tmp`` in place of ``final``: one atomic exchange where the system has it (a reader
    always finds a whole result), else two renames (``final`` is briefly absent, never partial)."""
    with _locked(final.parent):
        for stale in final.parent.glob(f".{final.name}.old-*"):  # a crash between the two renames
            shutil.rmtree(stale, ignore_errors=True)
        if final.is_dir() and _exchange(tmp, final):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous result
            return
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.time_ns()}")
        if final.exists():
            final.rename(old)
        try:
            tmp.rename(final)
        except OSError:
            with contextlib.suppress(OSError):
                if old.exists():
                    old.rename(final)  # put the previous result back
            raise
        shutil.rmtree(old, ignore_errors=True)
