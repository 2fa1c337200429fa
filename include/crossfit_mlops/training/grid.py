"""The hyperparameter grid: which (feature version, model family, hyperparameters) to train.

A grid is a list of plain dicts (it travels through the Airflow trigger form and XCom as JSON)::

    {"model": "random_forest", "feature_version": "v2", "params": {"n_estimators": 200, "max_depth": 20}}

:func:`parse_grid` checks every entry and names the offending one; :func:`build_estimator` turns a
checked entry into an unfitted scikit-learn compatible estimator. Nothing heavy is imported at
module level: the DAG file imports :data:`DEFAULT_GRID` at parse time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from crossfit_mlops.features.specs import FEATURE_SETS

# Whole numbers and rates from the trigger form stay under this (a grid must not be able to ask for a
# billion trees and hold the workers for days).
MAX_WHOLE = 10_000
# Entries of a grid: one mapped task each. Airflow fails the task that pushes a list longer than
# [core] max_map_length (1024 by default) with "pushed value is too large to map"; 1,000 fits of a
# full-size snapshot would also take hours. Refused at resolve_run instead, naming the limit.
MAX_GRID_ENTRIES = 256


@dataclass(frozen=True)
class Hyper:
    """A hyperparameter's type and range: the model library's own bounds (``low``, refused itself
    when ``low_open``), capped at ``high``. A value the library would refuse four retries later,
    in ``train_candidate``, is refused when the run starts."""

    kind: type
    low: float
    high: float = MAX_WHOLE
    low_open: bool = False
    share: bool = False  # a share of rows or columns: in (0, 1]

    def problem(self, value: float) -> str | None:
        if value < self.low or (self.low_open and value == self.low):
            if (self.low, self.low_open) in ((0, True), (1, False)):
                return f"must be positive, got {value!r}"
            return f"must be {'>' if self.low_open else '>='} {self.low}, got {value!r}"
        if value > self.high:
            what = "is a share and must be at most" if self.share else "must be at most"
            return f"{what} {self.high:g}, got {value!r}"
        return None


_SHARE = Hyper(float, 0, 1, low_open=True, share=True)
# The hyperparameters each family accepts, with the library's bounds (scikit-learn's
# _parameter_constraints; LightGBM's config checks: num_leaves > 1, learning_rate > 0,
# min_data_in_leaf >= 0, lambda_l2 >= 0, fractions in (0, 1]). Anything else is a typo to reject,
# not silently pass to the library. tests/unit/test_grid.py fits the libraries at these bounds.
MODEL_FAMILIES: dict[str, dict[str, Hyper]] = {
    "random_forest": {
        "n_estimators": Hyper(int, 1),
        "max_depth": Hyper(int, 1),
        "min_samples_leaf": Hyper(int, 1),
        "max_features": _SHARE,
        "max_samples": _SHARE,  # the share of the rows each tree's bootstrap draws (scikit-learn allows > 1: not here)
    },
    "lightgbm": {
        "n_estimators": Hyper(int, 1),
        "learning_rate": Hyper(float, 0, low_open=True),
        "num_leaves": Hyper(int, 2),
        "max_depth": Hyper(int, 1),  # LightGBM reads <= 0 as "no limit": not offered here
        "min_child_samples": Hyper(int, 0),
        "subsample": _SHARE,
        "colsample_bytree": _SHARE,
        "reg_lambda": Hyper(float, 0),
    },
}

# The original tutorial's four RandomForest runs (its trees and depths), plus LightGBM with two
# settings, on V1 and V2. The forests grow leaves of at least 20 athletes, each tree from half of the
# training rows: the tutorial's unbounded leaves grow a leaf per few athletes (memorizing noise) and
# a depth-20 forest of hundreds of MB; bounded, it is a few MB with a validation R² as good or better
# (the measurement: docs/benchmarks.md, "Training: the forest settings").
_FOREST = {"min_samples_leaf": 20, "max_samples": 0.5}
DEFAULT_GRID: list[dict[str, Any]] = [
    {"model": model, "feature_version": version, "params": params}
    for model, params in (
        ("random_forest", {"n_estimators": 100, "max_depth": 10, **_FOREST}),
        ("random_forest", {"n_estimators": 200, "max_depth": 20, **_FOREST}),
        ("lightgbm", {"n_estimators": 300, "learning_rate": 0.05, "num_leaves": 31}),
        (
            "lightgbm",
            {"n_estimators": 600, "learning_rate": 0.03, "num_leaves": 15, "min_child_samples": 40, "subsample": 0.8, "colsample_bytree": 0.8},
        ),
    )
    for version in FEATURE_SETS
]

RANDOM_STATE = 42


class GridError(ValueError):
    """A grid entry is malformed; the message names the entry and the field."""


@dataclass(frozen=True)
class TrainingConfig:
    model: str
    feature_version: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """A stable, readable run name: ``lightgbm-v2-n_estimators=300-learning_rate=0.05``."""
        parts = [f"{k}={v}" for k, v in sorted(self.params.items())]
        return "-".join([self.model, self.feature_version, *parts])

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "name": self.name}


def _check_value(where: str, key: str, value: Any, hyper: Hyper) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise GridError(f"{where}: params.{key} must be a number (a finite one), got {value!r}")
    if hyper.kind is int:
        if float(value) != int(value):
            raise GridError(f"{where}: params.{key} must be a whole number, got {value!r}")
        value = int(value)
    problem = hyper.problem(value)
    if problem:
        raise GridError(f"{where}: params.{key} {problem}")
    return hyper.kind(value)


def _parse_entry(index: int, entry: Any) -> TrainingConfig:
    where = f"grid[{index}]"
    if not isinstance(entry, dict):
        raise GridError(f"{where} must be an object, got {entry!r}")
    unknown = set(entry) - {"model", "feature_version", "params", "name"}
    if unknown:
        raise GridError(f"{where}: unknown keys {sorted(unknown)} (allowed: model, feature_version, params)")
    model = entry.get("model")
    if model not in MODEL_FAMILIES:
        raise GridError(f"{where}: model must be one of {sorted(MODEL_FAMILIES)}, got {model!r}")
    version = entry.get("feature_version")
    if version not in FEATURE_SETS:
        raise GridError(f"{where}: feature_version must be one of {sorted(FEATURE_SETS)}, got {version!r}")
    params = entry.get("params") or {}
    if not isinstance(params, dict):
        raise GridError(f"{where}: params must be an object, got {params!r}")
    allowed = MODEL_FAMILIES[model]
    bad = sorted(set(params) - set(allowed))
    if bad:
        raise GridError(f"{where}: {model} does not take {bad} (allowed: {sorted(allowed)})")
    checked = {k: _check_value(where, k, v, allowed[k]) for k, v in params.items()}
    return TrainingConfig(model=model, feature_version=version, params=checked)


def parse_grid(grid: list[dict[str, Any]]) -> list[TrainingConfig]:
    """Validate a grid; raise :class:`GridError` naming the first bad entry."""
    if not isinstance(grid, list) or not grid:
        raise GridError(f"the grid must be a non-empty list of entries, got {grid!r}")
    if len(grid) > MAX_GRID_ENTRIES:
        raise GridError(f"the grid has {len(grid)} entries, more than the {MAX_GRID_ENTRIES} a run may train (one task each)")
    configs = [_parse_entry(index, entry) for index, entry in enumerate(grid)]
    names = [c.name for c in configs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise GridError(f"the grid repeats entries: {duplicates}")
    return configs


def estimated_cost(config: TrainingConfig) -> float:
    """A rough relative fit cost, to start the slowest jobs first (they bound the fan-out's wall
    time). Forests cost trees x depth; boosting is about two orders of magnitude cheaper here; V2
    has about 7 times the features of V1."""
    width = 7.0 if config.feature_version == "v2" else 1.0
    p = config.params
    if config.model == "random_forest":
        return width * p.get("n_estimators", 100) * p.get("max_depth", 30)
    return width * p.get("n_estimators", 100) * 0.2


def build_estimator(config: TrainingConfig, n_jobs: int = 1):
    """An unfitted estimator for ``config`` (deterministic: fixed random state).

    ``n_jobs`` is 1 by default: parallelism comes from the Airflow fan-out, one task per core.
    """
    if config.model == "random_forest":
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(random_state=RANDOM_STATE, n_jobs=n_jobs, **config.params)
    if config.model == "lightgbm":
        from lightgbm import LGBMRegressor

        params = dict(config.params)
        if "subsample" in params:
            params.setdefault("subsample_freq", 1)  # LightGBM ignores subsample unless bagging is on
        return LGBMRegressor(
            random_state=RANDOM_STATE, n_jobs=n_jobs, importance_type="gain", verbose=-1, **params
        )
    raise GridError(f"unknown model family {config.model!r}")


def plan_jobs(grid: list[dict[str, Any]], training_sets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One job per (checked) grid entry with the training set of its feature version, slowest
    first: mapped tasks start in this order, and the slowest one bounds the fan-out's wall time."""
    by_version = {ts["feature_version"]: ts for ts in training_sets}
    configs = sorted(
        grid, key=lambda c: -estimated_cost(TrainingConfig(c["model"], c["feature_version"], c["params"]))
    )
    return [{"config": c, "training_set": by_version[c["feature_version"]]} for c in configs]
