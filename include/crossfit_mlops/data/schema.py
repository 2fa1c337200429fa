"""The raw data contract: what a readable ``athletes.csv`` is, and what a valid row in it is.

Two kinds of problems, handled differently:

* **File problems** (missing/renamed columns, empty file, header only, wrong delimiter, non-UTF-8
  bytes, a number that does not parse, a row with the wrong number of fields, bytes that changed
  since ingest) make the file unusable: :func:`read_raw` raises :class:`RawFileError` naming the
  file, the problem and where.
* **Row problems** (a junk weight, an unknown gender, a negative deadlift, a malformed survey
  answer, a missing athlete id) are expected in this data: :func:`check_rows` runs the pandera
  schema and returns the rows that break a rule, one line per (row, rule, column, value), so that
  they can be quarantined instead of silently dropped.

Nulls are allowed by the contract (the raw file is mostly empty profiles); whether a row is
complete enough to model is the cleaning step's business.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from crossfit_mlops.data.vocabulary import (
    DECLINE,
    GENDERS,
    NUMERIC_COLUMNS,
    RAW_COLUMNS,
    REGIONS,
    SURVEY_COLUMNS,
    SURVEY_OPTIONS,
    SURVEY_SEPARATOR,
    TEXT_COLUMNS,
    split_answer,
)

# Plausibility bounds. Lifts keep the usual recipe's upper limits (about the world records); the
# lower ones drop the recipe's junk minimums (1 lb lifts, 5 lb and 28 lb athletes).
AGE_RANGE = (18, 90)
HEIGHT_RANGE_EXCLUSIVE = (48, 96)  # inches
WEIGHT_RANGE = (70, 500)  # pounds
LIFT_MIN = 15  # pounds: the lightest training barbell
LIFT_MAX = {"candj": 395, "snatch": 496, "deadlift": 1105, "backsq": 1069}
FEMALE_DEADLIFT_MAX = 636
# Ids are read as float64 (a null id makes the column float, as in pandas) and stored as int64.
# Every integer below 2^53 is exact in float64; from 2^53 on, distinct ids round to one value
# (and past 2^63 they overflow int64), so such ids get their own rule instead of colliding.
ATHLETE_ID_LIMIT = 2**53
ATHLETE_ID_RANGE_RULE = "athlete_id_below_2^53"


class RawFileError(ValueError):
    """The raw file cannot be used at all. ``kind`` is a stable machine-readable tag."""

    def __init__(self, path: Path | str, kind: str, message: str):
        self.path = path if not isinstance(path, str) else Path(path)
        self.kind = kind
        super().__init__(f"{self.path}: {kind}: {message}")


@dataclass(frozen=True)
class RawFile:
    frame: pd.DataFrame  # raw columns, in contract order, plus ``row_number`` (1 = first data line)
    reordered_columns: bool
    # header cells that had surrounding whitespace (e.g. " age"), read as their stripped name
    stripped_header_cells: tuple[str, ...] = ()
    # the id as written, for rows whose id is too large to be held exactly (row_number -> text)
    oversized_ids: dict[int, str] = field(default_factory=dict)


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


_NOT_SPACE = re.compile(rb"\S")


def _header_bytes(data: bytes) -> bytes:
    """The first line (slicing, not splitting: a split copies the 75 MB body)."""
    end = data.find(b"\n")
    return data if end < 0 else data[:end]


def _header_cells(data: bytes) -> list[str]:
    return _header_bytes(data).decode("utf-8").strip("\r").split(",")


def _check_header(path: Path, data: bytes) -> list[str]:
    """The header's column names (stripped of surrounding whitespace: `` age`` is ``age``, and the
    report records it), or :class:`RawFileError` (delimiter, missing, unexpected, duplicate)."""
    header_line = _header_bytes(data).decode("utf-8").strip("\r")
    header = [h.strip() for h in _header_cells(data)]
    if len(header) == 1:
        for sep, label in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
            if sep in header_line and len(header_line.split(sep)) >= len(RAW_COLUMNS) // 2:
                raise RawFileError(
                    path,
                    "wrong_delimiter",
                    f"the header is separated by {label}s ({len(header_line.split(sep))} fields); "
                    "the contract expects commas",
                )
    missing = [c for c in RAW_COLUMNS if c not in header]
    unexpected = [c for c in header if c not in RAW_COLUMNS]
    if missing:
        hint = f"; unexpected columns {unexpected} (renamed?)" if unexpected else ""
        raise RawFileError(path, "missing_columns", f"missing columns {missing}{hint}")
    if unexpected:
        raise RawFileError(path, "unexpected_columns", f"unexpected columns {unexpected}")
    if len(set(header)) != len(header):
        raise RawFileError(path, "duplicate_columns", f"duplicate column names in header {header}")
    return header


def read_raw(path: Path | str, expected_sha256: str | None = None) -> RawFile:
    """Read ``athletes.csv`` under the contract or raise :class:`RawFileError`.

    ``expected_sha256``: the digest recorded at ingest. Raw inputs are immutable, so bytes that
    differ from it (a truncated, edited or replaced file) are refused (``changed_since_ingest``).
    The digest is taken of the very bytes that are then parsed.
    """
    from crossfit_mlops.storage import location

    path = location(path)
    if not path.is_file():
        raise RawFileError(path, "missing_file", "no such file")
    data = path.read_bytes()
    if expected_sha256 is not None:
        _check_digest(path, data, expected_sha256)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not _NOT_SPACE.search(data):
        raise RawFileError(path, "empty_file", "the file is empty (no header, no rows)")
    try:
        header = _check_header(path, data)
    except UnicodeDecodeError:
        _check_utf8(path, data)
        raise
    newline = data.find(b"\n")
    if newline < 0 or not _NOT_SPACE.search(data, newline + 1):
        raise RawFileError(path, "header_only", "the file has a header but no data rows")

    frame = _parse(path, data, header)  # in contract order
    frame.insert(0, "row_number", np.arange(1, len(frame) + 1, dtype="int64"))
    return RawFile(
        frame=frame,
        reordered_columns=header != list(RAW_COLUMNS),
        stripped_header_cells=tuple(repr(c) for c in _header_cells(data) if c != c.strip()),
        oversized_ids=_oversized_ids(data, header, frame),
    )


def _check_utf8(path: Path, data: bytes) -> None:
    """Locate the first byte that is not UTF-8. Only on a failed read: pyarrow checks every text
    cell as it parses (and a number with such a byte does not parse), so a file it reads is UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1]
        raise RawFileError(
            path,
            "not_utf8",
            f"byte {bad!r} at offset {exc.start} (line {_line_of(data, exc.start)}) is not UTF-8; "
            "re-export the file as UTF-8",
        ) from None


