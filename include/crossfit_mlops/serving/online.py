"""Online features for serving: Feast's online store through the champion's FeatureService.

Feast answers a lookup of an athlete it has no row for with None values, and does not check a
feature view's TTL on online reads. Serving must never predict on either, so this module tells
these cases apart:

- the features are there and fresh: values in the model's column order plus their timestamp;
- the athlete is **unknown**: no feature table of that version has ever had them
  (:class:`UnknownAthletes`, HTTP 404);
- the athlete is known but the online store has **no row** for them (or no table at all: nothing
  was materialized), or the row is **older than the feature view's TTL**
  (:class:`FeaturesUnavailable`, HTTP 424): materialize a newer snapshot;
- the store cannot answer at all (registry file gone, database unreadable, Redis down):
  :class:`FeatureStoreUnavailable` (HTTP 503), never a 500.

The online store is asked first; only the athletes it has no fresh row for are looked up in
:class:`KnownAthletes`, an in-memory index of the offline feature tables, to tell 404 from 424.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crossfit_mlops.features.specs import FEATURE_TTL, feature_set
from crossfit_mlops.settings import Settings
from crossfit_mlops.storage import ENTITY_KEY, Catalog, is_remote, read_parquet

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)


class UnknownAthletes(LookupError):
    def __init__(self, athlete_ids: list[int], feature_version: str, unreadable: list[str] | None = None):
        self.athlete_ids = athlete_ids
        self.feature_version = feature_version
        self.unreadable = unreadable or []  # feature tables the index could not read
        caveat = f" (not indexed, unreadable: {', '.join(self.unreadable)})" if self.unreadable else ""
        super().__init__(
            f"unknown athlete_id {', '.join(map(str, athlete_ids))}: not in any {feature_version} feature snapshot"
            + caveat
        )


class FeatureStoreUnavailable(RuntimeError):
    """The online store could not answer at all (not: it has no row for an athlete)."""

    def __init__(self, reason: str, feature_version: str):
        self.reason = reason
        self.feature_version = feature_version
        super().__init__(f"the feature store cannot serve {feature_version} features: {reason}")


class FeaturesUnavailable(LookupError):
    def __init__(self, problems: dict[int, str], feature_version: str):
        self.problems = problems  # athlete_id -> "missing" | "expired (features of ...)"
        self.feature_version = feature_version
        detail = "; ".join(f"athlete_id {k}: {v}" for k, v in problems.items())
        super().__init__(
            f"online {feature_version} features unavailable ({detail}): materialize a current snapshot"
        )


@dataclass(frozen=True)
class AthleteFeatures:
    athlete_id: int
    values: list[float]  # in the requested column order
    event_timestamp: datetime


def _columns_of(response, columns: tuple[str, ...]) -> tuple[dict[str, list[float | None]], list[int]]:
    """Numeric values per column (None where Feast has no value) and each row's event time (epoch
    seconds, 0 = no row), read from the response's protobuf.

    Same content as ``response.to_dict(include_event_timestamps=True)``, without converting all
    features through Feast's generic type map: that conversion is about a third of a single-athlete
    lookup (0.3 of 0.8 ms here), and serving needs only floats.
    """
    proto = response.proto
    index_of = {name: i for i, name in enumerate(proto.metadata.feature_names.val)}
    values: dict[str, list[float | None]] = {}
    for name in columns:
        vector = proto.results[index_of[name]]
        column = []
        for value in vector.values:
            kind = value.WhichOneof("val")
            column.append(None if kind is None or kind == "null_val" else float(getattr(value, kind)))
        values[name] = column
    stamps = [ts.seconds for ts in proto.results[index_of[columns[0]]].event_timestamps]
    return values, stamps


@dataclass(frozen=True)
class _Table:
    signature: tuple  # (inode, size, mtime ns), in a bucket (ETag, size, modified): a rewritten file differs
    ids: frozenset[int]
    problem: str | None = None  # why it could not be read


class KnownAthletes:
    """Athlete ids of every snapshot's feature table of a version: an index in memory.

    Built on first use. A lookup miss lists the folder again, at most once every
    ``rescan_seconds``, and reads only the files that are new or changed since: an unknown id
    costs a set lookup, not a read of every table. A file that cannot be read (corrupt,
    truncated) is left out of the index and reported by :meth:`problems` until it changes; it
    never fails a request.
    """

    def __init__(self, settings: Settings, rescan_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.rescan_seconds = rescan_seconds
        self.clock = clock
        self._tables: dict[str, dict[str, _Table]] = {}
        self._ids: dict[str, frozenset[int]] = {}
        self._scanned_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, version: str) -> frozenset[int]:
        ids = self._ids.get(version)
        return ids if ids is not None else self.load(version)

    def refresh(self, version: str) -> frozenset[int]:
        """The index, after listing the folder again if the last listing is ``rescan_seconds`` old."""
        scanned = self._scanned_at.get(version)
        if scanned is None or self.clock() - scanned >= self.rescan_seconds:
            return self.load(version)
        return self._ids[version]

    def problems(self, version: str) -> dict[str, str]:
        """Feature tables of ``version`` left out of the index: file name -> why."""
        return {name: t.problem for name, t in self._tables.get(version, {}).items() if t.problem}

    def load(self, version: str) -> frozenset[int]:
        """List the version's folder; read only the files that are new or changed since last time."""
        with self._lock:
            folder = Catalog(self.settings).feature_table_dir(feature_set(version).view_name)
            before = self._tables.get(version, {})
            tables = {}
            for name, path, signature in _parquet_files(folder):
                known = before.get(name)
                tables[name] = known if known and known.signature == signature else _read_ids(path, signature)
            unchanged = tables.keys() == before.keys() and all(tables[n] is before[n] for n in tables)
            if version not in self._ids or not unchanged:
                self._ids[version] = frozenset().union(*(t.ids for t in tables.values()))
            self._tables[version] = tables
            self._scanned_at[version] = self.clock()
            return self._ids[version]


