"""The data stage's edges: ingest a raw snapshot, validate and clean it, write keyed outputs.

Layout under the state directory (see :mod:`crossfit_mlops.settings`)::

    data/raw/snapshot=<id>/athletes.csv          immutable input (generated, or a real file copied)
    data/raw/snapshot=<id>/manifest.json         source, rows, sha256
    data/processed/snapshot=<id>/
        athletes_clean.parquet                   one row per athlete, with event_timestamp
        labels.parquet                           athlete_id, event_timestamp, total_lift
        quarantine.parquet                       raw rows that break a contract rule (+ rule, value)
        rejected.parquet                         valid rows the cleaning left out (+ rule, detail)
        validation_report.json                   counts per rule, rows in/out, status

Every output directory is written to a temporary sibling and renamed into place, so a failed run
never leaves a half-written result. When the valid share falls below the floor, the report and the
quarantine are still published (status "failed") but no cleaned data is, and :class:`ValidationFloorError`
is raised.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from crossfit_mlops.data.clean import ENTITY_KEY, EVENT_TIMESTAMP, TARGET, clean_rows
from crossfit_mlops.data.contract import check_rows, read_raw
from crossfit_mlops.data.generate import FULL_SIZE, write_snapshot
from crossfit_mlops.settings import Settings, check_snapshot_id, get_settings

log = logging.getLogger(__name__)

CLEAN_FILE = "athletes_clean.parquet"
LABELS_FILE = "labels.parquet"
QUARANTINE_FILE = "quarantine.parquet"
REJECTED_FILE = "rejected.parquet"
REPORT_FILE = "validation_report.json"


class ValidationFloorError(RuntimeError):
    """Too few rows passed the raw contract: the snapshot is not trusted."""


@dataclass(frozen=True)
class RawSnapshot:
    snapshot_id: str
    path: str
    sha256: str
    source: str  # "generated" | "provided"
    rows: int | None
    seed: int | None = None  # generator seed, for generated snapshots
    season_shift: float = 0.0  # the generator's simulated later season (0 = none)


@dataclass(frozen=True)
class CleanedSnapshot:
    snapshot_id: str
    directory: str
    clean_path: str
    labels_path: str
    report_path: str
    rows_out: int
    valid_share: float


def snapshot_time(snapshot_id: str) -> pd.Timestamp:
    """The event time of a snapshot: midnight UTC of its date."""
    return pd.Timestamp(check_snapshot_id(snapshot_id), tz="UTC")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish_dir(tmp: Path, final: Path) -> None:
    """Replace ``final`` by the fully written ``tmp`` directory."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def tmp_dir_for(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{time.time_ns()}")
    tmp.mkdir()
    return tmp


