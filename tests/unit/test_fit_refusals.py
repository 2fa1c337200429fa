"""Which fit errors end a training task at once (the library refuses the grid entry on this data:
the same again on every try) and which pass unchanged to the task's retries (the machine's state).
Real scikit-learn and LightGBM fits inside the real CodeCarbon tracker; the one fake is an
estimator whose fit fails the way a machine does."""

from __future__ import annotations

import numpy as np
import pytest

from crossfit_mlops.training.fan_out import FitError
from crossfit_mlops.training.grid import TrainingConfig, build_estimator
from crossfit_mlops.training.train import RunContext, Stopwatch, _measure_fit, fit_refusals

X = np.random.default_rng(0).random((200, 3))
y = X @ np.array([1.0, 2.0, 3.0])


def _fit(estimator, tmp_path):
    ctx = RunContext(tracking_uri="unused", experiment_id="0", parent_run_id="p", emissions_dir=str(tmp_path))
    return _measure_fit(estimator, X, y, ctx, "entry", Stopwatch())


@pytest.mark.parametrize(
    ("model", "params", "library_error"),
    [
        ("lightgbm", {"n_estimators": 5, "subsample": 1e-9}, "LightGBMError"),  # bags no row
        ("random_forest", {"n_estimators": 5, "max_features": 0}, "InvalidParameterError"),  # scikit-learn's check at fit
    ],
)
def test_a_fit_the_library_refuses_is_a_fit_error(tmp_path, model, params, library_error):
    with pytest.raises(FitError, match=f"^{library_error} in the fit of entry: ") as raised:
        _fit(build_estimator(TrainingConfig(model, "v1", params)), tmp_path)
    assert isinstance(raised.value.__cause__, fit_refusals())


class _Failing:
    """A fit that fails the way a machine does (no memory, a dead worker pool, a full disk)."""

    def __init__(self, error: type[Exception]):
        self.error = error

    def fit(self, X, y):
        raise self.error("the machine, not the entry")


@pytest.mark.parametrize("error", [MemoryError, OSError, RuntimeError])
def test_the_machines_errors_pass_unchanged_to_the_retries(tmp_path, error):
    with pytest.raises(error, match="the machine, not the entry"):
        _fit(_Failing(error), tmp_path)


def test_a_fit_that_works_is_measured(tmp_path):
    seconds, emissions, csv = _fit(build_estimator(TrainingConfig("lightgbm", "v1", {"n_estimators": 5})), tmp_path)
    assert seconds > 0 and emissions["emissions_kg_co2eq"] >= 0 and csv.exists()
