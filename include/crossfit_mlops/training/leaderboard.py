"""Rank the fan-out's runs, pick the best on validation, and log the leaderboard to the parent run."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

LEADERBOARD_COLUMNS = [
    "rank", "run_name", "feature_version", "model", "val_rmse", "val_mae", "val_r2", "test_rmse", "test_r2",
    "g_co2eq", "energy_kwh", "energy_wh", "fit_seconds", "run_id", "status", "error",
]
TRAINED, FAILED = "trained", "failed"  # the leaderboard's status column


def leaderboard(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per trained run, best validation RMSE first (ties: fewer emissions first)."""
    if not results:
        raise ValueError("no training results: every training task failed or the grid was empty")
    board = pd.DataFrame(results)
    board["g_co2eq"] = board["emissions_kg_co2eq"] * 1000.0
    board["energy_wh"] = board["energy_kwh"] * 1000.0
    board = board.sort_values(["val_rmse", "g_co2eq"], kind="stable").reset_index(drop=True)
    board["rank"] = range(1, len(board) + 1)
    board["status"], board["error"] = TRAINED, ""
    return board[LEADERBOARD_COLUMNS]


def full_leaderboard(results: list[dict[str, Any]], failed: list[dict[str, Any]]) -> pd.DataFrame:
    """The trained runs ranked (:func:`leaderboard`), then one row per failed candidate: no rank
    and no metrics, its status and error (``failed``: :meth:`FailedCandidate.as_row` dicts)."""
    rows = pd.DataFrame(
        [{"run_name": f["run_name"], "feature_version": f["feature_version"], "model": f["model"],
          "run_id": f.get("run_id") or "", "status": FAILED, "error": f["error"]} for f in failed],
        columns=LEADERBOARD_COLUMNS,
    )  # fmt: skip
    if not results:
        return rows.reset_index(drop=True)
    board = leaderboard(results)
    if rows.empty:
        return board
    board = pd.concat([board.astype({"rank": "Int64"}), rows.astype({"rank": "Int64"})], ignore_index=True)
    return board[LEADERBOARD_COLUMNS]


def select_best(results: list[dict[str, Any]], energy_tolerance: float = 0.0) -> dict[str, Any]:
    """The challenger: among the results whose validation RMSE is within ``energy_tolerance`` (a
    share) of the lowest, the one that used the least energy to train (the test set is kept for the
    gate). The result comes back with a ``selection`` sentence that says why it was chosen."""
    board = leaderboard(results)
    lowest = board.iloc[0]
    near = board[board["val_rmse"] <= lowest["val_rmse"] * (1.0 + energy_tolerance)]
    chosen = near.sort_values(["energy_kwh", "val_rmse"], kind="stable").iloc[0]
    if chosen["run_id"] == lowest["run_id"]:
        why = f"{chosen['run_name']}: the lowest validation RMSE ({chosen['val_rmse']:.2f} lb)"
        if len(near) > 1:
            why += f", and the least energy of the {len(near)} within {energy_tolerance:.1%} of it"
    else:
        saved = 1.0 - chosen["energy_kwh"] / lowest["energy_kwh"] if lowest["energy_kwh"] > 0 else 0.0
        why = (
            f"{chosen['run_name']}: validation RMSE {chosen['val_rmse']:.2f} lb, within {energy_tolerance:.1%} of the "
            f"lowest ({lowest['run_name']}, {lowest['val_rmse']:.2f} lb), for {saved:.0%} less energy "
            f"({chosen['energy_kwh'] * 1000:.3f} vs {lowest['energy_kwh'] * 1000:.3f} Wh)"
        )
    result = next(r for r in results if r["run_id"] == chosen["run_id"])
    return {**result, "selection": why}


def format_leaderboard(board: pd.DataFrame) -> str:
    """A fixed-width table for logs and the terminal."""
    view = board[["rank", "run_name", "feature_version", "model", "val_rmse", "val_r2", "test_rmse", "energy_kwh", "g_co2eq", "fit_seconds"]]
    return view.to_string(
        index=False,
        formatters={
            "val_rmse": "{:.1f}".format, "val_r2": "{:.3f}".format, "test_rmse": "{:.1f}".format,
            "energy_kwh": "{:.2e}".format, "g_co2eq": "{:.4f}".format, "fit_seconds": "{:.1f}".format,
        },
    )


def log_leaderboard(
    tracking_uri: str, parent_run_id: str, results: list[dict[str, Any]], failed: list[dict[str, Any]] = ()
) -> pd.DataFrame:
    """Log the leaderboard table (the failed candidates too, with their error), a comparison plot
    and the best run's figures to the parent run."""
    import mlflow

    from crossfit_mlops.tracking import client, fluent
    from crossfit_mlops.training.plots import leaderboard_plot

    table = full_leaderboard(results, list(failed))
    c = client(tracking_uri)
    with fluent(tracking_uri):
        mlflow.log_table(table, artifact_file="leaderboard.json", run_id=parent_run_id)
    c.log_text(parent_run_id, table.to_csv(index=False), "leaderboard.csv")
    c.log_metric(parent_run_id, "failed_runs", len(failed))
    if not results:
        log.warning("leaderboard: no candidate trained\n%s", table[["run_name", "status", "error"]].to_string(index=False))
        return table
    board = leaderboard(results)
    c.log_figure(parent_run_id, leaderboard_plot(board), "plots/leaderboard.png")
    best = board.iloc[0]
    for key in ("val_rmse", "val_r2", "test_rmse", "test_r2"):
        c.log_metric(parent_run_id, f"best_{key}", float(best[key]))
    c.log_metric(parent_run_id, "total_g_co2eq", float(board["g_co2eq"].sum()))
    c.log_metric(parent_run_id, "runs", len(board))
    c.set_tag(parent_run_id, "best_run_id", best["run_id"])
    c.set_tag(parent_run_id, "best_run_name", best["run_name"])
    log.info("leaderboard:\n%s", format_leaderboard(board))
    return table
