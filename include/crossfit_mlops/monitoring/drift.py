"""Data drift and error of the champion between two held-out sets, measured with Evidently.

Numeric features are compared with the normed Wasserstein distance and categorical ones (the
int-coded region, gender and multi-hot survey answers) with the Jensen-Shannon distance, both
chosen explicitly so that a small test snapshot and the full data are judged alike (Evidently's
automatic choice switches to p-value tests below 1,000 rows). The same report, with Evidently's
regression preset, is the HTML dashboard of a monitoring run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

PREDICTION = "prediction"
NUM_METHOD = "wasserstein"
CAT_METHOD = "jensenshannon"
_VALUE_DRIFT = "evidently:metric_v2:ValueDrift"


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    kind: str  # "numerical" | "categorical"
    method: str  # as Evidently names it
    score: float  # distance: 0 = same distribution
    threshold: float
    drifted: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def column_kinds(frame: pd.DataFrame, columns: list[str]) -> dict[str, str]:
    """Integer-coded columns are categorical (codes, flags), floats numerical."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"columns {missing} are not in the frame (has {list(frame.columns)})")
    return {c: "categorical" if pd.api.types.is_integer_dtype(frame[c]) else "numerical" for c in columns}


def run_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: list[str],
    target: str | None,
    threshold: float,
    drift_share: float = 0.5,
):
    """Evidently's drift (features, target, prediction) and regression report; returns its snapshot.

    Both frames need the features, ``target`` and a ``prediction`` column. ``target`` None (live
    traffic, whose labels arrive later or never): drift of the features and the predictions only. ``drift_share`` is the
    share of drifted columns at which the report's header says "Dataset Drift is detected"; that
    share counts the target and the predictions too (the retraining policy counts features only).
    """
    from evidently import DataDefinition, Dataset, Regression, Report
    from evidently.presets import DataDriftPreset, RegressionPreset

    columns = [*features, *([target] if target else []), PREDICTION]
    kinds = column_kinds(reference, columns)
    column_kinds(current, columns)
    if reference.empty or current.empty:
        raise ValueError(f"cannot compare an empty set (reference {len(reference)} rows, current {len(current)} rows)")
    definition = DataDefinition(
        numerical_columns=[c for c, k in kinds.items() if k == "numerical"],
        categorical_columns=[c for c, k in kinds.items() if k == "categorical"],
        regression=[Regression(target=target, prediction=PREDICTION)] if target else None,
    )
    drift = DataDriftPreset(
        columns=columns, num_method=NUM_METHOD, cat_method=CAT_METHOD, threshold=threshold, drift_share=drift_share
    )
    report = Report([drift, RegressionPreset()] if target else [drift])
    return report.run(
        Dataset.from_pandas(current[columns].reset_index(drop=True), data_definition=definition),
        Dataset.from_pandas(reference[columns].reset_index(drop=True), data_definition=definition),
    )


def column_drifts(report_snapshot, kinds: dict[str, str]) -> list[ColumnDrift]:
    """One :class:`ColumnDrift` per column of ``kinds``, read from the report's ValueDrift metrics.

    A distance at or above its threshold is drift (Evidently's rule for distance methods). A
    distance Evidently could not compute (NaN) is reported as drift: unknown is not "fine".
    """
    found: dict[str, ColumnDrift] = {}
    for metric in report_snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if config.get("type") != _VALUE_DRIFT or config.get("column") not in kinds:
            continue
        score, threshold = float(metric["value"]), float(config["threshold"])
        found[config["column"]] = ColumnDrift(
            column=config["column"],
            kind=kinds[config["column"]],
            method=str(config.get("method")),
            score=score,
            threshold=threshold,
            drifted=math.isnan(score) or score >= threshold,
        )
    missing = sorted(set(kinds) - set(found))
    if missing:
        raise RuntimeError(f"the Evidently report has no drift result for {missing}")
    return [found[c] for c in kinds]
