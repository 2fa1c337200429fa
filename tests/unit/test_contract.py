"""The raw contract: every file-level error class, every row rule, quarantine and the floor."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from crossfit_mlops.data.ingest import ingest_snapshot
from crossfit_mlops.data.schema import ATHLETE_ID_RANGE_RULE, RawFileError, check_rows, read_raw
from crossfit_mlops.data.validate import ValidationFloorError, check_contract, validate_and_clean
from crossfit_mlops.data.vocabulary import RAW_COLUMNS
from crossfit_mlops.storage import CLEAN_FILE, QUARANTINE_FILE, REPORT_FILE, Catalog, sha256_of

SNAPSHOT = "2026-03-01"


@pytest.fixture
def settings(settings):
    """These tests validate files of 5-10 rows to check one rule at a time, so the minimum size of
    a snapshot worth training on (CROSSFIT_MIN_CLEAN_ROWS, 200 athletes) is lowered to 1 for them;
    that minimum has its own tests (test_a_snapshot_too_small_to_train_on_is_refused and
    tests/reliability/test_data_bad_inputs.py)."""
    return dataclasses.replace(settings, min_clean_rows=1)


def valid_row(**overrides) -> dict:
    row = {
        "athlete_id": 2554.0, "name": "Pat Vellner", "region": "Canada East", "team": None,
        "affiliate": "CrossFit Ottawa", "gender": "Male", "age": 28.0, "height": 70.0, "weight": 190.0,
        "fran": 150.0, "helen": None, "grace": None, "filthy50": None, "fgonebad": None,
        "run400": None, "run5k": None, "candj": 300.0, "snatch": 240.0, "deadlift": 500.0,
        "backsq": 420.0, "pullups": 50.0,
        "eat": "I weigh and measure my food|",
        "train": "I workout mostly at a CrossFit Affiliate|I record my workouts|",
        "background": "I played college sports|",
        "experience": "I began CrossFit with a coach (e.g. at an affiliate)|I train other people|",
        "schedule": "I do multiple workouts in a day 3+ times a week|",
        "howlong": "4+ years|",
    }  # fmt: skip
    row.update(overrides)
    return row


def frame_of(*rows: dict) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=list(RAW_COLUMNS))
    for column in frame.columns:
        if column in ("name", "region", "team", "affiliate", "gender", "eat", "train", "background",
                      "experience", "schedule", "howlong"):  # fmt: skip
            frame[column] = frame[column].astype(object)
        else:
            frame[column] = frame[column].astype("float64")
    frame.insert(0, "row_number", range(1, len(frame) + 1))
    return frame


def write_csv(path, frame: pd.DataFrame, **kwargs) -> None:
    frame.drop(columns="row_number", errors="ignore").astype({"athlete_id": "Int64"}).to_csv(
        path, index=False, **kwargs
    )


# --- file-level errors -----------------------------------------------------------------------------


@pytest.fixture
def good_frame() -> pd.DataFrame:
    return frame_of(*(valid_row(athlete_id=float(i)) for i in range(1, 6)))


def assert_file_error(path, kind: str, *fragments: str) -> RawFileError:
    with pytest.raises(RawFileError) as info:
        read_raw(path)
    assert info.value.kind == kind
    message = str(info.value)
    assert str(path) in message, "the error names the file"
    for fragment in fragments:
        assert fragment in message
    return info.value


def test_good_file_reads_with_row_numbers(tmp_path, good_frame):
    path = tmp_path / "athletes.csv"
    write_csv(path, good_frame)
    raw = read_raw(path)
    assert list(raw.frame.columns) == ["row_number", *RAW_COLUMNS]
    assert raw.frame["row_number"].tolist() == [1, 2, 3, 4, 5]
    assert raw.frame["team"].isna().all()
    assert not raw.reordered_columns


def test_missing_file(tmp_path):
    assert_file_error(tmp_path / "nope.csv", "missing_file")


def test_empty_file(tmp_path):
    path = tmp_path / "athletes.csv"
    path.write_bytes(b"")
    assert_file_error(path, "empty_file")


def test_header_only(tmp_path):
    path = tmp_path / "athletes.csv"
    path.write_text(",".join(RAW_COLUMNS) + "\n")
    assert_file_error(path, "header_only")


def test_renamed_column(tmp_path, good_frame):
    path = tmp_path / "athletes.csv"
    write_csv(path, good_frame.rename(columns={"backsq": "back_squat"}))
    assert_file_error(path, "missing_columns", "backsq", "back_squat", "renamed")


def test_missing_column(tmp_path, good_frame):
    path = tmp_path / "athletes.csv"
    write_csv(path, good_frame.drop(columns="howlong"))
    assert_file_error(path, "missing_columns", "howlong")


def test_unexpected_extra_column(tmp_path, good_frame):
    path = tmp_path / "athletes.csv"
    write_csv(path, good_frame.assign(total_lift=1.0))
    assert_file_error(path, "unexpected_columns", "total_lift")


def test_wrong_delimiter(tmp_path, good_frame):
    path = tmp_path / "athletes.csv"
    write_csv(path, good_frame, sep=";")
    assert_file_error(path, "wrong_delimiter", "semicolon")


def test_non_utf8_bytes(tmp_path, good_frame):
    path = tmp_path / "athletes.csv"
    write_csv(path, good_frame.assign(team="Team Guarujá Inox"), encoding="latin-1")
    error = assert_file_error(path, "not_utf8", "line 2")
    assert "UTF-8" in str(error)


def test_unparseable_number_names_column_and_row(tmp_path, good_frame):
    path = tmp_path / "athletes.csv"
    frame = good_frame.astype({"age": object})
    frame.loc[3, "age"] = "thirty"
    write_csv(path, frame)
    assert_file_error(path, "unparseable_number", "'age'", "row 4", "'thirty'")


def test_row_with_too_many_fields(tmp_path, good_frame):
    path = tmp_path / "athletes.csv"
    write_csv(path, good_frame)
    with path.open("a") as handle:
        handle.write("1,2,3" + ",x" * 30 + "\n")
    assert_file_error(path, "malformed_row", "columns")


def test_reordered_columns_are_accepted_and_reported(tmp_path, good_frame):
    path = tmp_path / "athletes.csv"
    write_csv(path, good_frame[["row_number", *reversed(RAW_COLUMNS)]])
    raw = read_raw(path)
    assert raw.reordered_columns
    assert list(raw.frame.columns)[1:] == list(RAW_COLUMNS)


# --- row rules -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "rule", "column", "value"),
    [
        ({"athlete_id": None}, "athlete_id_present", "athlete_id", ""),
        ({"athlete_id": 12.5}, "athlete_id_positive_integer", "athlete_id", "12.5"),
        ({"gender": "--"}, "gender_in_vocabulary", "gender", "--"),
        ({"region": "Mars"}, "region_in_vocabulary", "region", "Mars"),
        ({"age": 16.0}, "age_18_to_90", "age", "16.0"),
        ({"age": 125.0}, "age_18_to_90", "age", "125.0"),
        ({"height": 48.0}, "height_48_to_96in", "height", "48.0"),
        ({"height": 180.0}, "height_48_to_96in", "height", "180.0"),
        ({"weight": 5.0}, "weight_70_to_500lb", "weight", "5.0"),
        ({"weight": 28.0}, "weight_70_to_500lb", "weight", "28.0"),
        ({"weight": 1500.0}, "weight_70_to_500lb", "weight", "1500.0"),
        ({"candj": 1.0}, "candj_at_least_15lb", "candj", "1.0"),
        ({"snatch": 600.0}, "snatch_at_most_496lb", "snatch", "600.0"),
        ({"deadlift": -500.0}, "deadlift_positive", "deadlift", "-500.0"),
        ({"backsq": 2000.0}, "backsq_at_most_1069lb", "backsq", "2000.0"),
        ({"gender": "Female", "deadlift": 700.0}, "female_deadlift_at_most_636lb", "deadlift", "700.0"),
        ({"eat": "I eat strict Paleo"}, "eat_answer_well_formed", "eat", "I eat strict Paleo"),
        ({"howlong": "Forever|"}, "howlong_answer_well_formed", "howlong", "Forever|"),
        ({"schedule": "|"}, "schedule_answer_well_formed", "schedule", "|"),
    ],
)
def test_each_row_rule(overrides, rule, column, value):
    frame = frame_of(valid_row(athlete_id=1.0), valid_row(**{"athlete_id": 2.0, **overrides}))
    failures = check_rows(frame)
    assert set(failures["row_number"]) == {2}
    hit = failures[failures["rule"] == rule]
    assert len(hit) == 1, failures
    assert hit.iloc[0]["column"] == column
    assert hit.iloc[0]["value"] == value


def test_women_with_non_positive_deadlift_are_caught():
    """The usual recipe's missing brackets let these through; the contract does not."""
    frame = frame_of(valid_row(gender="Female", deadlift=0.0), valid_row(gender="Female", deadlift=-225.0))
    assert set(check_rows(frame)["row_number"]) == {1, 2}


