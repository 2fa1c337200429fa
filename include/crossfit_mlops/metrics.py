"""Regression metrics (pure: arrays in, numbers out). Training, the gate and monitoring all score
models with these, so they sit below all three."""

from __future__ import annotations

import numpy as np

METRICS: tuple[str, ...] = ("rmse", "mae", "r2")


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """RMSE, MAE (lb) and R² of predictions."""
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    if len(y_true) == 0 or len(y_true) != len(y_pred):
        raise ValueError(f"need equal, non-empty arrays, got {len(y_true)} labels and {len(y_pred)} predictions")
    error = y_pred - y_true
    total = float(((y_true - y_true.mean()) ** 2).sum())
    return {
        "rmse": float(np.sqrt((error**2).mean())),
        "mae": float(np.abs(error).mean()),
        "r2": float(1.0 - (error**2).sum() / total) if total > 0 else float("nan"),
    }
