"""The generator against shared/DATA.md, on a 120,000-row sample.

Tolerances: DATA.md's figures are calibration targets read off the real data, not exact truths.
Sampling error is small next to them (about 8,000 survivors: the standard error of the mean total
lift is ~3 lb, of a correlation ~0.01), so each tolerance below is the modelling slack we accept:
about 3 points for shares, 5% relative for means and stds, 0.05-0.06 for correlations.
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from crossfit_mlops.dag_contract import MAX_GENERATED_ROWS
from crossfit_mlops.data.generate import (
    MAX_ID_SPACE,
    _draw_ids,
    _rng_for,
    generate_frame,
    id_space_for,
    write_snapshot,
)
from crossfit_mlops.data.sources import Simulator
from crossfit_mlops.data.vocabulary import (
    DECLINE,
    FULL_SIZE,
    LIFT_COLUMNS,
    MAX_ATHLETE_ID,
    RAW_COLUMNS,
    SURVEY_OPTIONS,
)

NULL_FRACTIONS = {
    "athlete_id": 0.00, "name": 0.22, "region": 0.41, "team": 0.63, "affiliate": 0.43,
    "gender": 0.22, "age": 0.22, "height": 0.62, "weight": 0.46, "fran": 0.87, "helen": 0.93,
    "grace": 0.90, "filthy50": 0.95, "fgonebad": 0.93, "run400": 0.95, "run5k": 0.91,
    "candj": 0.75, "snatch": 0.77, "deadlift": 0.73, "backsq": 0.74, "pullups": 0.88, "eat": 0.78,
    "train": 0.75, "background": 0.77, "experience": 0.75, "schedule": 0.77, "howlong": 0.74,
}  # fmt: skip


def test_header_and_order_match_the_raw_file(generated_sample):
    assert list(generated_sample.columns) == list(RAW_COLUMNS)
    assert len(RAW_COLUMNS) == 27


def test_written_file_has_the_exact_header_and_integer_ids(tmp_path):
    path = tmp_path / "athletes.csv"
    write_snapshot(path, rows=2_000, seed=1, snapshot_id="2026-01-01")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(RAW_COLUMNS)
    assert len(lines) == 2_001
    first_field = [line.split(",", 1)[0] for line in lines[1:]]
    assert sum(f == "" for f in first_field) == 3  # three rows without an id
    assert all(f.isdigit() for f in first_field if f)
    assert not list(tmp_path.glob("*.tmp"))


def test_null_fractions_match_data_card(generated_sample):
    observed = generated_sample.isna().mean()
    for column, expected in NULL_FRACTIONS.items():
        assert observed[column] == pytest.approx(expected, abs=0.02), column


def test_empty_profiles_have_name_gender_age_null_together(generated_sample):
    nulls = generated_sample[["name", "gender", "age"]].isna()
    assert (nulls.all(axis=1) == nulls.any(axis=1)).all()
    assert nulls["name"].mean() == pytest.approx(0.2175, abs=0.01)


def test_ids_are_unsorted_with_three_nulls_and_duplicates(generated_sample):
    ids = generated_sample["athlete_id"]
    assert ids.isna().sum() == 3
    assert not ids.dropna().is_monotonic_increasing
    assert ids.max() <= 632_000
    assert ids.dropna().duplicated().sum() >= 2  # an exact duplicate row and a conflicting id
    assert generated_sample.duplicated().sum() >= 1


def test_the_default_id_space_is_the_real_range_and_keeps_existing_seeds():
    """The ids of a seed are those drawn before scale runs got their own id space."""
    frame = generate_frame(rows=2_000, seed=1, snapshot_id="2026-01-01")
    assert frame["athlete_id"].head(5).tolist() == [461690.0, 135245.0, 144334.0, 237453.0, 287966.0]
    explicit = generate_frame(rows=2_000, seed=1, snapshot_id="2026-01-01", max_athlete_id=MAX_ATHLETE_ID)
    pd.testing.assert_frame_equal(frame, explicit)


@pytest.mark.parametrize(
    ("rows", "space", "words"),
    [
        (MAX_ATHLETE_ID + 1, MAX_ATHLETE_ID, ["rows=632001", "632000 unique athlete ids of the real file's range",
                                              "--max-athlete-id", "at least 632001", "e.g. 944253"]),
        (4 * FULL_SIZE, MAX_ATHLETE_ID, ["rows=1692024", "e.g. 2528000"]),
        (1_000, 999, ["rows=1000", "999 unique athlete ids of the id space asked for"]),
    ],
)  # fmt: skip
def test_a_size_the_id_space_cannot_serve_is_refused_naming_rows(rows, space, words):
    started = time.perf_counter()
    with pytest.raises(ValueError) as refused:
        generate_frame(rows=rows, max_athlete_id=space)
    assert time.perf_counter() - started < 1  # refused before anything is drawn
    for word in words:
        assert word in str(refused.value)


@pytest.mark.parametrize("space", [0, -5, True, 2.5, "632000", MAX_ID_SPACE + 1])
def test_an_id_space_that_is_not_a_whole_number_in_range_is_refused(space):
    with pytest.raises(ValueError, match="max_athlete_id must be a whole number"):
        generate_frame(rows=100, max_athlete_id=space)


def test_a_larger_id_space_serves_every_id_of_it():
    """5,000 rows from 5,000 ids: every id once, apart from the recipe traps' reused ids."""
    ids = generate_frame(rows=5_000, seed=3, max_athlete_id=5_000)["athlete_id"].dropna()
    assert ids.min() >= 1 and ids.max() <= 5_000
    assert ids.nunique() >= 5_000 - 3 - 2  # three null ids, two rows copied onto others


