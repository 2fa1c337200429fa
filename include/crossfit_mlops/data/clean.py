"""Cleaning: from contract-valid raw rows to one modelling row per athlete. Pure, no I/O.

The usual recipe (shared/DATA.md), without its four defects:

1. its unbracketed deadlift test let women with deadlift <= 0 through -> the contract's lift rules
   apply to every row (and women's deadlift has its own upper limit);
2. it kept junk minimums (total_lift = 4, weights of 5 and 28 lb) -> the contract's lower bounds;
3. 'Decline to answer' inside a multi-answer survived -> the option is removed from the answer
   (the other ticked options are real answers and are kept);
4. a fully duplicated row survived -> exact duplicates are collapsed to one row, and an id that
   appears on rows with different content is rejected whole (we cannot know which row is true).

Rows are never dropped silently: every rejected row comes back with its rule and detail.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from crossfit_mlops.data.vocabulary import (
    DECLINE,
    LIFT_COLUMNS,
    RAW_COLUMNS,
    SURVEY_COLUMNS,
    SURVEY_SEPARATOR,
)
from crossfit_mlops.storage import ENTITY_KEY, EVENT_TIMESTAMP, TARGET

REQUIRED_COLUMNS: tuple[str, ...] = (
    "region", "age", "weight", "height", "howlong", "gender", "eat", "train", "background",
    "experience", "schedule", "deadlift", "candj", "snatch", "backsq",
)  # fmt: skip
CLEAN_COLUMNS: tuple[str, ...] = (
    ENTITY_KEY, EVENT_TIMESTAMP, "gender", "age", "height", "weight", "region",
    *SURVEY_COLUMNS, *LIFT_COLUMNS, TARGET, "row_number",
)  # fmt: skip
_DECLINE_OPTION = f"{DECLINE}{SURVEY_SEPARATOR}"  # as an answer on its own, or inside one


@dataclass
class CleanResult:
    clean: pd.DataFrame
    rejected: pd.DataFrame  # row_number, athlete_id, rule, detail
    counts: dict[str, int] = field(default_factory=dict)


def _columns_where(mask: pd.DataFrame) -> pd.Series:
    """For each row, the comma-joined names of the columns where ``mask`` is True."""
    bits = np.zeros(len(mask), dtype=np.int64)
    for i, column in enumerate(mask.columns):
        bits |= mask[column].to_numpy(dtype=np.int64) << i
    uniques, inverse = np.unique(bits, return_inverse=True)
    names = [",".join(c for i, c in enumerate(mask.columns) if u >> i & 1) for u in uniques]
    return pd.Series(np.asarray(names, dtype=object)[inverse], index=mask.index)


def _reject(frame: pd.DataFrame, mask: pd.Series, rule: str, detail: pd.Series | str) -> pd.DataFrame:
    keep = mask.to_numpy()  # only the two key columns are taken (not the whole rows)
    return pd.DataFrame(
        {
            "row_number": frame["row_number"].to_numpy()[keep],
            "athlete_id": frame["athlete_id"].to_numpy()[keep],
            "rule": rule,
            "detail": detail.to_numpy()[keep] if isinstance(detail, pd.Series) else detail,
        }
    )


def _exact_duplicates(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Rows that repeat an earlier row exactly, and for those rows "same as row <first>".

    The label is computed for the rows of repeated content only (a handful), not by grouping
    every row: grouping 30,000 rows on 27 columns was most of cleaning's time.
    """
    content = list(RAW_COLUMNS)
    dup = frame.duplicated(subset=content, keep="first")
    detail = pd.Series(None, index=frame.index, dtype=object)
    if dup.any():
        repeated = frame.loc[frame.duplicated(subset=content, keep=False)]
        first = repeated.groupby(content, dropna=False, sort=False)["row_number"].transform("first")
        detail.loc[first.index] = "same as row " + first.astype(str)
    return dup, detail


def _rows_of_id(frame: pd.DataFrame, conflicting: pd.Series) -> pd.Series:
    """For the rows of an id that several rows share, "rows <r1>,<r2>,..." (in file order).

    Computed for those rows alone: a Python label per athlete (all 30,000 of them) took seconds.
    """
    rows = frame.loc[conflicting, [ENTITY_KEY, "row_number"]]
    labels = rows.groupby(ENTITY_KEY, sort=False)["row_number"].agg(lambda s: "rows " + ",".join(map(str, s)))
    return frame[ENTITY_KEY].where(conflicting).map(labels)


def strip_decline(answer: str) -> str:
    """Remove 'Decline to answer' from a multi-answer: ``'a|Decline to answer|'`` -> ``'a|'``."""
    return answer.replace(_DECLINE_OPTION, "")


def clean_rows(valid: pd.DataFrame, snapshot_time: pd.Timestamp) -> CleanResult:
    """Clean contract-valid raw rows (with ``row_number``; any unique index) taken at ``snapshot_time`` (UTC)."""
    if snapshot_time.tzinfo is None:
        raise ValueError("snapshot_time must be timezone-aware (UTC)")
    rejected: list[pd.DataFrame] = []
    counts: dict[str, int] = {"rows_in": len(valid)}
    frame = valid

    # 1. complete for modelling
    nulls = frame[list(REQUIRED_COLUMNS)].isna()
    incomplete = nulls.any(axis=1)
    rejected.append(_reject(frame, incomplete, "missing_required", _columns_where(nulls)))
    frame = frame.loc[~incomplete]

    # 2. a survey question answered only with 'Decline to answer|'
    declined_cells = frame[list(SURVEY_COLUMNS)] == _DECLINE_OPTION
    declined = declined_cells.any(axis=1)
    rejected.append(_reject(frame, declined, "survey_declined", _columns_where(declined_cells)))
    frame = frame.loc[~declined].copy()

    # 3. 'Decline to answer' inside a multi-answer: drop that option, keep the others
    stripped = 0
    for column in SURVEY_COLUMNS:
        has = frame[column].str.contains(DECLINE, regex=False)
        stripped += int(has.sum())
        frame.loc[has, column] = frame.loc[has, column].map(strip_decline)
    counts["decline_options_removed"] = stripped

    # 4a. exact duplicate rows: keep the first
    dup, first_row = _exact_duplicates(frame)
    rejected.append(_reject(frame, dup, "duplicate_row", first_row))
    frame = frame.loc[~dup]

    # 4b. one id, different content: reject every row of that id
    conflicting = frame.duplicated(subset=[ENTITY_KEY], keep=False)
    rejected.append(_reject(frame, conflicting, "conflicting_duplicate_id", _rows_of_id(frame, conflicting)))
    frame = frame.loc[~conflicting]

    clean = frame.assign(
        athlete_id=frame[ENTITY_KEY].astype("int64"),
        event_timestamp=snapshot_time,
        total_lift=frame[list(LIFT_COLUMNS)].sum(axis=1),
    )[list(CLEAN_COLUMNS)]
    clean = clean.sort_values(ENTITY_KEY, kind="stable").reset_index(drop=True)
    rejected_frame = pd.concat(rejected, ignore_index=True)
    rejected_frame = rejected_frame.astype({"row_number": "int64", "athlete_id": "float64"})
    for rule in ("missing_required", "survey_declined", "duplicate_row", "conflicting_duplicate_id"):
        counts[rule] = int((rejected_frame["rule"] == rule).sum())
    counts["rows_out"] = len(clean)
    return CleanResult(clean=clean, rejected=rejected_frame.sort_values("row_number").reset_index(drop=True), counts=counts)
