"""Monitoring's pure parts: the retraining policy, reading Evidently's drift results, the generator's
simulated season, and the refusal to rewrite a raw snapshot with another season shift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crossfit_mlops.data.generate import MAX_SEASON_SHIFT, generate_frame
from crossfit_mlops.data.ingest import ingest_snapshot
from crossfit_mlops.data.vocabulary import LIFT_COLUMNS
from crossfit_mlops.monitoring.monitor import MonitoringError, prepare_snapshot
from crossfit_mlops.monitoring.policy import MonitoringPolicy, PolicyError, decide

POLICY = MonitoringPolicy(max_drift_share=0.3, max_rmse_increase=0.10, drift_threshold=0.1)


def test_stable_error_and_few_drifted_features_keep_the_champion():
    decision = decide(POLICY, ["bmi"], 10, rmse_reference=170.0, rmse_current=178.0)  # +4.7%, 10%
    assert not decision.retrain and decision.label == "keep"
    assert "within the 10% allowed" in decision.summary and "1/10 features drifted (bmi)" in decision.summary


def test_a_grown_error_alone_triggers_retraining_and_says_by_how_much():
    decision = decide(POLICY, [], 10, rmse_reference=170.0, rmse_current=200.0)
    assert decision.retrain and decision.label == "retrain"
    assert "RMSE rose +17.6% (170.0 -> 200.0 lb)" in decision.summary


def test_drift_share_at_the_threshold_triggers_retraining_even_with_a_stable_error():
    decision = decide(POLICY, ["age", "weight_lb", "bmi"], 10, rmse_reference=170.0, rmse_current=170.0)
    assert decision.retrain and "3/10 features drifted (age, weight_lb, bmi)" in decision.summary
    assert not decide(POLICY, ["age", "weight_lb"], 10, 170.0, 170.0).retrain


@pytest.mark.parametrize(
    "kwargs", [{"max_drift_share": 0.0}, {"max_drift_share": 1.5}, {"max_rmse_increase": -0.1}, {"drift_threshold": 0.0}]
)
def test_meaningless_thresholds_are_refused(kwargs):
    with pytest.raises(PolicyError):
        MonitoringPolicy(**kwargs)


def test_decide_refuses_an_empty_model_or_a_zero_reference_error():
    with pytest.raises(PolicyError, match="no features"):
        decide(POLICY, [], 0, 170.0, 170.0)
    with pytest.raises(PolicyError, match="reference RMSE"):
        decide(POLICY, [], 5, 0.0, 170.0)


def _frames(n: int = 600, weight_factor: float = 1.0, region_shift: bool = False):
    rng = np.random.default_rng(7)
    reference = pd.DataFrame(
        {
            "age": rng.normal(32, 7, n),
            "weight_lb": rng.normal(180, 30, n),
            "is_male": (rng.random(n) < 0.73).astype("int64"),
            "region_code": rng.integers(0, 17, n).astype("int64"),
        }
    )
    current = reference.copy()
    current["weight_lb"] *= weight_factor
    if region_shift:
        current["region_code"] = np.where(rng.random(n) < 0.6, 3, current["region_code"]).astype("int64")
    for frame in (reference, current):
        frame["total_lift"] = frame["weight_lb"] * 5 + rng.normal(0, 100, n)
        frame["prediction"] = reference["weight_lb"].to_numpy() * 5
    return reference, current


def test_evidently_results_are_read_per_column_with_the_methods_chosen():
    from crossfit_mlops.monitoring.drift import column_drifts, column_kinds, run_report

    reference, current = _frames(weight_factor=1.1, region_shift=True)
    features = ["age", "weight_lb", "is_male", "region_code"]
    snapshot = run_report(reference, current, features, "total_lift", threshold=0.1)
    drifts = {d.column: d for d in column_drifts(snapshot, column_kinds(reference, [*features, "total_lift", "prediction"]))}
    assert drifts["weight_lb"].kind == "numerical" and drifts["weight_lb"].method == "wasserstein"
    assert drifts["region_code"].kind == "categorical" and drifts["region_code"].method == "jensenshannon"
    assert drifts["weight_lb"].drifted and drifts["region_code"].drifted and drifts["total_lift"].drifted
    assert drifts["age"].score == pytest.approx(0.0) and not drifts["age"].drifted
    assert not drifts["is_male"].drifted
    assert not drifts["prediction"].drifted  # the fake model's predictions did not move


def test_a_missing_column_is_named():
    from crossfit_mlops.monitoring.drift import run_report

    reference, current = _frames()
    with pytest.raises(KeyError, match="bmi"):
        run_report(reference, current, ["age", "bmi"], "total_lift", threshold=0.1)


def test_season_shift_scales_positive_lifts_and_weight_of_the_same_athletes():
    base = generate_frame(rows=3_000, seed=4, snapshot_id="2026-03-01")
    shifted = generate_frame(rows=3_000, seed=4, snapshot_id="2026-03-01", season_shift=0.2)
    assert base["athlete_id"].equals(shifted["athlete_id"])
    for col in LIFT_COLUMNS:
        positive = base[col] > 0
        ratio = (shifted.loc[positive, col] / base.loc[positive, col]).median()
        assert ratio == pytest.approx(1.2, abs=0.01), col
        assert shifted.loc[~positive, col].equals(base.loc[~positive, col]), "junk lifts stay junk"
    weight = base["weight"] > 0
    assert (shifted.loc[weight, "weight"] / base.loc[weight, "weight"]).median() == pytest.approx(1.1, abs=0.01)
    assert base["age"].equals(shifted["age"])
    with pytest.raises(ValueError, match="season_shift"):
        generate_frame(rows=100, season_shift=MAX_SEASON_SHIFT + 0.1)


def test_a_season_shift_is_not_silently_ignored_on_an_existing_snapshot(settings):
    raw = ingest_snapshot("2026-04-01", rows=500, seed=1, settings=settings)
    assert raw.season_shift == 0.0
    reference = {"feature_version": "v2", "raw_rows": 500, "raw_seed": 1}
    with pytest.raises(MonitoringError, match="never rewritten"):
        prepare_snapshot("2026-04-01", reference, settings=settings, season_shift=0.2)
    shifted = ingest_snapshot("2026-04-02", rows=500, seed=1, settings=settings, season_shift=0.2)
    assert shifted.season_shift == 0.2 and shifted.source == "generated"
