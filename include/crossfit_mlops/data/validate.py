"""Validate a raw snapshot against the contract, quarantine what breaks it, clean the rest.

Outputs (``data/processed/snapshot=<id>/``, published together, see :mod:`crossfit_mlops.storage`):
``athletes_clean.parquet`` (one row per athlete, with event_timestamp), ``labels.parquet``
(athlete_id, event_timestamp, total_lift), ``quarantine.parquet`` (raw rows that break a contract
rule, with the rule and value), ``rejected.parquet`` (valid rows the cleaning left out, with the
rule and detail), ``validation_report.json`` (counts per rule, rows in/out, status).

A failed validation leaves nothing downstream that a later step could mistake for good: when the
raw file is unusable (:class:`~crossfit_mlops.data.schema.RawFileError`, including bytes that
changed since ingest), when the valid share falls below the floor, or when too few athletes are
left to train on, the report (status "failed", with the reason) and the quarantine are published,
no cleaned data or labels are, the snapshot's feature tables and training sets are removed, and
the error is raised. The builders downstream refuse a snapshot whose report is not "ok".

Validation holds the snapshot's lock (:func:`~crossfit_mlops.storage.snapshot_lock`): two runs
never judge one snapshot at once.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from crossfit_mlops.data.clean import CleanResult, clean_rows
from crossfit_mlops.data.schema import ATHLETE_ID_RANGE_RULE, RawFileError, check_rows, read_raw
from crossfit_mlops.settings import Settings, check_min_rows, check_share, get_settings
from crossfit_mlops.storage import (
    CLEAN_FILE,
    ENTITY_KEY,
    EVENT_TIMESTAMP,
    LABELS_FILE,
    QUARANTINE_FILE,
    REJECTED_FILE,
    REPORT_FILE,
    TARGET,
    Catalog,
    RawSnapshot,
    current,
    has_files,
    location,
    publishing,
    snapshot_lock,
    snapshot_time,
)

log = logging.getLogger(__name__)


class ValidationFloorError(RuntimeError):
    """Too few rows passed the raw contract: the snapshot is not trusted."""


class SnapshotTooSmallError(ValidationFloorError):
    """Too few athletes are left after cleaning to train and judge a model on."""


@dataclass(frozen=True)
class CleanedSnapshot:
    snapshot_id: str
    directory: str
    clean_path: str
    labels_path: str
    report_path: str
    rows_out: int
    valid_share: float


@dataclass(frozen=True)
class ContractCheck:
    """The raw rows, which of them break a rule, and the quarantine (failures + the full raw row)."""

    frame: pd.DataFrame
    quarantine: pd.DataFrame
    is_bad: pd.Series
    rows_bad: int
    reordered_columns: bool
    stripped_header_cells: tuple[str, ...] = ()

    @property
    def valid_share(self) -> float:
        return 1.0 - self.rows_bad / len(self.frame)


def check_contract(raw_path: Path, expected_sha256: str | None = None) -> ContractCheck:
    raw = read_raw(raw_path, expected_sha256=expected_sha256)
    failures = check_rows(raw.frame)
    if raw.oversized_ids:  # report such ids as written, not as the float they round to
        rule = failures["rule"] == ATHLETE_ID_RANGE_RULE
        failures.loc[rule, "value"] = failures.loc[rule, "row_number"].map(raw.oversized_ids)
    bad_rows = failures["row_number"].unique()
    return ContractCheck(
        frame=raw.frame,
        quarantine=_with_raw_rows(failures, raw.frame),
        is_bad=raw.frame["row_number"].isin(bad_rows),
        rows_bad=len(bad_rows),
        reordered_columns=raw.reordered_columns,
        stripped_header_cells=raw.stripped_header_cells,
    )


def _with_raw_rows(failures: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Each failure with its whole raw row. ``row_number`` n is the frame's n-th row, so the rows
    are taken by position (a join on row_number hashed all 423,006 rows for the same result)."""
    rows = frame.drop(columns="row_number").iloc[failures["row_number"].to_numpy() - 1]
    return pd.concat([failures.reset_index(drop=True), rows.reset_index(drop=True)], axis=1)


def _raw_part(snapshot_id: str, raw: RawSnapshot) -> dict[str, Any]:
    return {
        "snapshot_id": snapshot_id,
        "raw_file": raw.path,
        "raw_sha256": raw.sha256,
        "raw_source": raw.source,
        "raw_origin": raw.origin,
    }


def _report(snapshot_id: str, raw: RawSnapshot, check: ContractCheck, floor: float, min_rows: int) -> dict[str, Any]:
    return {
        **_raw_part(snapshot_id, raw),
        "columns_reordered": check.reordered_columns,
        "header_cells_stripped": list(check.stripped_header_cells),
        "rows_in": len(check.frame),
        "rows_quarantined": int(check.rows_bad),
        "valid_share": round(check.valid_share, 6),
        "min_valid_share": floor,
        "min_clean_rows": min_rows,
        "contract_failures_per_rule": check.quarantine["rule"].value_counts().sort_index().to_dict(),
    }


def _write_clean(folder: Path, result: CleanResult) -> None:
    result.clean.to_parquet(folder / CLEAN_FILE, index=False)
    result.clean[[ENTITY_KEY, EVENT_TIMESTAMP, TARGET]].to_parquet(folder / LABELS_FILE, index=False)
    result.rejected.to_parquet(folder / REJECTED_FILE, index=False)