def test_id_space_for_keeps_the_real_range_up_to_full_size_and_its_density_beyond():
    assert id_space_for(FULL_SIZE) == MAX_ATHLETE_ID
    assert id_space_for(1_000) == MAX_ATHLETE_ID
    assert id_space_for(4 * FULL_SIZE) == 4 * MAX_ATHLETE_ID
    assert id_space_for(MAX_GENERATED_ROWS) <= MAX_ID_SPACE  # every size allowed has a space allowed


def test_the_id_draw_at_4x_the_full_size_is_fast_and_memory_bounded():
    rows = 4 * FULL_SIZE
    tracemalloc.start()
    started = time.perf_counter()
    ids = _draw_ids(_rng_for(42), rows, id_space_for(rows))
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(np.unique(ids)) == rows and ids.min() >= 1 and ids.max() <= id_space_for(rows)
    assert ids.max() > MAX_ATHLETE_ID  # beyond the real file's range
    assert peak < 64e6, f"{peak / 1e6:.0f} MB"  # 2.5 M ids x 8 bytes, plus the 1.7 M drawn
    assert seconds < 5, f"{seconds:.1f} s"  # about 0.2 s on the 2-core machine


def test_the_simulator_passes_the_id_space_and_names_it_beyond_the_real_data(tmp_path):
    scaled = Simulator("2026-01-01", rows=2_000, max_athlete_id=5 * MAX_ATHLETE_ID)
    assert "ids up to 3160000: beyond the real data" in scaled.describe()
    assert "beyond" not in Simulator("2026-01-01", rows=2_000).describe()
    scaled.write(tmp_path / "athletes.csv")
    ids = pd.read_csv(tmp_path / "athletes.csv", usecols=["athlete_id"])["athlete_id"]
    assert ids.max() > MAX_ATHLETE_ID  # 2,000 ids from 3.16 M: almost surely some above 632,000


def test_junk_values_occur(generated_sample):
    g = generated_sample
    assert (g[list(LIFT_COLUMNS)] == 0).any().all()
    assert (g[list(LIFT_COLUMNS)] < 0).any().any()
    assert (g["weight"] >= 1500).any() and (g["weight"] <= 28).any()
    assert (g["age"] == 125).any() or (g["age"] > 90).any()
    assert ((g["height"] <= 48) | (g["height"] >= 96)).any()
    assert (g["gender"] == "--").any()
    assert (g[list(LIFT_COLUMNS)] == 1).all(axis=1).any()  # total_lift of 4


def test_survey_answers_have_the_raw_form(generated_sample):
    for column in ("eat", "train", "background", "experience", "schedule", "howlong"):
        answers = generated_sample[column].dropna()
        assert answers.str.endswith("|").all(), column
        assert (answers == f"{DECLINE}|").any(), column
        assert (answers.str.contains(DECLINE, regex=False) & (answers != f"{DECLINE}|")).any(), column
    howlong = generated_sample["howlong"].dropna()
    assert howlong.str.count(r"\|").max() >= 2  # contradictory combinations such as 1-2|2-4 years
    assert generated_sample["name"].dropna().map(lambda s: not s.isascii()).any()


def test_deterministic_for_seed_and_snapshot():
    a = generate_frame(rows=3_000, seed=11, snapshot_id="2026-02-01")
    b = generate_frame(rows=3_000, seed=11, snapshot_id="2026-02-01")
    pd.testing.assert_frame_equal(a, b)
    later = generate_frame(rows=3_000, seed=11, snapshot_id="2026-05-01")
    # the same athletes; a few percent updated their weight or lifts
    assert (later["athlete_id"].fillna(-1) == a["athlete_id"].fillna(-1)).mean() > 0.99
    changed = (later["weight"].fillna(-1) != a["weight"].fillna(-1)).mean()
    assert 0.0 < changed < 0.05
    other_seed = generate_frame(rows=3_000, seed=12, snapshot_id="2026-02-01")
    assert not other_seed["athlete_id"].equals(a["athlete_id"])


