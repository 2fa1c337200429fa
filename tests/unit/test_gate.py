"""The champion/challenger rule (pure) and the leaderboard ranking."""

from __future__ import annotations

import pytest

from crossfit_mlops.registry.gate import GatePolicy, decide
from crossfit_mlops.training.leaderboard import leaderboard, select_best

POLICY = GatePolicy(min_improvement=0.01, r2_floor=0.5, r2_ceiling=0.98)


def test_first_challenger_is_promoted_when_it_meets_the_floor():
    decision = decide({"rmse": 150.0, "r2": 0.7}, None, POLICY)
    assert decision.promote and "no champion yet" in decision.reason


@pytest.mark.parametrize("champion", [None, {"rmse": 500.0, "r2": 0.1}])
def test_floor_and_leakage_ceiling_reject_even_without_or_against_a_weak_champion(champion):
    low = decide({"rmse": 150.0, "r2": 0.3}, champion, POLICY)
    assert not low.promote and "below the floor" in low.reason
    leaked = decide({"rmse": 5.0, "r2": 0.995}, champion, POLICY)
    assert not leaked.promote and "leak" in leaked.reason


def test_challenger_must_beat_the_champion_by_the_margin():
    champion = {"rmse": 150.0, "r2": 0.70}
    assert decide({"rmse": 148.0, "r2": 0.71}, champion, POLICY).promote  # 1.33% better
    tie = decide({"rmse": 150.0, "r2": 0.70}, champion, POLICY)
    assert not tie.promote and "does not beat" in tie.reason
    marginal = decide({"rmse": 149.0, "r2": 0.705}, champion, POLICY)  # 0.67% < 1%
    assert not marginal.promote and "148.50" in marginal.reason


@pytest.mark.parametrize(
    "kwargs", [{"min_improvement": -0.1}, {"min_improvement": 1.0}, {"r2_floor": 0.9, "r2_ceiling": 0.8}, {"r2_ceiling": 1.5}]
)
def test_incoherent_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        GatePolicy(**kwargs)


def _result(run_id, rmse, kg=1e-5):
    return {
        "run_id": run_id, "run_name": run_id, "feature_version": "v1", "model": "lightgbm", "val_rmse": rmse,
        "val_mae": rmse * 0.8, "val_r2": 0.6, "test_rmse": rmse, "test_r2": 0.6, "emissions_kg_co2eq": kg,
        "energy_kwh": kg * 3, "fit_seconds": 1.0,
    }


def test_leaderboard_ranks_by_validation_rmse_then_emissions():
    results = [_result("a", 160.0), _result("b", 150.0, kg=2e-5), _result("c", 150.0, kg=1e-5)]
    board = leaderboard(results)
    assert list(board["run_id"]) == ["c", "b", "a"]
    assert list(board["rank"]) == [1, 2, 3]
    assert select_best(results)["run_id"] == "c"
    with pytest.raises(ValueError, match="no training results"):
        leaderboard([])


def _athletes(n=4300, seed=3):
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.normal(1018.0, 278.0, n)
    return rng, y, y + rng.normal(0.0, 150.0, n)  # the champion's predictions: RMSE about 150 lb


def test_the_paired_gate_rejects_an_improvement_inside_the_noise():
    """A challenger 0.5% better on the point estimate, with errors that differ athlete by athlete
    as much as two comparable models' do, is noise: the interval includes no improvement."""
    from crossfit_mlops.metrics import paired_improvement

    rng, y, champion = _athletes()
    challenger = y + rng.normal(0.0, 149.25, len(y))  # independent errors, 0.5% lower spread
    paired = paired_improvement(y, champion, challenger)
    assert paired["improvement_low"] < 0 < paired["improvement_high"]
    decision = decide({"rmse": paired["rmse_candidate"], "r2": 0.7}, {"rmse": paired["rmse_reference"], "r2": 0.7}, POLICY, paired)
    assert not decision.promote and "within the noise" in decision.reason and "95% CI" in decision.reason


def test_the_paired_gate_promotes_a_clearly_better_challenger_and_says_by_how_much():
    from crossfit_mlops.metrics import paired_improvement

    _, y, champion = _athletes()
    challenger = y + 0.9 * (champion - y)  # every athlete's error 10% smaller
    paired = paired_improvement(y, champion, challenger)
    assert paired["improvement_low"] > POLICY.min_improvement
    decision = decide({"rmse": paired["rmse_candidate"], "r2": 0.75}, {"rmse": paired["rmse_reference"], "r2": 0.7}, POLICY, paired)
    assert decision.promote and "clears the margin" in decision.reason and "+10.00%" in decision.reason


def test_the_paired_gate_names_a_worse_challenger_worse():
    from crossfit_mlops.metrics import paired_improvement

    _, y, champion = _athletes()
    paired = paired_improvement(y, champion, y + 1.2 * (champion - y))
    decision = decide({"rmse": paired["rmse_candidate"], "r2": 0.6}, {"rmse": paired["rmse_reference"], "r2": 0.7}, POLICY, paired)
    assert not decision.promote and "worse" in decision.reason


def test_bootstrap_intervals_cover_the_point_estimate_and_narrow_with_more_athletes():
    from crossfit_mlops.metrics import metric_intervals, regression_metrics

    _, y, pred = _athletes()
    wide, narrow = metric_intervals(y[:500], pred[:500]), metric_intervals(y, pred)
    point = regression_metrics(y, pred)
    assert narrow["rmse_low"] < point["rmse"] < narrow["rmse_high"]
    assert narrow["r2_low"] < point["r2"] < narrow["r2_high"]
    assert narrow["rmse_high"] - narrow["rmse_low"] < wide["rmse_high"] - wide["rmse_low"]


def test_the_energy_tie_break_picks_the_cheaper_of_two_near_equal_candidates():
    results = [_result("forest", 150.0, kg=4e-5), _result("boosted", 150.9, kg=1e-5), _result("far", 160.0, kg=1e-7)]
    chosen = select_best(results, energy_tolerance=0.01)
    assert chosen["run_id"] == "boosted", "within 1% of the best RMSE, the one that used a quarter of the energy"
    assert "75% less energy" in chosen["selection"] and "forest" in chosen["selection"]
    assert select_best(results, energy_tolerance=0.0)["run_id"] == "forest"
    assert select_best(results, energy_tolerance=0.0)["selection"].startswith("forest: the lowest validation RMSE")


def test_live_shadow_evidence_of_a_clearly_worse_challenger_overrides_the_test_split():
    from crossfit_mlops.registry.gate import GatePolicy, decide

    paired = {"improvement": 0.05, "improvement_low": 0.02, "improvement_high": 0.08, "rmse_candidate": 95.0,
              "rmse_reference": 100.0, "rows": 500, "confidence": 0.95}  # fmt: skip
    args = ({"rmse": 95.0, "r2": 0.7}, {"rmse": 100.0, "r2": 0.68}, GatePolicy())
    worse = {"improvement": -0.3, "improvement_low": -0.4, "improvement_high": -0.2, "rows": 150}
    rejected = decide(*args, paired=paired, shadow=worse)
    assert not rejected.promote and "clearly worse than the champion" in rejected.reason and "150 labelled requests" in rejected.reason
    unclear = decide(*args, paired=paired, shadow={**worse, "improvement_high": 0.01})
    assert unclear.promote and "on live traffic in the champion's shadow" in unclear.reason
    assert decide(*args, paired=paired).promote