def _parquet_files(folder: Path) -> list[tuple[str, Path, tuple]]:
    """``(name, path, signature)`` of each feature table in the folder (local or in a bucket)."""
    def wanted(name: str) -> bool:
        return name.endswith(".parquet") and not name.startswith(".")

    try:
        if is_remote(folder):
            listing = folder.fs.ls(folder.path, detail=True, refresh=True)
            return [
                (name, folder / name, (str(item.get("ETag")), int(item.get("size") or 0), str(item.get("LastModified"))))
                for item in listing
                if item.get("type") == "file" and wanted(name := item["name"].rsplit("/", 1)[-1])
            ]
        with os.scandir(folder) as entries:
            return [
                (e.name, Path(e.path), (e.stat().st_ino, e.stat().st_size, e.stat().st_mtime_ns))
                for e in entries if wanted(e.name) and e.is_file()
            ]
    except FileNotFoundError:
        return []


def _read_ids(path: Path, signature: tuple) -> _Table:
    try:
        return _Table(signature, frozenset(read_parquet(path, columns=[ENTITY_KEY])[ENTITY_KEY].tolist()))
    except Exception as exc:  # a corrupt or half-written file: leave it out, say so, keep serving
        problem = f"{type(exc).__name__}: {str(exc)[:200]}"
        log.warning("feature table %s left out of the athlete index: %s", path, problem)
        return _Table(signature, frozenset(), problem)


def _no_table(exc: Exception) -> bool:
    """The SQLite online store has no table for the view: nothing was ever materialized into it."""
    return isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc)


