"""A training run's conf and params are checked when it starts (resolve_run), naming the setting."""

from __future__ import annotations

import copy

import pytest

from crossfit_mlops.training.grid import DEFAULT_GRID, MAX_GRID_ENTRIES
from crossfit_mlops.training.run_request import RunRequestError, check_country, checked_inputs

PARAMS = {"snapshot": None, "rows": 423_006, "seed": 42, "sample_size": 0, "grid": DEFAULT_GRID, "cv_folds": 0,
          "approval": "automatic", "codecarbon_country": None, "min_successful_candidates": 1}  # fmt: skip


def _check(conf=None, **changes):
    params = {**copy.deepcopy(PARAMS), **changes}
    return checked_inputs(conf or {}, params, set(PARAMS), "USA")


def test_the_defaults_pass():
    inputs = _check({"snapshot": "2026-01-01", "sample_size": 300}, sample_size=300)
    assert (inputs["rows"], inputs["seed"], inputs["country"], len(inputs["grid"])) == (423_006, 42, "USA", 8)


def test_a_misspelled_conf_key_is_refused_with_a_suggestion():
    with pytest.raises(RunRequestError, match=r"unknown conf keys 'snaphsot' \(did you mean 'snapshot'\?\)"):
        _check({"snaphsot": "2026-01-01"})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seed": -1}, r"seed must be a whole number in \[0, 4294967295\], got -1"),
        ({"seed": 2**40}, "seed must be"),
        ({"rows": 10**12}, r"rows must be a whole number in \[4000, 2000000\]"),
        ({"rows": 100}, "rows must be"),
        ({"sample_size": -3}, "sample_size must be"),
        ({"cv_folds": 1}, "cv_folds must be 0"),
        ({"codecarbon_country": "XYZ"}, "codecarbon_country='XYZ' is not an ISO 3166 alpha-3"),
        ({"codecarbon_country": "US"}, "codecarbon_country='US'"),
        ({"min_successful_candidates": 0}, r"min_successful_candidates must be a whole number in \[1, 8\]"),
        ({"min_successful_candidates": 9}, r"in \[1, 8\] \(candidates that must train for the run to go on; the grid has 8 entries\), got 9"),
        ({"min_successful_candidates": 1.5}, "min_successful_candidates must be"),
    ],
)
def test_a_setting_out_of_its_bounds_is_refused_naming_it(changes, message):
    with pytest.raises(RunRequestError, match=message):
        _check(**changes)


def test_the_default_country_is_checked_too_and_named_as_the_variable():
    with pytest.raises(RunRequestError, match="CROSSFIT_CODECARBON_COUNTRY='Atlantis'"):
        checked_inputs({}, copy.deepcopy(PARAMS), set(PARAMS), "Atlantis")
    assert check_country("fra") == "FRA"


def test_a_grid_longer_than_a_run_may_map_is_refused():
    grid = [{"model": "lightgbm", "feature_version": "v1", "params": {"n_estimators": n + 1}} for n in range(1100)]
    with pytest.raises(ValueError, match=f"1100 entries, more than the {MAX_GRID_ENTRIES}"):
        _check(grid=grid)


def test_the_grid_limit_is_under_airflows_map_limit():
    from airflow.configuration import conf

    assert conf.getint("core", "max_map_length") > MAX_GRID_ENTRIES