def test_nulls_and_free_text_training_answers_are_valid():
    frame = frame_of(
        valid_row(height=None, weight=None, candj=None, eat=None),
        valid_row(train="I follow my own whiteboard|"),
    )
    assert check_rows(frame).empty


# --- quarantine, report, floor ---------------------------------------------------------------------


def provide_file(settings, frame: pd.DataFrame) -> None:
    settings.raw_file_override.parent.mkdir(parents=True, exist_ok=True)
    write_csv(settings.raw_file_override, frame)


def test_quarantine_keeps_rows_with_rule_and_value(settings):
    rows = [valid_row(athlete_id=float(i)) for i in range(1, 9)]
    rows[2] = valid_row(athlete_id=3.0, weight=5.0)
    rows[5] = valid_row(athlete_id=6.0, gender="--", age=125.0)
    provide_file(settings, frame_of(*rows))
    ingest_snapshot(SNAPSHOT, settings=settings)
    result = validate_and_clean(SNAPSHOT, settings=settings, min_valid_share=0.5)

    directory = Catalog(settings).processed_dir(SNAPSHOT)
    quarantine = pd.read_parquet(directory / QUARANTINE_FILE)
    assert sorted(quarantine["rule"]) == ["age_18_to_90", "gender_in_vocabulary", "weight_70_to_500lb"]
    by_rule = quarantine.set_index("rule")
    assert by_rule.loc["weight_70_to_500lb", "value"] == "5.0"
    assert by_rule.loc["weight_70_to_500lb", "row_number"] == 3
    assert by_rule.loc["age_18_to_90", "athlete_id"] == 6  # the whole raw row is kept
    assert by_rule.loc["age_18_to_90", "name"] == "Pat Vellner"

    report = json.loads((directory / REPORT_FILE).read_text())
    assert report["status"] == "ok"
    assert report["rows_in"] == 8 and report["rows_quarantined"] == 2 and report["rows_out"] == 6
    assert report["contract_failures_per_rule"] == {
        "age_18_to_90": 1, "gender_in_vocabulary": 1, "weight_70_to_500lb": 1,
    }  # fmt: skip
    assert result.rows_out == 6
    assert result.valid_share == pytest.approx(0.75)


