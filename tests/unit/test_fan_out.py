"""The training fan-out's outcome: failed candidates are found, named with their error, put on the
leaderboard, and the run goes on only when enough candidates trained."""

from __future__ import annotations

import pytest

from crossfit_mlops.dag_contract import TrainingTasks as T
from crossfit_mlops.training.fan_out import (
    NO_RUN,
    FailedCandidate,
    FitError,
    TooFewCandidates,
    describe_error,
    failed_candidates,
    map_states,
    never_ran,
    require_enough,
)
from crossfit_mlops.training.leaderboard import FAILED, TRAINED, full_leaderboard, select_best


def _job(name: str, model: str = "lightgbm", version: str = "v1") -> dict:
    return {"config": {"name": name, "model": model, "feature_version": version, "params": {}}, "training_set": {}}


def _result(name: str, rmse: float) -> dict:
    return {
        "run_id": f"run-{name}", "run_name": name, "feature_version": "v1", "model": "lightgbm", "val_rmse": rmse,
        "val_mae": rmse * 0.8, "val_r2": 0.6, "test_rmse": rmse, "test_r2": 0.6, "emissions_kg_co2eq": 1e-5,
        "energy_kwh": 3e-5, "fit_seconds": 1.0,
    }  # fmt: skip


def _failed(name: str, error: str = "LightGBMError: boom", index: int = 0) -> FailedCandidate:
    return FailedCandidate(name, "lightgbm", "v2", index, "failed", error, "run-x")


def test_the_mapped_task_states_are_read_by_map_index():
    states = {f"{T.TRAIN}_0": "success", f"{T.TRAIN}_12": "failed", f"{T.TRAIN}_x": "odd",
              T.REGISTER: "running", T.TRAIN: "upstream_failed"}  # fmt: skip
    assert map_states(states, T.TRAIN) == {0: "success", 12: "failed", -1: "upstream_failed"}
    from airflow.utils.state import TaskInstanceState

    assert map_states({f"{T.TRAIN}_0": TaskInstanceState.FAILED}, T.TRAIN) == {0: "failed"}, "Airflow's enum reads the same"


def test_the_jobs_without_a_result_are_the_failed_candidates_with_their_error():
    jobs = [_job("a"), _job("b", version="v2"), _job("c")]
    failed = failed_candidates(jobs, [_result("a", 100.0)], {0: "success", 1: "failed", 2: "upstream_failed"},
                               {1: ("run-b", "FitError: LightGBMError in the fit of b: Check failed")})  # fmt: skip
    assert [(f.run_name, f.map_index, f.state, f.feature_version) for f in failed] == [("b", 1, "failed", "v2"), ("c", 2, "upstream_failed", "v1")]
    assert failed[0].error.startswith("FitError") and failed[0].run_id == "run-b"
    assert failed[1].error == NO_RUN and failed[1].run_id is None, "no child run: it failed before training began"


@pytest.mark.parametrize(("trained", "minimum"), [(1, 1), (2, 2), (3, 1)])
def test_enough_trained_candidates_let_the_run_go_on(trained, minimum):
    require_enough(trained, [_failed("x")], minimum)


def test_too_few_trained_candidates_fail_naming_how_many_and_the_first_error():
    failed = [_failed("lightgbm-v2-subsample=1e-09", "LightGBMError in the fit: Check failed: (num_data) > (0)"),
              _failed("rf", "aborted: killed", index=1)]  # fmt: skip
    with pytest.raises(TooFewCandidates) as caught:
        require_enough(1, failed, 2)
    message = str(caught.value)
    assert message.startswith("only 1 of 3 candidates trained, fewer than min_successful_candidates=2: 2 failed")
    assert "the first: lightgbm-v2-subsample=1e-09: LightGBMError in the fit: Check failed: (num_data) > (0)" in message
    with pytest.raises(TooFewCandidates, match="only 0 of 1 candidates trained"):
        require_enough(0, failed[:1], 1)


def test_a_fan_out_that_never_expanded_is_told_apart_from_one_that_failed():
    assert never_ran({f"{T.TRAIN}_0": "failed", T.START_MLFLOW_RUN: "success"}, T.TRAIN) is None
    reason = never_ran({T.TRAIN: "upstream_failed", T.START_MLFLOW_RUN: "failed", T.RESOLVE_RUN: "success"}, T.TRAIN)
    assert reason == f"the training fan-out did not run: {T.START_MLFLOW_RUN} failed"


def test_an_error_is_described_by_its_type_and_cut_to_what_a_tag_holds():
    assert describe_error(ValueError("bad")) == "ValueError: bad"
    assert describe_error(FitError("LightGBMError in the fit of x: no")) == "LightGBMError in the fit of x: no"
    assert len(describe_error(RuntimeError("x" * 10_000))) == 2000


def test_the_leaderboard_ranks_the_trained_and_lists_the_failed_with_their_error():
    results = [_result("a", 160.0), _result("b", 150.0)]
    board = full_leaderboard(results, [_failed("c", "LightGBMError: boom").as_row()])
    assert list(board["run_name"]) == ["b", "a", "c"]
    assert list(board["status"]) == [TRAINED, TRAINED, FAILED]
    assert board["rank"].tolist()[:2] == [1, 2] and board["rank"].isna().tolist() == [False, False, True]
    assert board.loc[2, "error"] == "LightGBMError: boom" and board.loc[2, "run_id"] == "run-x"
    assert select_best(results)["run_name"] == "b", "the challenger comes from the trained ones"
    only_failed = full_leaderboard([], [_failed("c").as_row()])
    assert list(only_failed["status"]) == [FAILED]