def _check_digest(path: Path, data: bytes, expected: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise RawFileError(
            path,
            "changed_since_ingest",
            f"its sha256 is {actual} ({len(data)} bytes) but ingest recorded {expected}: the raw "
            "snapshot was modified, truncated or replaced after ingest; raw inputs are immutable, "
            "so it is refused. Restore the original file, or ingest the new one as a new snapshot",
        )


def _oversized_ids(data: bytes, header: list[str], frame: pd.DataFrame) -> dict[int, str]:
    """Slow path, only when an id is at or past 2^53: those ids as written in the file."""
    too_big = (frame["athlete_id"] >= ATHLETE_ID_LIMIT).to_numpy()
    if not too_big.any():
        return {}
    import pyarrow as pa
    import pyarrow.csv as pacsv

    read = pacsv.ReadOptions(column_names=header, skip_rows=1)
    convert = pacsv.ConvertOptions(include_columns=["athlete_id"], column_types={"athlete_id": pa.string()})
    text = pacsv.read_csv(io.BytesIO(data), read_options=read, convert_options=convert)["athlete_id"]
    rows = np.flatnonzero(too_big)
    return {int(r) + 1: text[int(r)].as_py().strip() for r in rows}


def _parse(path: Path, data: bytes, header: list[str]) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    numeric = set(NUMERIC_COLUMNS)
    types = {c: (pa.float64() if c in numeric else pa.string()) for c in header}
    read = pacsv.ReadOptions(column_names=header, skip_rows=1)  # the stripped names
    convert = pacsv.ConvertOptions(
        column_types=types, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False
    )
    try:
        table = pacsv.read_csv(io.BytesIO(data), read_options=read, convert_options=convert)
    except pa.ArrowInvalid as exc:
        _check_utf8(path, data)  # the most precise explanation first
        message = str(exc)
        if "conversion error" in message or "invalid value" in message:
            raise _unparseable_number(path, data, header) from None
        if "Expected" in message and "columns" in message:
            raise RawFileError(path, "malformed_row", message.replace("CSV parse error: ", "")) from None
        raise RawFileError(path, "unreadable", message) from None
    frame = table.select(list(RAW_COLUMNS)).to_pandas()  # contract order, without a copy in pandas
    for column in TEXT_COLUMNS + SURVEY_COLUMNS:  # pyarrow gives object columns with None already
        if frame[column].dtype != object:
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def _unparseable_number(path: Path, data: bytes, header: list[str]) -> RawFileError:
    """Slow path, only on failure: find every numeric column with values that do not parse."""
    raw = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, encoding="utf-8", header=0, names=header)
    problems = []
    for column in NUMERIC_COLUMNS:
        values = raw[column]
        parsed = pd.to_numeric(values.where(values != "", None), errors="coerce")
        bad = values[(values != "") & parsed.isna()]
        if len(bad):
            rows = ", ".join(f"row {i + 1} {v!r}" for i, v in bad.head(3).items())
            problems.append(f"column {column!r}: {len(bad)} values ({rows})")
    return RawFileError(path, "unparseable_number", "numbers that do not parse: " + "; ".join(problems))