class OnlineFeatureReader:
    """Reads one FeatureService's features for athletes from the online store.

    Args:
        store: the Feast store (the caller owns it; one per process).
        known: the athletes of the offline feature tables.
        clock: "now" for the TTL check (injected by tests).
        ttl: the feature views' TTL.

    :attr:`on_read`, when set, is told of every :meth:`read`: ``(feature_version, athletes asked,
    unknown, unavailable)`` (the API's metrics).
    """

    def __init__(
        self,
        store: FeatureStore,
        known: KnownAthletes,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        ttl: timedelta = FEATURE_TTL,
    ):
        self.store = store
        self.known = known
        self.clock = clock
        self.ttl = ttl
        self._services: dict[str, Any] = {}
        self.on_read: Callable[[str, int, int, int], None] | None = None

    def service(self, version: str):
        service = self._services.get(version)
        if service is None:
            service = self.store.get_feature_service(feature_set(version).service_name)
            self._services[version] = service
        return service

    def _online(self, athlete_ids: list[int], version: str, columns: tuple[str, ...]):
        """Values and stamps from the store (see :func:`_columns_of`); None when it has no table."""
        try:
            response = self.store.get_online_features(
                features=self.service(version), entity_rows=[{ENTITY_KEY: i} for i in athlete_ids]
            )
        except Exception as exc:  # whatever the store's failure is: a 503 that says it, never a 500
            if _no_table(exc):
                return None
            raise FeatureStoreUnavailable(f"{type(exc).__name__}: {str(exc)[:300]}", version) from exc
        return _columns_of(response, columns)

    def check(self, version: str, columns: tuple[str, ...]) -> str | None:
        """None when the store answers a lookup the way ``read`` makes it; else why it cannot."""
        try:
            answer = self._online([0], version, columns[:1])
        except FeatureStoreUnavailable as exc:
            return str(exc)
        if answer is None:
            return f"the online store has no {feature_set(version).view_name} table: materialize a snapshot"
        return None

    def read(self, athlete_ids: list[int], version: str, columns: tuple[str, ...]) -> list[AthleteFeatures]:
        """Fresh feature rows for ``athlete_ids`` (same order), or a typed error naming the ids."""
        answer = self._online(athlete_ids, version, columns)
        if answer is None:
            view = feature_set(version).view_name
            rows, problems = [], dict.fromkeys(athlete_ids, f"the online store has no {view} table: nothing materialized")
        else:
            rows, problems = self._fresh_rows(athlete_ids, columns, *answer)
        if problems:
            known = self.known.get(version)
            if any(i not in known for i in problems):  # the tables may have grown since: look again
                known = self.known.refresh(version)
            unknown = [i for i in problems if i not in known]
            self._told(version, len(athlete_ids), len(unknown), len(problems) - len(unknown))
            if unknown:
                raise UnknownAthletes(unknown, version, sorted(self.known.problems(version)))
            raise FeaturesUnavailable(problems, version)
        self._told(version, len(athlete_ids), 0, 0)
        return rows

    def _told(self, version: str, asked: int, unknown: int, unavailable: int) -> None:
        if self.on_read is not None:
            self.on_read(version, asked, unknown, unavailable)

    def _fresh_rows(self, athlete_ids, columns, values_of, stamps_of) -> tuple[list[AthleteFeatures], dict[int, str]]:
        oldest_allowed = self.clock() - self.ttl
        rows, problems = [], {}
        for index, athlete_id in enumerate(athlete_ids):
            values = [values_of[c][index] for c in columns]
            seconds = stamps_of[index]
            if seconds == 0 or any(v is None for v in values):
                missing = [c for c, v in zip(columns, values, strict=True) if v is None]
                problems[athlete_id] = "no row in the online store" if seconds == 0 else f"missing {missing}"
                continue
            stamp = datetime.fromtimestamp(seconds, UTC)
            if stamp < oldest_allowed:
                problems[athlete_id] = (
                    f"expired: features of {stamp.isoformat()} are older than the {self.ttl.days}-day TTL"
                )
                continue
            rows.append(AthleteFeatures(athlete_id, values, stamp))
        return rows, problems


def available_snapshots(settings: Settings, version: str) -> list[str]:
    """Snapshot ids that have a feature table of ``version``, oldest first."""
    return Catalog(settings).feature_snapshots(feature_set(version).view_name)


def example_athlete(settings: Settings, version: str = "v1") -> int | None:
    """One athlete id of the newest feature table (for the examples start-all prints)."""
    snapshots = available_snapshots(settings, version)
    if not snapshots:
        return None
    table = Catalog(settings).feature_table_file(feature_set(version).view_name, snapshots[-1])
    ids = read_parquet(table, columns=[ENTITY_KEY])[ENTITY_KEY].tolist()
    return int(ids[0]) if ids else None
