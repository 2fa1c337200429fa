"""How stable is the chosen configuration? k-fold cross-validation by athlete (optional report).

The folds are a salted hash of the athlete id (not the train/validation/test split's salt), over
the training and validation athletes only: the test athletes stay untouched for the gate.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np
import pandas as pd

from crossfit_mlops.features.training_sets import TrainingSet, load_split
from crossfit_mlops.metrics import regression_metrics
from crossfit_mlops.storage import ENTITY_KEY
from crossfit_mlops.training.grid import TrainingConfig, build_estimator

log = logging.getLogger(__name__)

FOLD_SALT = "crossfit-cv-v1"


def fold_of(athlete_ids, folds: int) -> np.ndarray:
    """The fold (0 .. folds-1) of each athlete: stable across runs and feature versions."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(f"{FOLD_SALT}:{int(i)}".encode(), digest_size=8).digest(), "big") % folds for i in athlete_ids),
        dtype=np.int64,
        count=len(athlete_ids),
    )


def cross_validate(config: TrainingConfig, training_set: TrainingSet, folds: int) -> dict[str, Any]:
    """Fit ``config`` ``folds`` times, each time scoring the athletes of one fold; metrics per fold
    and their mean and standard deviation."""
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    parts = [load_split(training_set, split) for split in ("train", "validation")]
    X = pd.concat([p[0] for p in parts], ignore_index=True)
    y = pd.concat([p[1] for p in parts], ignore_index=True)
    ids = pd.concat([p[2][ENTITY_KEY] for p in parts], ignore_index=True)
    fold = fold_of(ids, folds)
    per_fold = []
    for k in range(folds):
        held = fold == k
        estimator = build_estimator(config).fit(X[~held], y[~held])
        per_fold.append({"fold": k, "rows": int(held.sum()), **regression_metrics(y[held], estimator.predict(X[held]))})
    summary = {
        f"cv_{m}_{stat}": float(getattr(np, stat)([f[m] for f in per_fold]))
        for m in ("rmse", "mae", "r2")
        for stat in ("mean", "std")
    }
    return {"config": config.as_dict(), "folds": folds, "per_fold": per_fold, **summary}


def log_cross_validation(tracking_uri: str, parent_run_id: str, best: dict[str, Any], folds: int) -> dict[str, Any]:
    """Run :func:`cross_validate` on the chosen candidate and log the report on the parent run."""
    from crossfit_mlops.tracking import client

    config = TrainingConfig(best["model"], best["feature_version"], best["params"])
    report = cross_validate(config, TrainingSet(**best["training_set"]), folds)
    c = client(tracking_uri)
    c.log_dict(parent_run_id, report, "cross_validation.json")
    for key, value in report.items():
        if key.startswith("cv_"):
            c.log_metric(parent_run_id, key, value)
    log.info("%d-fold cross-validation of %s: RMSE %.1f +- %.1f", folds, config.name, report["cv_rmse_mean"], report["cv_rmse_std"])
    return report