# --- row-level rules ------------------------------------------------------------------------------


def _rule(fn, name: str):
    """A row rule that sees every row and passes nulls itself (nulls are allowed by the contract).

    pandera's default (``ignore_na=True``) drops the nulls before each check and ORs them back
    after: three null scans and a copy of the column per rule, most of the contract's time on the
    full file. Each rule below says explicitly that a null passes.
    """
    import pandera.pandas as pa

    return pa.Check(fn, name=name, ignore_na=False)


def _per_distinct(verdict):
    """A text column's check from a verdict on its distinct values (nulls pass): the column is
    factorized once (nulls get code -1), each distinct answer judged once."""

    def check(series: pd.Series) -> pd.Series:
        codes, uniques = pd.factorize(series)
        ok = np.fromiter((verdict(u) for u in uniques), dtype=bool, count=len(uniques))
        return pd.Series(np.append(ok, True)[codes], index=series.index)  # code -1 -> the True

    return check


def _valid_answers(column: str):
    """Check for one survey column: ends with '|', and every option is in the vocabulary."""
    vocabulary = set(SURVEY_OPTIONS[column]) | {DECLINE}
    free_text = column == "train"  # training style answers vary: check the form only

    def ok(answer: str) -> bool:
        if not answer.endswith(SURVEY_SEPARATOR) or not split_answer(answer):
            return False
        return free_text or all(option in vocabulary for option in split_answer(answer))

    return _per_distinct(ok)


def _between(lo: float, hi: float, name: str, inclusive: bool = True):
    if inclusive:
        return _rule(lambda s: s.isna() | s.between(lo, hi), name=name)
    return _rule(lambda s: s.isna() | ((s > lo) & (s < hi)), name=name)


