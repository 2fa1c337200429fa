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
