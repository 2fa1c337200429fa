"""The training grid: the default, validation errors that name the entry, estimators."""

from __future__ import annotations

import pytest

from crossfit_mlops.training.grid import DEFAULT_GRID, GridError, build_estimator, parse_grid


def test_default_grid_is_the_four_original_forests_plus_lightgbm_on_both_versions():
    configs = parse_grid(DEFAULT_GRID)
    assert len(configs) == 8
    forests = {(c.feature_version, c.params["n_estimators"], c.params["max_depth"]) for c in configs if c.model == "random_forest"}
    assert forests == {("v1", 100, 10), ("v1", 200, 20), ("v2", 100, 10), ("v2", 200, 20)}
    assert sum(c.model == "lightgbm" for c in configs) == 4
    assert len({c.name for c in configs}) == 8


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"model": "xgboost", "feature_version": "v1"}, "grid[0]: model must be one of"),
        ({"model": "lightgbm", "feature_version": "v3"}, "grid[0]: feature_version must be one of"),
        ({"model": "lightgbm", "feature_version": "v1", "params": {"max_dept": 3}}, "does not take ['max_dept']"),
        ({"model": "random_forest", "feature_version": "v1", "params": {"n_estimators": 0}}, "must be positive"),
        ({"model": "random_forest", "feature_version": "v1", "params": {"n_estimators": 2.5}}, "whole number"),
        ({"model": "random_forest", "feature_version": "v1", "params": {"n_estimators": "100"}}, "must be a number"),
        ({"model": "random_forest", "feature_version": "v1", "colour": 1}, "unknown keys ['colour']"),
        ("random_forest", "grid[0] must be an object"),
    ],
)
def test_bad_entries_are_rejected_with_their_index_and_field(entry, message):
    with pytest.raises(GridError) as info:
        parse_grid([entry])
    assert message in str(info.value)


def test_empty_and_repeated_grids_are_rejected():
    with pytest.raises(GridError, match="non-empty"):
        parse_grid([])
    entry = {"model": "lightgbm", "feature_version": "v1", "params": {"n_estimators": 10}}
    with pytest.raises(GridError, match="repeats"):
        parse_grid([entry, dict(entry)])


def test_estimators_are_deterministic_and_single_threaded():
    forest, booster = (build_estimator(c) for c in parse_grid(DEFAULT_GRID[:1] + DEFAULT_GRID[4:5]))
    assert type(forest).__name__ == "RandomForestRegressor"
    assert forest.get_params()["random_state"] == 42 and forest.get_params()["n_jobs"] == 1
    assert type(booster).__name__ == "LGBMRegressor"
    assert booster.get_params()["random_state"] == 42


def test_slowest_jobs_are_estimated_first():
    from crossfit_mlops.training.grid import estimated_cost

    ranked = sorted(parse_grid(DEFAULT_GRID), key=estimated_cost, reverse=True)
    assert (ranked[0].model, ranked[0].feature_version, ranked[0].params["n_estimators"]) == ("random_forest", "v2", 200)
    assert ranked[-1].model == "lightgbm" and ranked[-1].feature_version == "v1"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_estimators": float("nan")}, "a finite one"),
        ({"n_estimators": 10**9}, "at most 10000"),
        ({"max_samples": 1.5}, "share and must be at most 1"),
        ({"max_features": 0}, "positive"),
    ],
)
def test_a_grid_from_the_trigger_form_is_bounded(params, message):
    with pytest.raises(GridError, match=message):
        parse_grid([{"model": "random_forest", "feature_version": "v1", "params": params}])


def test_the_default_forests_are_shaped_to_stay_small():
    forests = [c for c in parse_grid(DEFAULT_GRID) if c.model == "random_forest"]
    assert len(forests) == 4 and {(c.params["n_estimators"], c.params["max_depth"]) for c in forests} == {(100, 10), (200, 20)}
    assert all(c.params["min_samples_leaf"] >= 20 and c.params["max_samples"] <= 0.5 for c in forests)


# (family, hyperparameter, value, accepted by the library): our bounds are the library's own
LIBRARY_BOUNDS = [
    ("lightgbm", "num_leaves", 1, False),
    ("lightgbm", "num_leaves", 2, True),
    ("lightgbm", "learning_rate", 0.0, False),
    ("lightgbm", "min_child_samples", 0, True),
    ("lightgbm", "reg_lambda", 0.0, True),
    ("lightgbm", "reg_lambda", -0.5, False),
    ("lightgbm", "subsample", 1.0, True),
    ("lightgbm", "colsample_bytree", 1.5, False),
    ("random_forest", "n_estimators", 0, False),
    ("random_forest", "max_features", 1.0, True),
    ("random_forest", "max_samples", 0.0, False),
    ("random_forest", "min_samples_leaf", 0, False),
]


@pytest.mark.parametrize(("model", "key", "value", "library_accepts"), LIBRARY_BOUNDS)
def test_hyperparameters_are_refused_exactly_where_the_model_refuses_them(model, key, value, library_accepts):
    import numpy as np

    from crossfit_mlops.training.grid import TrainingConfig

    entry = {"model": model, "feature_version": "v1", "params": {key: value}}
    X, y = np.random.default_rng(0).normal(size=(60, 3)), np.arange(60.0)
    try:
        build_estimator(TrainingConfig(model, "v1", {key: value})).fit(X, y)
        library_accepted = True
    except Exception:
        library_accepted = False
    assert library_accepted == library_accepts
    if library_accepts:
        parse_grid([entry])
    else:
        with pytest.raises(GridError, match=f"grid\\[0\\]: params.{key}"):
            parse_grid([entry])
