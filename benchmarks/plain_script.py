"""The named baseline of the training benchmark: what a user would write instead of the pipeline.

One Python process reads a raw snapshot, validates and cleans it with the package's contract and
cleaning, builds the V1 and V2 feature tables, splits by athlete, fits the grid in a pool of
``--processes`` worker processes (the pipeline's parallelism on this machine) and picks the best
on validation RMSE. No Airflow, no MLflow, no Feast, no CodeCarbon, nothing written but a summary.

    .venv/bin/python benchmarks/plain_script.py --raw PATH [--grid JSON] [--processes 2]

Prints one JSON line: wall seconds per phase, the best configuration and its validation RMSE.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

_DATA: dict = {}


def _init(tables: dict) -> None:
    _DATA.update(tables)


def _fit(entry: dict) -> dict:
    from crossfit_mlops.metrics import regression_metrics
    from crossfit_mlops.training.grid import build_estimator, parse_grid

    config = parse_grid([entry])[0]
    X_train, y_train, X_val, y_val = _DATA[config.feature_version]
    started = time.perf_counter()
    estimator = build_estimator(config).fit(X_train, y_train)
    return {"name": config.name, "fit_s": time.perf_counter() - started, **regression_metrics(y_val, estimator.predict(X_val))}


def prepare(raw: Path, snapshot_id: str) -> dict:
    """Validate, clean, engineer V1/V2 and split: ``{version: (X_train, y_train, X_val, y_val)}``."""
    from crossfit_mlops.data.clean import clean_rows
    from crossfit_mlops.data.schema import check_rows, read_raw
    from crossfit_mlops.features.engineer import engineer_features
    from crossfit_mlops.features.specs import FEATURE_SETS
    from crossfit_mlops.features.training_sets import split_of
    from crossfit_mlops.storage import ENTITY_KEY, TARGET, snapshot_time

    frame = read_raw(raw).frame
    bad = check_rows(frame)["row_number"].unique()
    clean = clean_rows(frame[~frame["row_number"].isin(bad)].reset_index(drop=True), snapshot_time(snapshot_id)).clean
    split = split_of(clean[ENTITY_KEY])
    tables = {}
    for version, spec in FEATURE_SETS.items():
        features = engineer_features(clean, version)[spec.names]
        train, val = split == "train", split == "validation"
        tables[version] = (features[train], clean.loc[train, TARGET], features[val], clean.loc[val, TARGET])
    return tables


def main() -> None:
    from crossfit_mlops.training.grid import DEFAULT_GRID

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", required=True, type=Path, help="athletes.csv of the snapshot")
    parser.add_argument("--snapshot", default="2026-11-01", help="the snapshot's id (its event time)")
    parser.add_argument("--grid", default=None, help="JSON grid (default: the pipeline's default grid)")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    grid = json.loads(args.grid) if args.grid else DEFAULT_GRID

    started = time.perf_counter()
    tables = prepare(args.raw, args.snapshot)
    prepared = time.perf_counter()
    with ProcessPoolExecutor(args.processes, initializer=_init, initargs=(tables,)) as pool:
        results = list(pool.map(_fit, sorted(grid, key=lambda e: e["model"] != "random_forest")))
    best = min(results, key=lambda r: r["rmse"])
    end = time.perf_counter()
    print(json.dumps({
        "wall_s": round(end - started, 2), "prepare_s": round(prepared - started, 2), "fits_wall_s": round(end - prepared, 2),
        "sum_fit_s": round(sum(r["fit_s"] for r in results), 2), "best": best["name"], "best_val_rmse": round(best["rmse"], 2),
        "runs": results,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
