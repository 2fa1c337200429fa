"""Rank the fan-out's runs, pick the best on validation, and log the leaderboard to the parent run."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

LEADERBOARD_COLUMNS = [
    "rank", "run_name", "feature_version", "model", "val_rmse", "val_mae", "val_r2", "test_rmse", "test_r2",
    "g_co2eq", "energy_wh", "fit_seconds", "run_id",
]


def leaderboard(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run, best validation RMSE first (ties: fewer emissions first)."""
    if not results:
        raise ValueError("no training results: every training task failed or the grid was empty")
    board = pd.DataFrame(results)
    board["g_co2eq"] = board["emissions_kg_co2eq"] * 1000.0
    board["energy_wh"] = board["energy_kwh"] * 1000.0
    board = board.sort_values(["val_rmse", "g_co2eq"], kind="stable").reset_index(drop=True)
    board["rank"] = range(1, len(board) + 1)
    return board[LEADERBOARD_COLUMNS]


def select_best(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The result with the lowest validation RMSE (the test set is kept for the gate)."""
    best_id = leaderboard(results).iloc[0]["run_id"]
    return next(r for r in results if r["run_id"] == best_id)


def format_leaderboard(board: pd.DataFrame) -> str:
    """A fixed-width table for logs and the terminal."""
    view = board[["rank", "run_name", "feature_version", "model", "val_rmse", "val_r2", "test_rmse", "g_co2eq", "fit_seconds"]]
    return view.to_string(
        index=False,
        formatters={
            "val_rmse": "{:.1f}".format, "val_r2": "{:.3f}".format, "test_rmse": "{:.1f}".format,
            "g_co2eq": "{:.4f}".format, "fit_seconds": "{:.1f}".format,
        },
    )


def log_leaderboard(tracking_uri: str, parent_run_id: str, results: list[dict[str, Any]]) -> pd.DataFrame:
    """Log the leaderboard table, a comparison plot and the best run's figures to the parent run."""
    import mlflow

    from crossfit_mlops.tracking import client, fluent
    from crossfit_mlops.training.plots import leaderboard_plot

    board = leaderboard(results)
    c = client(tracking_uri)
    with fluent(tracking_uri):
        mlflow.log_table(board, artifact_file="leaderboard.json", run_id=parent_run_id)
    c.log_text(parent_run_id, board.to_csv(index=False), "leaderboard.csv")
    c.log_figure(parent_run_id, leaderboard_plot(board), "plots/leaderboard.png")
    best = board.iloc[0]
    for key in ("val_rmse", "val_r2", "test_rmse", "test_r2"):
        c.log_metric(parent_run_id, f"best_{key}", float(best[key]))
    c.log_metric(parent_run_id, "total_g_co2eq", float(board["g_co2eq"].sum()))
    c.log_metric(parent_run_id, "runs", len(board))
    c.set_tag(parent_run_id, "best_run_id", best["run_id"])
    c.set_tag(parent_run_id, "best_run_name", best["run_name"])
    log.info("leaderboard:\n%s", format_leaderboard(board))
    return board