def test_floor_failure_publishes_report_but_no_clean_data(settings):
    rows = [valid_row(athlete_id=float(i), weight=5.0 if i % 2 else 190.0) for i in range(1, 11)]
    provide_file(settings, frame_of(*rows))
    ingest_snapshot(SNAPSHOT, settings=settings)
    directory = Catalog(settings).processed_dir(SNAPSHOT)

    validate_and_clean(SNAPSHOT, settings=settings, min_valid_share=0.4)
    assert (directory / CLEAN_FILE).is_file()

    with pytest.raises(ValidationFloorError, match=r"50\.00% of 10 rows"):
        validate_and_clean(SNAPSHOT, settings=settings, min_valid_share=0.9)
    report = json.loads((directory / REPORT_FILE).read_text())
    assert report["status"] == "failed" and "below the floor" in report["reason"]
    assert (directory / QUARANTINE_FILE).is_file()
    assert not (directory / CLEAN_FILE).exists(), "a stale good result must not survive a failed run"
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".")], "no temp dirs left"


def test_provided_file_is_used_unchanged(settings, good_frame):
    provide_file(settings, good_frame)
    before = settings.raw_file_override.read_bytes()
    raw = ingest_snapshot(SNAPSHOT, settings=settings)
    validate_and_clean(SNAPSHOT, settings=settings)
    assert raw.source == "provided"
    assert settings.raw_file_override.read_bytes() == before
    assert Catalog(settings).raw_file(SNAPSHOT).read_bytes() == before
    import hashlib

    assert raw.sha256 == hashlib.sha256(before).hexdigest()


def test_existing_snapshot_is_reused_not_regenerated(settings):
    first = ingest_snapshot(SNAPSHOT, rows=500, seed=1, settings=settings)
    second = ingest_snapshot(SNAPSHOT, rows=900, seed=2, settings=settings)
    assert second.sha256 == first.sha256 and second.rows == 500


def test_a_snapshot_too_small_to_train_on_is_refused(settings, good_frame):
    from crossfit_mlops.data.validate import SnapshotTooSmallError

    provide_file(settings, good_frame)  # 5 valid, complete rows
    ingest_snapshot(SNAPSHOT, settings=settings)
    strict = dataclasses.replace(settings, min_clean_rows=200)
    with pytest.raises(SnapshotTooSmallError, match="only 5 clean athletes, fewer than the 200"):
        validate_and_clean(SNAPSHOT, settings=strict)
    directory = Catalog(settings).processed_dir(SNAPSHOT)
    report = json.loads((directory / REPORT_FILE).read_text())
    assert report["status"] == "failed" and report["rows_out"] == 5 and report["min_clean_rows"] == 200
    assert not (directory / CLEAN_FILE).exists()
    assert validate_and_clean(SNAPSHOT, settings=strict, min_clean_rows=5).rows_out == 5