def _publish_failure(
    catalog: Catalog, snapshot_id: str, report: dict[str, Any], reason: str, check: ContractCheck | None = None,
    rejected: pd.DataFrame | None = None,
) -> None:
    """Publish the failed report (and what was found), drop the snapshot's clean data and labels
    (the processed folder is replaced as a whole), then everything built on them."""
    downstream = [*catalog.feature_tables_of(snapshot_id), catalog.training_sets_of(snapshot_id)]
    report = {**report, "status": "failed", "reason": reason, "removed_downstream": [str(p) for p in downstream if has_files(p)]}
    with publishing(catalog.processed_dir(snapshot_id)) as tmp:
        if check is not None:
            check.quarantine.to_parquet(tmp / QUARANTINE_FILE, index=False)
        if rejected is not None:
            rejected.to_parquet(tmp / REJECTED_FILE, index=False)
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2))
    removed = catalog.remove_downstream(snapshot_id)
    log.error("snapshot %s failed validation: %s (removed downstream: %s)", snapshot_id, reason, removed or "nothing")


def _checked_contract(catalog: Catalog, snapshot_id: str, raw: RawSnapshot) -> ContractCheck:
    """The contract check of the raw file, or (unusable file) a published failure and the error."""
    try:
        return check_contract(location(raw.path, catalog.settings), expected_sha256=raw.sha256)
    except RawFileError as exc:
        report = {**_raw_part(snapshot_id, raw), "raw_file_error": exc.kind}
        _publish_failure(catalog, snapshot_id, report, f"the raw file is unusable: {exc}")
        raise


def _raw_manifest(catalog: Catalog, snapshot_id: str) -> RawSnapshot:
    """The manifest; if the raw snapshot is gone, outputs derived from it are no longer good."""
    try:
        return catalog.raw_manifest(snapshot_id)
    except FileNotFoundError as exc:
        if has_files(catalog.processed_dir(snapshot_id)):
            report = {"snapshot_id": snapshot_id, "raw_file_error": "missing_snapshot"}
            _publish_failure(catalog, snapshot_id, report, str(exc))
        raise


def validate_and_clean(
    snapshot_id: str,
    settings: Settings | None = None,
    min_valid_share: float | None = None,
    min_clean_rows: int | None = None,
) -> CleanedSnapshot:
    """Validate the raw snapshot against the contract, quarantine bad rows, clean the rest.

    ``min_valid_share`` (default: ``CROSSFIT_MIN_VALID_SHARE``) is the floor on the share of raw
    rows that pass the contract; ``min_clean_rows`` (default: ``CROSSFIT_MIN_CLEAN_ROWS``) the
    fewest clean athletes the snapshot must keep to be trained on.
    """
    settings = settings or get_settings()
    catalog = Catalog(settings)
    floor = settings.min_valid_share if min_valid_share is None else min_valid_share
    floor = check_share(floor, "min_valid_share (--min-valid-share)")
    min_rows = check_min_rows(settings.min_clean_rows if min_clean_rows is None else min_clean_rows, "min_clean_rows")
    with snapshot_lock(settings, snapshot_id):
        raw = _raw_manifest(catalog, snapshot_id)
        started = time.perf_counter()
        check = _checked_contract(catalog, snapshot_id, raw)
        report = _report(snapshot_id, raw, check, floor, min_rows)
        final = catalog.processed_dir(snapshot_id)
        if check.valid_share < floor:
            reason = f"valid share {check.valid_share:.4f} is below the floor {floor}"
            _publish_failure(catalog, snapshot_id, report, reason, check)
            raise ValidationFloorError(
                f"{raw.path}: only {check.valid_share:.2%} of {len(check.frame)} rows pass the raw contract "
                f"(floor {floor:.2%}); see {current(final) / REPORT_FILE} and {current(final) / QUARANTINE_FILE}"
            )
        result = clean_rows(check.frame.loc[~check.is_bad], snapshot_time(snapshot_id))
        report.update(cleaning=result.counts, rows_out=len(result.clean), share_out=round(len(result.clean) / len(check.frame), 6))
        if len(result.clean) < min_rows:
            reason = f"only {len(result.clean)} clean athletes, fewer than the {min_rows} needed to train on"
            _publish_failure(catalog, snapshot_id, report, reason, check, result.rejected)
            raise SnapshotTooSmallError(
                f"{raw.path}: {reason} (CROSSFIT_MIN_CLEAN_ROWS); see {current(final) / REPORT_FILE}"
            )
        report.update(status="ok", seconds=round(time.perf_counter() - started, 3))
        with publishing(final) as tmp:
            check.quarantine.to_parquet(tmp / QUARANTINE_FILE, index=False)
            _write_clean(tmp, result)
            (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2))
        published = current(final)  # in a bucket: the version just made current
    log.info("snapshot %s: %d rows in, %d quarantined, %d clean", snapshot_id, len(check.frame), check.rows_bad, len(result.clean))
    return CleanedSnapshot(
        snapshot_id=snapshot_id,
        directory=str(published),
        clean_path=str(published / CLEAN_FILE),
        labels_path=str(published / LABELS_FILE),
        report_path=str(published / REPORT_FILE),
        rows_out=len(result.clean),
        valid_share=check.valid_share,
    )


def load_clean(snapshot_id: str, settings: Settings | None = None) -> pd.DataFrame:
    return Catalog(settings or get_settings()).load_clean(snapshot_id)
