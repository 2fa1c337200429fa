"""Validate a raw snapshot against the contract, quarantine what breaks it, clean the rest.

Outputs (``data/processed/snapshot=<id>/``, published together, see :mod:`crossfit_mlops.storage`):
``athletes_clean.parquet`` (one row per athlete, with event_timestamp), ``labels.parquet``
(athlete_id, event_timestamp, total_lift), ``quarantine.parquet`` (raw rows that break a contract
rule, with the rule and value), ``rejected.parquet`` (valid rows the cleaning left out, with the
rule and detail), ``validation_report.json`` (counts per rule, rows in/out, status).

When the valid share falls below the floor, the report and the quarantine are still published
(status "failed") but no cleaned data is, and :class:`ValidationFloorError` is raised.
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
from crossfit_mlops.data.contract import check_rows, read_raw
from crossfit_mlops.settings import Settings, get_settings
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
    publishing,
    snapshot_time,
)

log = logging.getLogger(__name__)


class ValidationFloorError(RuntimeError):
    """Too few rows passed the raw contract: the snapshot is not trusted."""


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

    @property
    def valid_share(self) -> float:
        return 1.0 - self.rows_bad / len(self.frame)


def check_contract(raw_path: Path) -> ContractCheck:
    raw = read_raw(raw_path)
    failures = check_rows(raw.frame)
    bad_rows = failures["row_number"].unique()
    return ContractCheck(
        frame=raw.frame,
        quarantine=failures.merge(raw.frame, on="row_number", how="left"),
        is_bad=raw.frame["row_number"].isin(bad_rows),
        rows_bad=len(bad_rows),
        reordered_columns=raw.reordered_columns,
    )


def _report(snapshot_id: str, raw: RawSnapshot, check: ContractCheck, floor: float) -> dict[str, Any]:
    return {
        "snapshot_id": snapshot_id,
        "raw_file": raw.path,
        "raw_sha256": raw.sha256,
        "raw_source": raw.source,
        "columns_reordered": check.reordered_columns,
        "rows_in": len(check.frame),
        "rows_quarantined": int(check.rows_bad),
        "valid_share": round(check.valid_share, 6),
        "min_valid_share": floor,
        "contract_failures_per_rule": check.quarantine["rule"].value_counts().sort_index().to_dict(),
    }


def _write_clean(folder: Path, result: CleanResult) -> None:
    result.clean.to_parquet(folder / CLEAN_FILE, index=False)
    result.clean[[ENTITY_KEY, EVENT_TIMESTAMP, TARGET]].to_parquet(folder / LABELS_FILE, index=False)
    result.rejected.to_parquet(folder / REJECTED_FILE, index=False)


def validate_and_clean(
    snapshot_id: str,
    settings: Settings | None = None,
    min_valid_share: float | None = None,
) -> CleanedSnapshot:
    """Validate the raw snapshot against the contract, quarantine bad rows, clean the rest."""
    settings = settings or get_settings()
    catalog = Catalog(settings)
    floor = settings.min_valid_share if min_valid_share is None else min_valid_share
    raw = catalog.raw_manifest(snapshot_id)
    started = time.perf_counter()
    check = check_contract(Path(raw.path))
    report = _report(snapshot_id, raw, check, floor)
    final = catalog.processed_dir(snapshot_id)
    if check.valid_share < floor:
        report.update(status="failed", reason=f"valid share {check.valid_share:.4f} is below the floor {floor}")
        with publishing(final) as tmp:
            check.quarantine.to_parquet(tmp / QUARANTINE_FILE, index=False)
            (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2))
        raise ValidationFloorError(
            f"{raw.path}: only {check.valid_share:.2%} of {len(check.frame)} rows pass the raw contract "
            f"(floor {floor:.2%}); see {final / REPORT_FILE} and {final / QUARANTINE_FILE}"
        )
    result = clean_rows(check.frame.loc[~check.is_bad].reset_index(drop=True), snapshot_time(snapshot_id))
    report.update(
        status="ok",
        cleaning=result.counts,
        rows_out=len(result.clean),
        share_out=round(len(result.clean) / len(check.frame), 6),
        seconds=round(time.perf_counter() - started, 3),
    )
    with publishing(final) as tmp:
        check.quarantine.to_parquet(tmp / QUARANTINE_FILE, index=False)
        _write_clean(tmp, result)
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2))
    log.info("snapshot %s: %d rows in, %d quarantined, %d clean", snapshot_id, len(check.frame), check.rows_bad, len(result.clean))
    return CleanedSnapshot(
        snapshot_id=snapshot_id,
        directory=str(final),
        clean_path=str(final / CLEAN_FILE),
        labels_path=str(final / LABELS_FILE),
        report_path=str(final / REPORT_FILE),
        rows_out=len(result.clean),
        valid_share=check.valid_share,
    )


def load_clean(snapshot_id: str, settings: Settings | None = None) -> pd.DataFrame:
    return Catalog(settings or get_settings()).load_clean(snapshot_id)