def ingest_snapshot(
    snapshot_id: str,
    rows: int = FULL_SIZE,
    seed: int = 42,
    settings: Settings | None = None,
    season_shift: float = 0.0,
) -> RawSnapshot:
    """Make the raw snapshot ``snapshot_id`` exist and return where it is.

    An existing snapshot is reused untouched (raw inputs are immutable). Otherwise a real file at
    ``settings.raw_file_override`` is copied byte for byte, or a snapshot is generated
    (``season_shift``: see :func:`crossfit_mlops.data.generate.generate_frame`).
    """
    settings = settings or get_settings()
    target = settings.raw_snapshot_file(snapshot_id)
    manifest_path = target.with_name("manifest.json")
    if target.is_file() and manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        log.info("raw snapshot %s exists (%s), reusing it", snapshot_id, manifest["source"])
        return RawSnapshot(**manifest)

    tmp = tmp_dir_for(target.parent)
    try:
        if settings.raw_file_override.is_file():
            shutil.copyfile(settings.raw_file_override, tmp / target.name)
            source, row_count, used_seed, shift = "provided", None, None, 0.0
            log.info("using the provided raw file %s unchanged", settings.raw_file_override)
        else:
            write_snapshot(tmp / target.name, rows=rows, seed=seed, snapshot_id=snapshot_id, season_shift=season_shift)
            source, row_count, used_seed, shift = "generated", rows, seed, float(season_shift)
        snapshot = RawSnapshot(
            snapshot_id=snapshot_id,
            path=str(target),
            sha256=sha256_of(tmp / target.name),
            source=source,
            rows=row_count,
            seed=used_seed,
            season_shift=shift,
        )
        (tmp / manifest_path.name).write_text(json.dumps(asdict(snapshot), indent=2))
        publish_dir(tmp, target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return snapshot


def load_raw_manifest(snapshot_id: str, settings: Settings | None = None) -> RawSnapshot:
    settings = settings or get_settings()
    manifest_path = settings.raw_snapshot_file(snapshot_id).with_name("manifest.json")
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no raw snapshot {snapshot_id} at {manifest_path.parent}: ingest it first")
    return RawSnapshot(**json.loads(manifest_path.read_text()))


def validate_and_clean(
    snapshot_id: str,
    settings: Settings | None = None,
    min_valid_share: float | None = None,
) -> CleanedSnapshot:
    """Validate the raw snapshot against the contract, quarantine bad rows, clean the rest."""
    settings = settings or get_settings()
    floor = settings.min_valid_share if min_valid_share is None else min_valid_share
    raw_meta = load_raw_manifest(snapshot_id, settings)
    raw_path = Path(raw_meta.path)
    started = time.perf_counter()

    raw = read_raw(raw_path)
    failures = check_rows(raw.frame)
    bad_rows = failures["row_number"].unique()
    frame = raw.frame
    is_bad = frame["row_number"].isin(bad_rows)
    rows_in = len(frame)
    valid_share = 1.0 - len(bad_rows) / rows_in
    quarantine = failures.merge(frame, on="row_number", how="left")

    final = settings.processed_snapshot_dir(snapshot_id)
    tmp = tmp_dir_for(final)
    try:
        quarantine.to_parquet(tmp / QUARANTINE_FILE, index=False)
        report = {
            "snapshot_id": snapshot_id,
            "raw_file": str(raw_path),
            "raw_sha256": raw_meta.sha256,
            "raw_source": raw_meta.source,
            "columns_reordered": raw.reordered_columns,
            "rows_in": rows_in,
            "rows_quarantined": int(len(bad_rows)),
            "valid_share": round(valid_share, 6),
            "min_valid_share": floor,
            "contract_failures_per_rule": failures["rule"].value_counts().sort_index().to_dict(),
        }
        if valid_share < floor:
            report.update(status="failed", reason=f"valid share {valid_share:.4f} is below the floor {floor}")
            (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2))
            publish_dir(tmp, final)
            raise ValidationFloorError(
                f"{raw_path}: only {valid_share:.2%} of {rows_in} rows pass the raw contract "
                f"(floor {floor:.2%}); see {final / REPORT_FILE} and {final / QUARANTINE_FILE}"
            )

        result = clean_rows(frame.loc[~is_bad].reset_index(drop=True), snapshot_time(snapshot_id))
        result.clean.to_parquet(tmp / CLEAN_FILE, index=False)
        result.clean[[ENTITY_KEY, EVENT_TIMESTAMP, TARGET]].to_parquet(tmp / LABELS_FILE, index=False)
        result.rejected.to_parquet(tmp / REJECTED_FILE, index=False)
        report.update(
            status="ok",
            cleaning=result.counts,
            rows_out=len(result.clean),
            share_out=round(len(result.clean) / rows_in, 6),
            seconds=round(time.perf_counter() - started, 3),
        )
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2))
        publish_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info(
        "snapshot %s: %d rows in, %d quarantined, %d clean", snapshot_id, rows_in, len(bad_rows), len(result.clean)
    )
    return CleanedSnapshot(
        snapshot_id=snapshot_id,
        directory=str(final),
        clean_path=str(final / CLEAN_FILE),
        labels_path=str(final / LABELS_FILE),
        report_path=str(final / REPORT_FILE),
        rows_out=len(result.clean),
        valid_share=valid_share,
    )


def load_clean(snapshot_id: str, settings: Settings | None = None) -> pd.DataFrame:
    settings = settings or get_settings()
    directory = settings.processed_snapshot_dir(snapshot_id)
    path = directory / CLEAN_FILE
    if not path.is_file():
        report = directory / REPORT_FILE
        why = ""
        if report.is_file():
            why = f" (validation status: {json.loads(report.read_text()).get('status')}, see {report})"
        raise FileNotFoundError(f"no cleaned data for snapshot {snapshot_id} at {path}{why}")
    return pd.read_parquet(path)