# --- ids too large to hold, padded header cells, changed bytes ---------------------------------------


def test_ids_too_large_to_hold_exactly_have_their_own_rule(tmp_path):
    """1e30 overflowed int64 (stored as -2^63); 2^53+1 and 2^53+2 became one float and were then
    rejected as "conflicting duplicates". Now they are quarantined, with the id as written."""
    big = [10**30, 2**53 + 1, 2**53 + 2, 2**53]
    rows = [valid_row(athlete_id=1.0), *(valid_row(athlete_id=float(i)) for i in range(2, 6)), valid_row()]
    frame = frame_of(*rows).astype({"athlete_id": object})
    frame["athlete_id"] = [1, *big, 2**53 - 1]
    path = tmp_path / "athletes.csv"
    frame.drop(columns="row_number").to_csv(path, index=False)
    check = check_contract(path)
    hits = check.quarantine[check.quarantine["rule"] == ATHLETE_ID_RANGE_RULE]
    assert dict(zip(hits["row_number"], hits["value"], strict=True)) == {2: str(10**30), 3: str(2**53 + 1), 4: str(2**53 + 2), 5: str(2**53)}
    assert set(check.quarantine["row_number"]) == {2, 3, 4, 5}, "no other rule fires for them"
    from crossfit_mlops.data.clean import clean_rows

    clean = clean_rows(check.frame.loc[~check.is_bad].reset_index(drop=True), pd.Timestamp(SNAPSHOT, tz="UTC")).clean
    assert sorted(clean["athlete_id"].tolist()) == [1, 2**53 - 1], "the largest exact id is kept exactly"


def test_header_cells_with_stray_whitespace_are_read_stripped_and_reported(tmp_path, settings, good_frame):
    path = tmp_path / "athletes.csv"
    write_csv(path, good_frame)
    lines = path.read_text().split("\n", 1)
    padded = tmp_path / "padded.csv"
    padded.write_text(lines[0].replace(",age,", ", age,").replace(",howlong", ",howlong ") + "\n" + lines[1])
    raw = read_raw(padded)
    assert raw.stripped_header_cells == ("' age'", "'howlong '")
    pd.testing.assert_frame_equal(raw.frame, read_raw(path).frame)

    settings.raw_file_override.parent.mkdir(parents=True, exist_ok=True)
    settings.raw_file_override.write_bytes(padded.read_bytes())
    ingest_snapshot(SNAPSHOT, settings=settings)
    validate_and_clean(SNAPSHOT, settings=settings)
    report = json.loads(Catalog(settings).report_file(SNAPSHOT).read_text())
    assert report["status"] == "ok" and report["header_cells_stripped"] == ["' age'", "'howlong '"]
    assert report["rows_out"] == 5


def test_bytes_changed_since_ingest_are_refused(tmp_path, good_frame):
    path = tmp_path / "athletes.csv"
    write_csv(path, good_frame)
    digest = sha256_of(path)
    assert len(read_raw(path, expected_sha256=digest).frame) == 5
    path.write_bytes(path.read_bytes()[:-40])  # truncated: still a well-formed CSV
    error = assert_file_error_with_digest(path, digest)
    assert error.kind == "changed_since_ingest" and digest in str(error) and "immutable" in str(error)


def assert_file_error_with_digest(path, digest) -> RawFileError:
    with pytest.raises(RawFileError) as info:
        read_raw(path, expected_sha256=digest)
    assert str(path) in str(info.value)
    return info.value


def test_rules_that_pass_nulls_themselves_give_pandas_defaults_verdicts(generated_sample, monkeypatch):
    """Speed without a change of meaning: the rules run with ignore_na=False and pass nulls
    themselves; with pandera's default (nulls dropped before each rule, passed after) the
    quarantine of a generated snapshot (nulls and junk everywhere) is the same, row for row."""
    import pandera.pandas as pa

    from crossfit_mlops.data import schema as contract

    frame = generated_sample.copy()
    frame.insert(0, "row_number", range(1, len(frame) + 1))
    fast = check_rows(frame)
    monkeypatch.setattr(contract, "_rule", lambda fn, name: pa.Check(fn, name=name, ignore_na=name != "athlete_id_present"))
    default = check_rows(frame)
    assert len(fast) > 1000 and fast["rule"].nunique() > 15
    pd.testing.assert_frame_equal(fast, default)
