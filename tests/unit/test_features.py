"""V1/V2 specs, engineering, the Feast schema built from them, and the no-leakage rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crossfit_mlops.data.clean import clean_rows
from crossfit_mlops.data.vocabulary import DECLINE, LIFT_COLUMNS
from crossfit_mlops.features.engineer import engineer_features
from crossfit_mlops.features.specs import FEATURE_SETS, feature_set, slug
from crossfit_mlops.storage import Catalog
from tests.unit.test_contract import frame_of, valid_row

WHEN = pd.Timestamp("2026-03-01", tz="UTC")


def test_v1_is_small_and_v2_is_rich_and_contains_v1():
    v1, v2 = feature_set("v1"), feature_set("v2")
    assert v1.names == ["is_male", "age", "height_in", "weight_lb", "region_code"]
    assert 28 <= len(v2.names) <= 36
    assert v2.names[: len(v1.names)] == v1.names
    assert "bmi" in v2.names
    for spec in FEATURE_SETS.values():
        assert len(set(spec.names)) == len(spec.names)
        assert spec.view_name == f"athlete_features_{spec.version}"
        assert spec.service_name == f"model_{spec.version}"


def test_decline_to_answer_is_never_a_feature():
    for spec in FEATURE_SETS.values():
        for feature in spec.features:
            assert "decline" not in feature.name
            assert feature.survey_option is None or feature.survey_option[1] != DECLINE


def test_no_spec_reads_a_lift_or_the_target():
    forbidden = {*LIFT_COLUMNS, "total_lift"}
    for spec in FEATURE_SETS.values():
        for feature in spec.features:
            assert not forbidden & set(feature.inputs), feature


def test_features_do_not_change_when_the_lifts_do(cleaned_sample):
    """The leakage proof: scramble every lift and the target; every feature stays identical."""
    rng = np.random.default_rng(0)
    scrambled = cleaned_sample.copy()
    for column in (*LIFT_COLUMNS, "total_lift"):
        scrambled[column] = rng.permutation(scrambled[column].to_numpy()) * 3 + 17
    for version in FEATURE_SETS:
        pd.testing.assert_frame_equal(
            engineer_features(cleaned_sample, version), engineer_features(scrambled, version)
        )
    # and the features cannot even be computed from lifts alone
    with pytest.raises(ValueError, match="lacks columns"):
        engineer_features(cleaned_sample[["athlete_id", "event_timestamp", *LIFT_COLUMNS]], "v1")


def test_engineered_table_has_key_timestamp_and_spec_columns_in_order(cleaned_sample):
    for version, spec in FEATURE_SETS.items():
        table = engineer_features(cleaned_sample, version)
        assert list(table.columns) == ["athlete_id", "event_timestamp", *spec.names]
        for feature in spec.features:
            assert table[feature.name].dtype == feature.dtype
        assert table.notna().all().all()
        assert len(table) == len(cleaned_sample)


def test_encodings_of_one_athlete():
    row = valid_row(
        gender="Female", region="Europe", height=64.0, weight=140.0,
        eat="I eat 1-3 full cheat meals per week|I eat strict Paleo|",
        howlong="1-2 years|2-4 years|",
    )  # fmt: skip
    clean = clean_rows(frame_of(row), WHEN).clean
    v2 = engineer_features(clean, "v2").iloc[0]
    assert v2["is_male"] == 0 and v2["region_code"] == 4
    assert v2["bmi"] == pytest.approx(703 * 140 / 64**2, abs=1e-3)
    assert v2["eat__i_eat_strict_paleo"] == 1
    assert v2["eat__i_eat_1_to_3_full_cheat_meals_per_week"] == 1
    assert v2["eat__i_eat_whatever_is_convenient"] == 0
    assert v2["howlong__1_to_2_years"] == 1 and v2["howlong__2_to_4_years"] == 1  # contradictory kept
    assert v2["howlong__4plus_years"] == 0


def test_slug_is_stable():
    assert slug("4+ years") == "4plus_years"
    assert slug("6-12 months") == "6_to_12_months"
    assert slug("I began CrossFit with a coach (e.g. at an affiliate)") == "i_began_crossfit_with_a_coach"


def test_feast_views_and_services_are_built_from_the_specs(settings):
    from datetime import timedelta

    from crossfit_mlops.features.feast_repo import feast_definitions

    definitions = feast_definitions(settings)
    assert definitions.entity.join_key == "athlete_id"
    for version, spec in FEATURE_SETS.items():
        view = definitions.views[version]
        assert view.name == spec.view_name
        assert sorted(f.name for f in view.schema) == sorted(spec.names)  # Feast reorders fields
        assert timedelta(days=30) <= view.ttl <= timedelta(days=730)
        assert view.batch_source.timestamp_field == "event_timestamp"
        assert view.batch_source.path == str(Catalog(settings).feature_table_dir(spec.view_name))
        service = definitions.services[version]
        assert service.name == spec.service_name
        assert [p.name for p in service.feature_view_projections] == [spec.view_name]
