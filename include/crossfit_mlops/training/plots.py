"""The diagnostic plots logged with every training run and the leaderboard plot (pure: arrays in,
figures out; no pyplot global state)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

def _figure(width: float = 5.5, height: float = 4.5, layout: str | None = "constrained") -> Figure:
    """A figure outside pyplot (no global state, safe in parallel tasks).

    The per-run plots use fixed margins instead of the constrained layout, which costs about 0.2 s
    per figure (a third of a training task's plotting time); plots with long labels keep it.
    """
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout=layout)


def _wrap(title: str, width: int) -> str:
    """Run names are long (every hyperparameter): wrap each line of a title to fit the figure."""
    import textwrap

    return "\n".join(textwrap.fill(line, width, break_on_hyphens=False) for line in title.splitlines())


def _points(ax, x, y) -> None:
    # markers of one Line2D are stamped from a cached raster: faster than scatter's path collection
    ax.plot(x, y, "o", markersize=2, alpha=0.35, markeredgewidth=0, color="#1f77b4")


def predicted_vs_actual(y_true, y_pred, title: str) -> Figure:
    fig = _figure(layout=None)
    title = _wrap(title, 62)
    fig.subplots_adjust(left=0.15, right=0.96, bottom=0.11, top=0.93 - 0.04 * title.count("\n"))
    ax = fig.add_subplot()
    _points(ax, y_true, y_pred)
    low, high = float(np.min([np.min(y_true), np.min(y_pred)])), float(np.max([np.max(y_true), np.max(y_pred)]))
    ax.plot([low, high], [low, high], color="#d62728", linewidth=1, label="perfect prediction")
    ax.set(xlabel="actual total lift (lb)", ylabel="predicted total lift (lb)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left")
    return fig


def residuals(y_true, y_pred, title: str) -> Figure:
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    fig = _figure(8, 3.8, layout=None)
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.13, top=0.82, wspace=0.28)
    left, right = fig.subplots(1, 2)
    _points(left, y_pred, y_true - y_pred)
    left.axhline(0, color="#d62728", linewidth=1)
    left.set(xlabel="predicted total lift (lb)", ylabel="actual - predicted (lb)", title="residuals vs prediction")
    right.hist(y_true - y_pred, bins=50, color="#7f7f7f")
    right.set(xlabel="actual - predicted (lb)", ylabel="athletes", title="residual distribution")
    fig.suptitle(_wrap(title, 100), fontsize=9)
    return fig


def feature_importance(names: list[str], importances, title: str, top: int = 15) -> Figure:
    values = np.asarray(importances, dtype=float)
    total = values.sum()
    share = values / total if total > 0 else values
    order = np.argsort(share)[::-1][:top][::-1]
    fig = _figure(6, 0.3 * len(order) + 1.2)
    ax = fig.add_subplot()
    ax.barh([names[i] for i in order], share[order], color="#2ca02c")
    ax.set(xlabel="share of total importance")
    ax.set_title(_wrap(title, 40), fontsize=9)  # run names are long: wrapped, not cut off
    return fig


def leaderboard_plot(board) -> Figure:
    """Validation RMSE and grams of CO2eq per run, best first (``board`` is the leaderboard frame)."""
    fig = _figure(10, 0.45 * len(board) + 1.6)
    left, right = fig.subplots(1, 2, sharey=True)
    labels = list(board["run_name"])[::-1]
    colors = ["#1f77b4" if v == "v1" else "#ff7f0e" for v in board["feature_version"]][::-1]
    left.barh(labels, list(board["val_rmse"])[::-1], color=colors)
    left.set(xlabel="validation RMSE (lb), lower is better", title="accuracy (blue V1, orange V2)")
    right.barh(labels, list(board["g_co2eq"])[::-1], color=colors)
    right.set(xlabel="g CO2eq (CodeCarbon estimate)", title="training emissions")
    return fig