def test_about_seven_percent_survive_cleaning(cleaned_sample):
    from tests.conftest import SAMPLE_ROWS

    assert len(cleaned_sample) / SAMPLE_ROWS == pytest.approx(0.07, abs=0.015)


def test_survivor_demographics_match_data_card(cleaned_sample):
    c = cleaned_sample
    assert (c["gender"] == "Male").mean() == pytest.approx(0.73, abs=0.03)
    expected = {  # (women mean, std), (men mean, std)
        "age": ((31.8, 7.4), (32.2, 7.5)),
        "height": ((64.8, 2.7), (70.4, 2.9)),
        "weight": ((144, 22), (190, 27)),
        "candj": ((140, 32), (230, 46)),
        "snatch": ((104, 27), (176, 40)),
        "deadlift": ((249, 52), (404, 73)),
        "backsq": ((200, 45), (330, 68)),
        "total_lift": ((693, 142), (1140, 209)),
    }
    stats = c.groupby("gender")[list(expected)].agg(["mean", "std"])
    for column, (women, men) in expected.items():
        for gender, (mean, std) in (("Female", women), ("Male", men)):
            assert stats.loc[gender, (column, "mean")] == pytest.approx(mean, rel=0.05), (column, gender)
            # std: 10% (snatch std in DATA.md is high relative to its mean, we land a bit under)
            assert stats.loc[gender, (column, "std")] == pytest.approx(std, rel=0.12), (column, gender)


def test_survivor_correlations_and_target_distribution(cleaned_sample):
    c = cleaned_sample
    assert c["height"].corr(c["weight"]) == pytest.approx(0.71, abs=0.05)
    lift_corr = c[list(LIFT_COLUMNS)].corr().to_numpy()[np.triu_indices(4, 1)]
    assert lift_corr.min() >= 0.83 and lift_corr.max() <= 0.96
    total = c["total_lift"]
    assert total.mean() == pytest.approx(1018, rel=0.04)
    assert total.std() == pytest.approx(278, rel=0.06)
    assert total.quantile(0.01) == pytest.approx(440, rel=0.08)
    assert total.median() == pytest.approx(1040, rel=0.04)
    assert total.quantile(0.99) == pytest.approx(1590, rel=0.05)
    assert total.corr(c["weight"]) == pytest.approx(0.62, abs=0.05)
    assert total.corr(c["height"]) == pytest.approx(0.53, abs=0.06)
    assert total.corr(c["age"]) == pytest.approx(-0.14, abs=0.06)


def test_survey_option_shares_match_data_card(cleaned_sample):
    shares = {
        ("eat", "I eat quality foods but don't measure the amount"): 0.74,
        ("eat", "I eat 1-3 full cheat meals per week"): 0.28,
        ("eat", "I eat whatever is convenient"): 0.19,
        ("eat", "I weigh and measure my food"): 0.09,
        ("background", "I played youth or high school level sports"): 0.71,
        ("background", "I played college sports"): 0.28,
        ("background", "I have no athletic background besides CrossFit"): 0.14,
        ("experience", "I began CrossFit with a coach (e.g. at an affiliate)"): 0.75,
        ("experience", "I have completed the CrossFit Level 1 certificate course"): 0.31,
        ("schedule", "I usually only do 1 workout a day"): 0.56,
        ("schedule", "I typically rest 4 or more days per month"): 0.47,
        ("schedule", "I do multiple workouts in a day 3+ times a week"): 0.22,
        ("howlong", "1-2 years"): 0.36,
        ("howlong", "2-4 years"): 0.34,
        ("howlong", "Less than 6 months"): 0.06,
    }
    for (question, option), expected in shares.items():
        assert option in SURVEY_OPTIONS[question]
        ticked = cleaned_sample[question].map(lambda a, o=option: o in a.split("|")).mean()
        assert ticked == pytest.approx(expected, abs=0.05), (question, option)