def _lift_columns() -> dict:
    import pandera.pandas as pa

    return {
        lift: pa.Column(
            float,
            [
                _rule(lambda s: s.isna() | (s > 0), name=f"{lift}_positive"),
                _rule(lambda s: s.isna() | (s >= LIFT_MIN), name=f"{lift}_at_least_{LIFT_MIN}lb"),
                _rule(lambda s, m=mx: s.isna() | (s <= m), name=f"{lift}_at_most_{mx}lb"),
            ],
            nullable=True,
        )
        for lift, mx in LIFT_MAX.items()
    }


def _profile_columns() -> dict:
    import pandera.pandas as pa

    genders, regions = set(GENDERS), set(REGIONS)
    return {
        "athlete_id": pa.Column(
            float,
            [
                _rule(lambda s: s.notna(), name="athlete_id_present"),
                _rule(lambda s: s.isna() | ((s > 0) & (s % 1 == 0)), name="athlete_id_positive_integer"),
                _rule(lambda s: s.isna() | (s < ATHLETE_ID_LIMIT), name=ATHLETE_ID_RANGE_RULE),
            ],
            nullable=True,
        ),
        "gender": pa.Column(object, _rule(_per_distinct(genders.__contains__), name="gender_in_vocabulary"), nullable=True),
        "region": pa.Column(object, _rule(_per_distinct(regions.__contains__), name="region_in_vocabulary"), nullable=True),
        "age": pa.Column(float, _between(*AGE_RANGE, name="age_18_to_90"), nullable=True),
        "height": pa.Column(
            float, _between(*HEIGHT_RANGE_EXCLUSIVE, name="height_48_to_96in", inclusive=False), nullable=True
        ),
        "weight": pa.Column(float, _between(*WEIGHT_RANGE, name="weight_70_to_500lb"), nullable=True),
    }


def contract_schema():
    """The pandera schema of a raw row. Rule names are what the quarantine file reports."""
    import pandera.pandas as pa

    survey = {
        column: pa.Column(object, _rule(_valid_answers(column), name=f"{column}_answer_well_formed"), nullable=True)
        for column in SURVEY_COLUMNS
    }
    return pa.DataFrameSchema(
        {**_profile_columns(), **_lift_columns(), **survey},
        checks=[  # a null gender or deadlift passes: the comparison is False for it
            _rule(
                lambda df: ~((df["gender"] == "Female") & (df["deadlift"] > FEMALE_DEADLIFT_MAX)),
                name=f"female_deadlift_at_most_{FEMALE_DEADLIFT_MAX}lb",
            )
        ],
        strict=False,
        coerce=False,
    )


def check_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Failures of the row rules: one row per (row_number, rule) with the column and the value.

    Returns an empty frame with the same columns when every row passes.
    """
    import pandera.pandas as pa

    columns = ["row_number", "rule", "column", "value"]
    try:
        contract_schema().validate(frame, lazy=True, inplace=True)  # no copy: nothing is coerced
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return pd.DataFrame(columns=columns)
    unexpected = cases[cases["index"].isna()]
    if len(unexpected):  # a schema-level failure (dtype), not a row rule: the contract is broken
        raise ValueError(f"raw frame does not match the contract's types: {unexpected.to_dict('records')}")
    cases = cases.assign(index=cases["index"].astype("int64"))
    # wide (dataframe-level) checks list every column of a failing row; keep the one that matters
    wide = cases["schema_context"] == "DataFrameSchema"
    cases = cases[~wide | (cases["column"] == "deadlift")]
    out = pd.DataFrame(
        {
            "row_number": frame["row_number"].to_numpy()[cases["index"].to_numpy()],
            "rule": cases["check"].astype(str).to_numpy(),
            "column": cases["column"].astype(str).to_numpy(),
            "value": cases["failure_case"].astype(str).to_numpy(),
        }
    )
    out.loc[out["rule"] == "athlete_id_present", "value"] = ""
    return out.sort_values(["row_number", "rule"], kind="stable").reset_index(drop=True)
