"""Ingest: make a raw snapshot exist, from a :class:`~crossfit_mlops.data.sources.RawSource`.

A snapshot is written once (``athletes.csv`` + ``manifest.json``, published together) and never
rewritten: raw inputs are immutable, so a rerun reuses what is there. Ingest holds the snapshot's
lock, so two runs asking for one new snapshot write it once.

Where a new snapshot comes from is decided here and recorded (the manifest's ``source`` and
``origin``, and the log): ``CROSSFIT_RAW_FILE`` when it is set, and then it must be a readable file
(never a silent fall back to generated data); else the drop-in file ``<state>/data/raw/athletes.csv``
if one is there; else the simulator.
"""

from __future__ import annotations

import json
import logging
import os

from crossfit_mlops.data.sources import ProvidedFile, RawSource, RawSourceError, Simulator
from crossfit_mlops.data.vocabulary import FULL_SIZE, MAX_ATHLETE_ID
from crossfit_mlops.settings import Settings, get_settings
from crossfit_mlops.storage import (
    MANIFEST_FILE,
    RAW_FILE,
    Catalog,
    RawSnapshot,
    check_snapshot_id,
    is_remote,
    publishing,
    sha256_of,
    snapshot_lock,
)

log = logging.getLogger(__name__)


def provided_file(settings: Settings) -> ProvidedFile | None:
    """The provided raw file, None if there is none, or :class:`RawSourceError` if it is unusable.

    ``CROSSFIT_RAW_FILE`` set: that path must be a readable file. Not set: the drop-in path is used
    when something is there (and then it too must be a readable file), else None.
    """
    path = settings.raw_file_override
    if settings.raw_file_from_env:
        where = f"CROSSFIT_RAW_FILE={path}"
        fix = "point it at an existing athletes.csv, or unset it to generate the snapshot"
    elif not path.exists():
        return None
    else:
        where = f"the drop-in raw file {path}"
        fix = "replace it with a readable athletes.csv, or remove it to generate the snapshot"
    if not path.exists():
        raise RawSourceError(f"{where}: no such file; {fix}")
    if not path.is_file():
        raise RawSourceError(f"{where}: not a regular file; {fix}")
    if not is_remote(path) and not os.access(path, os.R_OK):  # a bucket object: its GET will say
        raise RawSourceError(f"{where}: not readable by this user; {fix}")
    return ProvidedFile(path)


def raw_source(
    snapshot_id: str, settings: Settings, rows: int = FULL_SIZE, seed: int = 42, season_shift: float = 0.0
) -> RawSource:
    """The source a new snapshot comes from: the provided file if there is one, else the simulator."""
    provided = provided_file(settings)
    if provided is not None:
        return provided
    log.info(
        "no provided raw file (CROSSFIT_RAW_FILE is not set and %s does not exist): "
        "snapshot %s will be generated", settings.raw_file_override, snapshot_id,
    )
    # more rows than the real file's id range holds: a scale run, its ids beyond the real data (the
    # manifest's origin says so); up to that range the ids are the real range's, as always
    from crossfit_mlops.data.generate import id_space_for

    space = MAX_ATHLETE_ID if rows <= MAX_ATHLETE_ID else id_space_for(rows)
    return Simulator(snapshot_id, rows=rows, seed=seed, season_shift=season_shift, max_athlete_id=space)


def ingest_snapshot(
    snapshot_id: str,
    rows: int = FULL_SIZE,
    seed: int = 42,
    settings: Settings | None = None,
    season_shift: float = 0.0,
    source: RawSource | None = None,
) -> RawSnapshot:
    """Make the raw snapshot ``snapshot_id`` exist and return its manifest.

    An existing snapshot is reused untouched. Otherwise ``source`` writes it (default:
    :func:`raw_source`, which uses ``rows``, ``seed`` and ``season_shift`` for the simulator).
    """
    settings = settings or get_settings()
    check_snapshot_id(snapshot_id)  # before anything is written
    catalog = Catalog(settings)
    if source is None:  # checked even when the snapshot exists: a wrong setting is an error anyway
        provided = provided_file(settings)
    with snapshot_lock(settings, snapshot_id):
        if catalog.raw_file(snapshot_id).is_file() and catalog.raw_manifest_file(snapshot_id).is_file():
            manifest = catalog.raw_manifest(snapshot_id)
            log.info("raw snapshot %s exists (%s: %s), reusing it", snapshot_id, manifest.source, manifest.origin)
            return manifest
        if source is None:
            source = provided or raw_source(snapshot_id, settings, rows=rows, seed=seed, season_shift=season_shift)
        with publishing(catalog.raw_dir(snapshot_id)) as tmp:
            recorded = source.write(tmp / RAW_FILE)
            snapshot = RawSnapshot(
                snapshot_id=snapshot_id,
                path=RAW_FILE,  # relative to the snapshot's folder: the state folder may move
                sha256=sha256_of(tmp / RAW_FILE),
                source=source.kind,
                origin=source.describe(),
                **recorded,
            )
            (tmp / MANIFEST_FILE).write_text(json.dumps(snapshot.as_dict(), indent=2))
    log.info("raw snapshot %s from %s", snapshot_id, source.describe())
    return catalog.raw_manifest(snapshot_id)


def load_raw_manifest(snapshot_id: str, settings: Settings | None = None) -> RawSnapshot:
    return Catalog(settings or get_settings()).raw_manifest(snapshot_id)
