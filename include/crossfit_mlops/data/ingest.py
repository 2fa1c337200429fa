"""Ingest: make a raw snapshot exist, from a :class:`~crossfit_mlops.data.sources.RawSource`.

A snapshot is written once (``athletes.csv`` + ``manifest.json``, published together) and never
rewritten: raw inputs are immutable, so a rerun reuses what is there.
"""

from __future__ import annotations

import json
import logging

from crossfit_mlops.data.sources import ProvidedFile, RawSource, Simulator
from crossfit_mlops.data.vocabulary import FULL_SIZE
from crossfit_mlops.settings import Settings, get_settings
from crossfit_mlops.storage import (
    MANIFEST_FILE,
    RAW_FILE,
    Catalog,
    RawSnapshot,
    publishing,
    sha256_of,
)

log = logging.getLogger(__name__)


def raw_source(
    snapshot_id: str, settings: Settings, rows: int = FULL_SIZE, seed: int = 42, season_shift: float = 0.0
) -> RawSource:
    """The source a new snapshot comes from: the provided file if there is one, else the simulator."""
    if settings.raw_file_override.is_file():
        return ProvidedFile(settings.raw_file_override)
    return Simulator(snapshot_id, rows=rows, seed=seed, season_shift=season_shift)


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
    catalog = Catalog(settings)
    if catalog.raw_file(snapshot_id).is_file() and catalog.raw_manifest_file(snapshot_id).is_file():
        manifest = catalog.raw_manifest(snapshot_id)
        log.info("raw snapshot %s exists (%s), reusing it", snapshot_id, manifest.source)
        return manifest
    source = source or raw_source(snapshot_id, settings, rows=rows, seed=seed, season_shift=season_shift)
    with publishing(catalog.raw_dir(snapshot_id)) as tmp:
        recorded = source.write(tmp / RAW_FILE)
        snapshot = RawSnapshot(
            snapshot_id=snapshot_id,
            path=str(catalog.raw_file(snapshot_id)),
            sha256=sha256_of(tmp / RAW_FILE),
            source=source.kind,
            **recorded,
        )
        (tmp / MANIFEST_FILE).write_text(json.dumps(snapshot.as_dict(), indent=2))
    log.info("raw snapshot %s from %s", snapshot_id, source.describe())
    return snapshot


def load_raw_manifest(snapshot_id: str, settings: Settings | None = None) -> RawSnapshot:
    return Catalog(settings or get_settings()).raw_manifest(snapshot_id)
