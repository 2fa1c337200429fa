"""The monitoring run's one-glance figure: which features drifted, and how the error moved."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from crossfit_mlops.monitoring.drift import ColumnDrift

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def dashboard_figure(
    drifts: list[ColumnDrift],
    residuals_reference: np.ndarray,
    residuals_current: np.ndarray,
    rmse_reference: float,
    rmse_current: float,
    title: str,
    top: int = 15,
    labels: tuple[str, str] = ("reference", "current"),
    error_title: str = "the champion's error on held-out athletes",
) -> Figure:
    """Left: drift distance per column (largest first, drifted ones red) against its threshold.
    Right: the champion's residuals (prediction - actual) on both held-out sets."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5.5), dpi=100, layout="constrained")
    fig.suptitle(title, fontsize=11)
    left, right = fig.subplots(1, 2, width_ratios=[1.1, 1])

    shown = sorted(drifts, key=lambda d: (np.nan_to_num(d.score, nan=np.inf)), reverse=True)[:top][::-1]
    scores = [np.nan_to_num(d.score, nan=1.0) for d in shown]
    colors = ["#d62728" if d.drifted else "#1f77b4" for d in shown]
    left.barh([f"{d.column} ({'W' if d.method == 'wasserstein' else 'JS'})" for d in shown], scores, color=colors)
    if shown:
        left.axvline(shown[0].threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {shown[0].threshold:g}")
        left.legend(loc="lower right", fontsize=8)
    left.set_xlabel("drift distance (W = normed Wasserstein, JS = Jensen-Shannon)")
    left.set_title(f"largest drift of {len(drifts)} columns (red = drifted)", fontsize=10)
    left.tick_params(axis="y", labelsize=7)

    both = np.concatenate([residuals_reference, residuals_current])
    low, high = np.percentile(both, [0.5, 99.5]) if len(both) else (-1.0, 1.0)
    bins = np.linspace(low, high, 50)
    right.hist(residuals_reference, bins=bins, alpha=0.55, density=True, label=f"{labels[0]} (RMSE {rmse_reference:.1f} lb)")
    right.hist(residuals_current, bins=bins, alpha=0.55, density=True, label=f"{labels[1]} (RMSE {rmse_current:.1f} lb)")
    right.axvline(0, color="black", linewidth=0.8)
    right.set_xlabel("prediction - actual total lift (lb)")
    right.set_ylabel("density")
    right.set_title(error_title, fontsize=10)
    right.legend(fontsize=8)
    return fig
