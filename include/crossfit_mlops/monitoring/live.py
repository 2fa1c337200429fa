"""Live traffic: what the API answered since the last look, against what the champion was judged on.

:func:`measure_live` reads the prediction log (:mod:`crossfit_mlops.prediction_log`) of the window
``[since, until)`` (``since``: where the previous live measurement stopped, at most
``max_hours`` back) and measures, for the current ``@champion``:

- **drift** of the live requests' features and predictions against the champion's test split
  (Evidently, the same distances and threshold as the snapshot monitoring);
- **live error** where labels have arrived: a prediction made from an athlete's features of time T
  is labelled with that athlete's total lift in the first validated snapshot after T;
- **the shadow challenger**, when the API scored one: its live error on the same labelled requests,
  paired with the champion's (bootstrap interval over the requests), tagged on the challenger's
  model version (``shadow.*``) where the gate and the model card read it;
- **serving errors**: the share of the champion's requests answered with a 5xx.

Outputs like the snapshot monitoring's: ``<monitoring>/live/run=<key>/`` (``summary.json``,
``dashboard.png``, ``report.html``) and an MLflow run in ``crossfit_monitoring`` tagged
``monitoring.kind=live`` with ``live.since``/``live.until``. The rollback rule
(:func:`crossfit_mlops.monitoring.policy.decide_rollback`) gives the decision; :func:`roll_back`
acts on it.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crossfit_mlops.monitoring.policy import RollbackDecision, RollbackPolicy, decide_rollback
from crossfit_mlops.prediction_log import CHALLENGER, CHAMPION, live_root, read_log
from crossfit_mlops.settings import Settings
from crossfit_mlops.storage import (
    ENTITY_KEY,
    TARGET,
    Catalog,
    check_snapshot_id,
    local_copy,
    publishing,
    safe_key,
    snapshot_time,
)
from crossfit_mlops.storage import current as published_version

log = logging.getLogger(__name__)

LIVE_KIND = "live"
SINCE_TAG, UNTIL_TAG = "live.since", "live.until"
MIN_DRIFT_ROWS = 30  # fewer live requests than this: drift is not measured (a distance on a handful is noise)


def _parse(value: str) -> datetime:
    at = datetime.fromisoformat(value)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def last_until(tracking_uri: str) -> datetime | None:
    """Where the previous live measurement stopped (its MLflow run's ``live.until``), or None."""
    from crossfit_mlops.monitoring.monitor import MONITORING_EXPERIMENT
    from crossfit_mlops.tracking import client

    c = client(tracking_uri)
    experiment = c.get_experiment_by_name(MONITORING_EXPERIMENT)
    if experiment is None:
        return None
    runs = c.search_runs(
        [experiment.experiment_id], filter_string="tags.`monitoring.kind` = 'live' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )  # fmt: skip
    return _parse(runs[0].data.tags[UNTIL_TAG]) if runs else None


def window(tracking_uri: str, until: datetime, max_hours: float) -> tuple[datetime, datetime]:
    """``[since, until)``: from the previous live measurement's end, at most ``max_hours`` back."""
    floor = until - timedelta(hours=max_hours)
    previous = last_until(tracking_uri)
    return (max(previous, floor) if previous else floor), until


def label_snapshots(settings: Settings) -> list[str]:
    """The validated snapshots whose labels can be read, oldest first."""
    catalog, found = Catalog(settings), []
    root = settings.processed_dir
    if not root.exists():
        return []
    for folder in root.iterdir():
        name = folder.name
        if not name.startswith("snapshot="):
            continue
        try:
            snapshot_id = check_snapshot_id(name.split("=", 1)[1])
        except ValueError:
            continue
        if catalog.validation_status(snapshot_id) == "ok":
            found.append(snapshot_id)
    return sorted(found)


def attach_labels(rows: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """``rows`` (log rows with ``athlete_id`` and ``features_at``) with ``label`` (the athlete's total
    lift in the first validated snapshot after its features' time) and ``label_snapshot``; rows
    without a label yet (no later snapshot, or the athlete is not in it) get NaN / None."""
    out = rows.copy()
    out["label"], out["label_snapshot"] = np.nan, None
    snapshots = label_snapshots(settings)
    if not snapshots or out.empty:
        return out
    times = pd.DatetimeIndex([snapshot_time(s) for s in snapshots]).tz_convert("UTC")
    known = out["athlete_id"].notna() & out["features_at"].notna()
    # the first snapshot strictly after the features' time
    position = np.full(len(out), len(snapshots))
    position[known.to_numpy()] = times.searchsorted(pd.DatetimeIndex(out.loc[known, "features_at"]), side="right")
    catalog = Catalog(settings)
    for index, snapshot_id in enumerate(snapshots):
        mine = position == index
        if not mine.any():
            continue
        labels = catalog.load_labels(snapshot_id).set_index(ENTITY_KEY)[TARGET]
        ids = out.loc[mine, "athlete_id"].astype("int64")
        values = ids.map(labels).to_numpy(dtype=float)
        out.loc[mine, "label"] = values
        out.loc[mine, "label_snapshot"] = np.where(np.isnan(values), None, snapshot_id)
    return out


def _features_frame(rows: pd.DataFrame, names: list[str], dtypes: pd.Series) -> pd.DataFrame:
    values = pd.DataFrame.from_records([json.loads(f) for f in rows["features"]], columns=names)
    return values.astype({n: dtypes[n] for n in names}, errors="ignore")


def _error_stats(y: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    from crossfit_mlops.metrics import metric_intervals, regression_metrics

    stats = {**regression_metrics(y, prediction), "rows": float(len(y))}
    if len(y) >= 2:
        stats.update(metric_intervals(y, prediction, samples=1000, seed=0))
    else:
        stats.update(rmse_low=stats["rmse"], rmse_high=stats["rmse"])
    return stats


def measure_live(
    settings: Settings,
    until: datetime,
    policy: RollbackPolicy,
    run_key: str,
    *,
    drift_threshold: float,
    max_hours: float,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Measure the window's live traffic for ``@champion``, decide on a rollback, write and log the
    outputs. Returns the summary (``decision``, ``reasons``, the figures). Raises NoChampion."""
    from crossfit_mlops.features.specs import feature_set
    from crossfit_mlops.monitoring.monitor import champion_reference
    from crossfit_mlops.tracking.aliases import CHALLENGER as CHALLENGER_ALIAS
    from crossfit_mlops.tracking.aliases import current_version, load_version

    started = time.perf_counter()
    uri, name = settings.mlflow_tracking_uri, settings.registered_model_name
    reference = champion_reference(settings)
    version = reference["version"]
    challenger_mv = current_version(uri, name, CHALLENGER_ALIAS)
    challenger = str(challenger_mv.version) if challenger_mv is not None and str(challenger_mv.version) != version else None
    since, until = window(uri, until, max_hours)
    traffic = read_log(live_root(settings), since, until)

    counts, ok, labelled = _traffic(traffic, version, settings)
    summary: dict[str, Any] = {
        "model_name": name,
        "model_version": version,
        "feature_version": reference["feature_version"],
        "challenger_version": challenger,
        "since": since.isoformat(timespec="seconds"),
        "until": until.isoformat(timespec="seconds"),
        **counts,
    }
    champion = load_version(uri, name, version)
    summary["test_rmse"] = champion.metrics.get("test_rmse")
    summary["live"] = _error_stats(labelled["label"].to_numpy(), labelled["prediction"].to_numpy()) if len(labelled) else None

    summary["shadow"], summary["shadow_scored"] = _shadow(traffic, labelled, challenger)
    names = feature_set(reference["feature_version"]).names
    frames = _drift_frames(reference, champion, ok, names)
    summary.update(_drift(frames, names, drift_threshold))

    summary.update(_decision(policy, summary, champion.tags.get("previous_champion"), _hours_since_last_rollback(uri, name, until)))
    final = settings.monitoring_dir / LIVE_KIND / f"run={safe_key(run_key)}"
    _write_outputs(final, summary, frames, labelled, champion, started)
    summary["path"] = str(published_version(final))
    summary["mlflow_run_id"] = _log_run(settings, summary, tags or {})
    _tag_versions(settings, summary)
    log.info("live traffic of %s v%s %s..%s: %s (%s)", name, version, summary["since"], summary["until"],
             summary["decision"].upper(), "; ".join(summary["reasons"]))  # fmt: skip
    return summary


def _decision(policy: RollbackPolicy, summary: dict[str, Any], previous: str | None, hours: float | None) -> dict[str, Any]:
    decision = decide_rollback(
        policy, test_rmse=summary["test_rmse"], live=summary["live"], requests=summary["requests"],
        server_errors=summary["server_errors"], previous_champion=previous, hours_since_last_rollback=hours,
    )  # fmt: skip
    return {
        "policy": policy.as_dict(), "decision": decision.label, "rollback": decision.rollback, "reasons": decision.reasons,
        "blocked": decision.blocked, "previous_champion": previous, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }  # fmt: skip


def _traffic(traffic: pd.DataFrame, version: str, settings: Settings) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """The counts of the window, the champion's answered rows (labels attached) and the labelled ones."""
    answered = traffic[(traffic["role"] == CHAMPION) & (traffic["model_version"] == version)]
    ok = attach_labels(answered[answered["status"] == 200].reset_index(drop=True), settings)
    labelled = ok[ok["label"].notna()]
    counts = {
        "requests_logged": int(traffic.loc[traffic["role"] == CHAMPION, "request_id"].nunique()),
        "requests": int(answered["request_id"].nunique()),
        "server_errors": int(answered.loc[answered["status"] >= 500, "request_id"].nunique()),
        "predictions": len(ok),
        "labelled": len(labelled),
        "label_snapshots": sorted(labelled["label_snapshot"].dropna().unique().tolist()),
    }
    return counts, ok, labelled


def _shadow(traffic: pd.DataFrame, labelled: pd.DataFrame, challenger: str | None) -> tuple[dict[str, float] | None, int]:
    """The shadow challenger's error on the champion's labelled requests, paired (or None), and how
    many requests it scored."""
    from crossfit_mlops.metrics import paired_improvement

    if challenger is None:
        return None, 0
    theirs = traffic[(traffic["role"] == CHALLENGER) & (traffic["model_version"] == challenger) & (traffic["status"] == 200)]
    pairs = labelled.merge(theirs[["request_id", "item", "prediction"]], on=["request_id", "item"], suffixes=("", "_challenger"))
    if len(pairs) < 2:
        return None, int(theirs["request_id"].nunique())
    y = pairs["label"].to_numpy()
    shadow = {
        **paired_improvement(y, pairs["prediction"].to_numpy(), pairs["prediction_challenger"].to_numpy()),
        "challenger_rmse": _error_stats(y, pairs["prediction_challenger"].to_numpy())["rmse"],
    }
    return shadow, int(theirs["request_id"].nunique())


def _drift_frames(reference: dict[str, Any], champion, ok: pd.DataFrame, names: list[str]):
    """(the champion's test split with its predictions, the live requests' features and
    predictions), or None below :data:`MIN_DRIFT_ROWS` answered requests."""
    if len(ok) < MIN_DRIFT_ROWS:
        return None
    from crossfit_mlops.features.training_sets import load_split
    from crossfit_mlops.monitoring.drift import PREDICTION

    X, y_ref, _ = load_split(reference["training_set"], "test")
    ref = X.copy()
    ref[PREDICTION] = champion.model.predict(X[list(champion.columns)].astype("float64"))
    ref[TARGET] = y_ref.to_numpy()
    cur = _features_frame(ok, names, X.dtypes)
    cur[PREDICTION] = ok["prediction"].to_numpy()
    return ref, cur


def _drift(frames, names: list[str], threshold: float) -> dict[str, Any]:
    if frames is None:
        return {"drift_share": None, "drifted_features": [], "columns": [], "drift_note": f"fewer than {MIN_DRIFT_ROWS} answered requests: drift not measured"}
    from crossfit_mlops.monitoring.drift import PREDICTION, column_drifts, column_kinds, run_report

    ref, cur = frames
    report = run_report(ref, cur, names, None, threshold)
    drifts = column_drifts(report, column_kinds(ref, [*names, PREDICTION]))
    drifted = [d.column for d in drifts if d.column in names and d.drifted]
    return {
        "drift_share": len(drifted) / len(names),
        "drifted_features": drifted,
        "prediction_drift": next(d.as_dict() for d in drifts if d.column == PREDICTION),
        "columns": [d.as_dict() for d in drifts],
        "_report": report,
    }


def _hours_since_last_rollback(uri: str, name: str, until: datetime) -> float | None:
    from crossfit_mlops.tracking.history import history

    rollbacks = [e for e in history(uri, name) if e["event"] == "rollback"]
    if not rollbacks:
        return None
    return max(0.0, (until - _parse(rollbacks[-1]["at"])).total_seconds() / 3600.0)


def _write_outputs(final: Path, summary: dict[str, Any], frames, labelled: pd.DataFrame, champion, started: float) -> None:
    from crossfit_mlops.monitoring.dashboard import dashboard_figure
    from crossfit_mlops.monitoring.drift import PREDICTION, ColumnDrift

    report = summary.pop("_report", None)
    with publishing(final) as tmp:
        if report is not None:
            report.save_html(str(tmp / "report.html"))
        drifts = [ColumnDrift(**c) for c in summary["columns"]]
        residual_ref = (frames[0][PREDICTION] - frames[0][TARGET]).to_numpy() if frames else np.array([])
        residual_live = (labelled["prediction"] - labelled["label"]).to_numpy(dtype=float)
        live = summary["live"] or {}
        shadow = summary["shadow"]
        title = (
            f"{summary['model_name']} v{summary['model_version']} on live traffic {summary['since']} .. {summary['until']}: "
            f"{summary['requests']} requests, {summary['labelled']} labelled; decision {summary['decision'].upper()}"
            + (f"\nshadow v{summary['challenger_version']}: RMSE {shadow['challenger_rmse']:.1f} vs {shadow['rmse_reference']:.1f} lb on the same {shadow['rows']}, "
               f"improvement {shadow['improvement']:+.1%} (95% CI {shadow['improvement_low']:+.1%} to {shadow['improvement_high']:+.1%})"
               if shadow else "")
        )  # fmt: skip
        fig = dashboard_figure(
            drifts, residual_ref, residual_live, float(summary["test_rmse"] or np.nan), float(live.get("rmse", np.nan)), title,
            labels=("test split (reference)", "live, labelled"),
            error_title="the champion's error: test split and live",
        )
        fig.savefig(tmp / "dashboard.png")
        summary["seconds"] = round(time.perf_counter() - started, 3)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=float))


def _metrics(summary: dict[str, Any]) -> dict[str, float]:
    out = {k: float(summary[k]) for k in ("requests", "server_errors", "predictions", "labelled")}
    if summary["requests"]:
        out["error_rate"] = summary["server_errors"] / summary["requests"]
    if summary["test_rmse"] is not None:
        out["test_rmse"] = float(summary["test_rmse"])
    for key, value in (summary["live"] or {}).items():
        out[f"live_{key}"] = float(value)
    for key in ("improvement", "improvement_low", "improvement_high", "challenger_rmse", "rows"):
        if summary["shadow"]:
            out[f"shadow_{key}"] = float(summary["shadow"][key])
    if summary["drift_share"] is not None:
        out["drift_share"] = float(summary["drift_share"])
        out.update({f"drift.{c['column']}": float(np.nan_to_num(c["score"], nan=1.0)) for c in summary["columns"]})
    out["rollback"] = float(summary["rollback"])
    return out


def _log_run(settings: Settings, summary: dict[str, Any], tags: dict[str, str]) -> str:
    import mlflow

    from crossfit_mlops.monitoring.monitor import MONITORING_EXPERIMENT
    from crossfit_mlops.storage import location
    from crossfit_mlops.tracking import fluent
    from crossfit_mlops.tracking.runs import ensure_experiment

    uri = settings.mlflow_tracking_uri
    run_tags = {
        **tags,
        "monitoring.kind": LIVE_KIND,
        SINCE_TAG: summary["since"],
        UNTIL_TAG: summary["until"],
        "model_name": summary["model_name"],
        "model_version": summary["model_version"],
        "challenger_version": summary["challenger_version"] or "none",
        "decision": summary["decision"],
        "reasons": "; ".join(summary["reasons"] + ([summary["blocked"]] if summary["blocked"] else []))[:4900],
        "monitoring_path": summary["path"],
    }
    experiment_id = ensure_experiment(uri, MONITORING_EXPERIMENT)
    with fluent(uri), mlflow.start_run(
        experiment_id=experiment_id, run_name=f"live-v{summary['model_version']}-{summary['until'][:16]}", tags=run_tags
    ) as run:
        mlflow.log_params(summary["policy"])
        mlflow.log_metrics(_metrics(summary))
        with local_copy(location(summary["path"], settings)) as outputs:
            mlflow.log_artifacts(str(outputs))
        return run.info.run_id


def _tag_versions(settings: Settings, summary: dict[str, Any]) -> None:
    """The champion's ``live.last_*`` tags; the shadow challenger's ``shadow.*`` evidence (what the
    gate and the model card read)."""
    from crossfit_mlops.tracking import client

    c, name = client(settings.mlflow_tracking_uri), summary["model_name"]
    live = summary["live"] or {}
    for key, value in {
        "live.last_run_id": summary["mlflow_run_id"],
        "live.last_window": f"{summary['since']}/{summary['until']}",
        "live.last_decision": summary["decision"],
        "live.last_rmse": f"{live['rmse']:.3f}" if live else "none",
        "live.last_labelled": str(summary["labelled"]),
    }.items():
        c.set_model_version_tag(name, summary["model_version"], key, value)
    shadow = summary["shadow"]
    if summary["challenger_version"] and shadow:
        for key, value in {
            "shadow.run_id": summary["mlflow_run_id"],
            "shadow.window": f"{summary['since']}/{summary['until']}",
            "shadow.champion_version": summary["model_version"],
            "shadow.rows": str(shadow["rows"]),
            "shadow.rmse": f"{shadow['challenger_rmse']:.3f}",
            "shadow.champion_rmse": f"{shadow['rmse_reference']:.3f}",
            "shadow.improvement": f"{shadow['improvement']:.5f}",
            "shadow.improvement_low": f"{shadow['improvement_low']:.5f}",
            "shadow.improvement_high": f"{shadow['improvement_high']:.5f}",
        }.items():
            c.set_model_version_tag(name, summary["challenger_version"], key, value)


def rollback_reason(summary: dict[str, Any]) -> str:
    """What the alias history records for an automated rollback: the window, the rule's reasons and
    where the evidence is."""
    return (
        f"automated rollback on live traffic {summary['since']}..{summary['until']}: "
        + "; ".join(summary["reasons"]) + f" (evidence: MLflow run {summary['mlflow_run_id']}, {summary['path']})"
    )  # fmt: skip


__all__ = ["RollbackDecision", "attach_labels", "measure_live", "rollback_reason", "window"]
