"""Each cleaning rule, and the usual recipe's four defects fixed."""

from __future__ import annotations

import pandas as pd
import pytest

from crossfit_mlops.data.clean import CLEAN_COLUMNS, clean_rows, strip_decline
from tests.unit.test_contract import frame_of, valid_row

WHEN = pd.Timestamp("2026-03-01", tz="UTC")


def rejected_rules(result) -> dict[int, str]:
    return dict(zip(result.rejected["row_number"], result.rejected["rule"], strict=True))


def test_complete_row_becomes_one_clean_row_with_real_id_and_snapshot_time():
    result = clean_rows(frame_of(valid_row(athlete_id=2554.0)), WHEN)
    clean = result.clean
    assert list(clean.columns) == list(CLEAN_COLUMNS)
    assert clean.loc[0, "athlete_id"] == 2554 and clean["athlete_id"].dtype == "int64"
    assert clean.loc[0, "event_timestamp"] == WHEN
    assert clean.loc[0, "total_lift"] == 300 + 240 + 500 + 420
    assert result.rejected.empty


def test_missing_required_fields_are_rejected_with_the_columns_named():
    frame = frame_of(valid_row(athlete_id=1.0), valid_row(athlete_id=2.0, height=None, eat=None))
    result = clean_rows(frame, WHEN)
    assert rejected_rules(result) == {2: "missing_required"}
    assert result.rejected.loc[0, "detail"] == "height,eat"
    # benchmark workouts are not required
    assert clean_rows(frame_of(valid_row(fran=None, pullups=None)), WHEN).clean.shape[0] == 1


def test_decline_alone_rejects_the_row():
    frame = frame_of(valid_row(athlete_id=1.0), valid_row(athlete_id=2.0, howlong="Decline to answer|"))
    result = clean_rows(frame, WHEN)
    assert rejected_rules(result) == {2: "survey_declined"}
    assert result.rejected.loc[0, "detail"] == "howlong"


def test_decline_inside_a_multi_answer_is_removed_not_kept():
    answer = "I eat 1-3 full cheat meals per week|Decline to answer|I eat strict Paleo|"
    result = clean_rows(frame_of(valid_row(eat=answer)), WHEN)
    assert result.clean.loc[0, "eat"] == "I eat 1-3 full cheat meals per week|I eat strict Paleo|"
    assert result.counts["decline_options_removed"] == 1
    assert strip_decline("Decline to answer|a|") == "a|"


def test_exact_duplicate_rows_collapse_to_one():
    frame = frame_of(valid_row(athlete_id=7.0), valid_row(athlete_id=8.0), valid_row(athlete_id=7.0))
    result = clean_rows(frame, WHEN)
    assert sorted(result.clean["athlete_id"]) == [7, 8]
    assert rejected_rules(result) == {3: "duplicate_row"}
    assert result.rejected.loc[0, "detail"] == "same as row 1"


def test_an_id_on_rows_with_different_content_is_rejected_whole():
    frame = frame_of(valid_row(athlete_id=7.0), valid_row(athlete_id=7.0, weight=200.0), valid_row(athlete_id=9.0))
    result = clean_rows(frame, WHEN)
    assert result.clean["athlete_id"].tolist() == [9]
    assert rejected_rules(result) == {1: "conflicting_duplicate_id", 2: "conflicting_duplicate_id"}
    assert set(result.rejected["detail"]) == {"rows 1,2"}


def test_nothing_is_lost_every_row_is_clean_or_rejected():
    rows = [valid_row(athlete_id=float(i)) for i in range(1, 7)]
    rows[1] = valid_row(athlete_id=2.0, weight=None)
    rows[3] = valid_row(athlete_id=3.0)  # duplicate of row 3
    rows[4] = valid_row(athlete_id=5.0, schedule="Decline to answer|")
    result = clean_rows(frame_of(*rows), WHEN)
    assert len(result.clean) + len(result.rejected) == len(rows)
    assert result.counts["rows_in"] == 6 and result.counts["rows_out"] == len(result.clean)


def test_naive_timestamps_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        clean_rows(frame_of(valid_row()), pd.Timestamp("2026-03-01"))


def test_the_recipes_junk_minimums_and_female_deadlifts_do_not_survive(cleaned_sample):
    """On a generated snapshot (which contains all four traps), none of them reaches clean data."""
    c = cleaned_sample
    assert c["total_lift"].min() > 4 * 15
    assert c["weight"].min() >= 70
    assert (c.loc[c["gender"] == "Female", "deadlift"] > 0).all()
    assert not c["athlete_id"].duplicated().any()
    for column in ("eat", "train", "background", "experience", "schedule", "howlong"):
        assert not c[column].str.contains("Decline to answer", regex=False).any()


def test_duplicate_labels_equal_the_per_athlete_labels_they_replace(cleaned_sample, generated_sample):
    """Cleaning labels only the rows of repeated content and shared ids (the old code labelled
    every athlete with a Python lambda, 4 s of 5); the labels are the same, on a generated
    snapshot with extra exact copies and conflicting ids."""
    from crossfit_mlops.data.vocabulary import RAW_COLUMNS

    complete = cleaned_sample["row_number"].to_numpy()[:40]
    frame = generated_sample.copy()
    frame.insert(0, "row_number", range(1, len(frame) + 1))
    base = frame.iloc[complete - 1]
    copies = base.iloc[:20].assign(row_number=lambda f: f["row_number"] + 10_000_000)
    conflicts = base.iloc[20:].assign(row_number=lambda f: f["row_number"] + 20_000_000, weight=lambda f: f["weight"] + 1)
    frame = pd.concat([frame, copies, conflicts], ignore_index=True)
    result = clean_rows(frame, WHEN)

    content = list(RAW_COLUMNS)  # the former labelling, on every row (copies are exact raw copies)
    first = frame.groupby(content, dropna=False, sort=False)["row_number"].transform("first")
    rejected = result.rejected.set_index("row_number")
    duplicates = rejected[rejected["rule"] == "duplicate_row"]
    assert len(duplicates) >= 20
    for row, detail in duplicates["detail"].items():
        assert detail == f"same as row {first[frame['row_number'] == row].iloc[0]}"
    conflicting = rejected[rejected["rule"] == "conflicting_duplicate_id"]
    assert len(conflicting) >= 40
    survivors = frame[frame["row_number"].isin(conflicting.index)]
    expected = survivors.groupby("athlete_id")["row_number"].transform(lambda s: "rows " + ",".join(map(str, s)))
    assert dict(zip(survivors["row_number"], expected, strict=True)) == conflicting["detail"].to_dict()
