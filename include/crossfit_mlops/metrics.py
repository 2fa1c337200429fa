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


def bootstrap_weights(n: int, samples: int, seed: int) -> np.ndarray:
    """``samples`` bootstrap resamples of ``n`` rows, as counts (how often each row was drawn):
    a statistic of a resample is then a dot product, ``weights @ values``, cheap for thousands."""
    if n < 2 or samples < 1:
        raise ValueError(f"need at least 2 rows and 1 resample, got {n} rows and {samples} resamples")
    draws = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    return np.stack([np.bincount(row, minlength=n) for row in draws]).astype(np.float64)


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values[np.isfinite(values)], [tail, 100.0 - tail])
    return float(low), float(high)


def metric_intervals(y_true, y_pred, samples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Bootstrap confidence intervals of RMSE, MAE and R², resampling the rows (athletes):
    ``{"rmse_low", "rmse_high", "mae_low", ..., "r2_high"}``."""
    y_true = np.asarray(y_true, dtype=float)
    error = np.asarray(y_pred, dtype=float) - y_true
    n = len(y_true)
    w = bootstrap_weights(n, samples, seed)
    sse = w @ error**2
    sst = w @ y_true**2 - (w @ y_true) ** 2 / n
    draws = {
        "rmse": np.sqrt(sse / n),
        "mae": (w @ np.abs(error)) / n,
        "r2": 1.0 - sse / np.where(sst > 0, sst, np.nan),
    }
    out: dict[str, float] = {}
    for name, values in draws.items():
        out[f"{name}_low"], out[f"{name}_high"] = _interval(values, confidence)
    return out


def paired_improvement(
    y_true, pred_reference, pred_candidate, samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """How much lower the candidate's RMSE is than the reference's, on the SAME rows.

    ``improvement = 1 - rmse_candidate / rmse_reference`` (0.02 = 2% lower). Every bootstrap resample
    draws the same athletes for both models, so the interval reflects the difference between the
    models, not the luck of which athletes a split happened to hold.
    """
    y_true = np.asarray(y_true, dtype=float)
    e_ref = (np.asarray(pred_reference, dtype=float) - y_true) ** 2
    e_new = (np.asarray(pred_candidate, dtype=float) - y_true) ** 2
    w = bootstrap_weights(len(y_true), samples, seed)
    low, high = _interval(1.0 - np.sqrt((w @ e_new) / (w @ e_ref)), confidence)
    rmse_ref, rmse_new = float(np.sqrt(e_ref.mean())), float(np.sqrt(e_new.mean()))
    return {
        "improvement": 1.0 - rmse_new / rmse_ref,
        "improvement_low": low,
        "improvement_high": high,
        "rmse_reference": rmse_ref,
        "rmse_candidate": rmse_new,
        "confidence": confidence,
        "samples": samples,
        "rows": len(y_true),
    }