@pytest.mark.slow
def test_richer_features_predict_better_but_never_perfectly(cleaned_sample):
    """A default LightGBM reaches about the R^2 known for the real data, V2 clearly above V1."""
    import lightgbm as lgb
    from sklearn.metrics import r2_score
    from sklearn.model_selection import train_test_split

    from crossfit_mlops.features.engineer import engineer_features

    r2 = {}
    for version in ("v1", "v2"):
        x = engineer_features(cleaned_sample, version).drop(columns=["athlete_id", "event_timestamp"])
        y = cleaned_sample["total_lift"]
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0)
        model = lgb.LGBMRegressor(verbose=-1, random_state=0).fit(x_tr, y_tr)
        r2[version] = r2_score(y_te, model.predict(x_te))
    assert 0.52 <= r2["v1"] <= 0.70, r2
    assert 0.64 <= r2["v2"] <= 0.80, r2
    assert r2["v2"] - r2["v1"] >= 0.06, r2


# Survey effects measured on the real data (shared/DATA.md): within each sex, the mean total_lift
# of cleaned athletes who ticked the option minus those who did not, averaged over the two sexes.
REAL_SURVEY_EFFECTS = {
    ("experience", "I train other people"): 130,
    ("experience", "I have completed the CrossFit Level 1 certificate course"): 125,
    ("howlong", "Less than 6 months"): -125,
    ("background", "I have no athletic background besides CrossFit"): -113,
    ("howlong", "4+ years"): 94,
    ("experience", "I began CrossFit by trying it alone (without a coach)"): 86,
    ("experience", "I began CrossFit with a coach (e.g. at an affiliate)"): -79,
    ("eat", "I weigh and measure my food"): 27,
    ("eat", "I eat whatever is convenient"): 2,
    ("eat", "I eat strict Paleo"): -12,
}
# Tolerance on each effect, in lb. On the session sample (about 8,100 clean athletes, 2,300
# women) an effect's standard error is 4-9 lb (an option ticked by 6-10% of athletes: ~9 lb;
# by 25-75%: ~5 lb), so 25 lb is about 3 standard errors of the rarest options; it is also
# about 12% of the men's and 18% of the women's within-sex spread, small next to the effects
# that matter (90-130 lb), and well under the misses this table was added for (50-110 lb).
SURVEY_EFFECT_TOLERANCE_LB = 25.0


def survey_effects(cleaned: pd.DataFrame) -> dict[tuple[str, str], float]:
    """Each option's effect as in REAL_SURVEY_EFFECTS, computed on cleaned rows."""
    effects = {}
    for question, option in REAL_SURVEY_EFFECTS:
        ticked = cleaned[question].map(lambda a, o=option: o in a.split("|"))
        diffs = []
        for gender in ("Female", "Male"):
            sex = cleaned["gender"] == gender
            diffs.append(
                cleaned.loc[sex & ticked, "total_lift"].mean() - cleaned.loc[sex & ~ticked, "total_lift"].mean()
            )
        effects[(question, option)] = float(np.mean(diffs))
    return effects


def test_survey_effects_on_total_lift_match_the_real_data(cleaned_sample):
    """The latent traits behind the answers give each option the effect measured on real athletes:
    the right sign (all but the near-zero 'whatever is convenient', +2 lb), within the tolerance."""
    effects = survey_effects(cleaned_sample)
    for key, real in REAL_SURVEY_EFFECTS.items():
        generated = effects[key]
        if abs(real) >= 10:
            assert np.sign(generated) == np.sign(real), (key, real, round(generated, 1))
        assert generated == pytest.approx(real, abs=SURVEY_EFFECT_TOLERANCE_LB), (key, real, round(generated, 1))
    real, generated = np.array(list(REAL_SURVEY_EFFECTS.values())), np.array([effects[k] for k in REAL_SURVEY_EFFECTS])
    assert np.corrcoef(real, generated)[0, 1] >= 0.95


def test_a_pipeline_run_asking_for_more_rows_than_the_real_range_gets_a_scale_id_space(tmp_path):
    """Ingest (the DAGs' path) serves every size its ``rows`` Param allows: up to the real file's
    id range with the real ids, above it with ids beyond the real data, said in the origin."""
    from crossfit_mlops.data.generate import id_space_for
    from crossfit_mlops.data.ingest import raw_source
    from crossfit_mlops.data.vocabulary import MAX_ATHLETE_ID
    from crossfit_mlops.settings import get_settings

    settings = get_settings({"CROSSFIT_STATE_DIR": str(tmp_path)})
    assert raw_source("2026-01-01", settings, rows=MAX_ATHLETE_ID).max_athlete_id == MAX_ATHLETE_ID
    scale = raw_source("2026-01-01", settings, rows=MAX_GENERATED_ROWS)
    assert scale.max_athlete_id == id_space_for(MAX_GENERATED_ROWS) >= MAX_GENERATED_ROWS
    assert "beyond the real data" in scale.describe()
