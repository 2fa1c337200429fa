"""Live monitoring's pure parts and its files: the rollback rule, the prediction log's layout and
window, and how a logged prediction finds its label in a later snapshot."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from crossfit_mlops.monitoring.live import attach_labels
from crossfit_mlops.monitoring.policy import PolicyError, RollbackPolicy, decide_rollback
from crossfit_mlops.prediction_log import live_root, read_log, to_frame, write_part

POLICY = RollbackPolicy(max_live_rmse_increase=0.2, max_error_rate=0.05, min_labeled=30, min_requests=50, cooldown_hours=6)
BAD_LIVE = {"rmse": 260.0, "rmse_low": 240.0, "rmse_high": 280.0, "rows": 200}


def _decide(**overrides):
    facts = {"test_rmse": 150.0, "live": BAD_LIVE, "requests": 200, "server_errors": 0, "previous_champion": "3",
             "hours_since_last_rollback": None, **overrides}  # fmt: skip
    return decide_rollback(POLICY, **facts)


def test_live_error_clearly_above_the_test_error_rolls_back_and_says_why():
    decision = _decide()
    assert decision.rollback and decision.label == "rollback"
    assert "the whole interval is above 180.0 (+20%)" in decision.summary


def test_an_interval_that_reaches_the_bound_is_noise_not_a_rollback():
    decision = _decide(live={**BAD_LIVE, "rmse_low": 175.0})
    assert not decision.rollback and decision.label == "keep" and "not clearly above 180.0" in decision.summary


def test_too_few_labels_never_roll_back_on_error():
    decision = _decide(live={**BAD_LIVE, "rows": 29})
    assert not decision.rollback and "29 labelled live predictions, fewer than the 30" in decision.summary
    assert not _decide(live=None).rollback


def test_a_high_server_error_rate_rolls_back_without_labels():
    decision = _decide(live=None, requests=100, server_errors=5)
    assert decision.rollback and "5/100 requests ended in a server error (5.0% >= 5.0%)" in decision.summary
    assert not _decide(live=None, requests=100, server_errors=4).rollback
    assert not _decide(live=None, requests=40, server_errors=40).rollback, "below min_requests the rate is not judged"


def test_the_cool_down_and_a_first_champion_block_a_rollback_and_say_so():
    cooling = _decide(hours_since_last_rollback=2.0)
    assert not cooling.rollback and cooling.label == "rollback_blocked"
    assert "2.0 h ago, within the 6 h cool-down" in cooling.summary
    assert _decide(hours_since_last_rollback=6.5).rollback
    first = _decide(previous_champion=None)
    assert not first.rollback and "first champion" in first.blocked


@pytest.mark.parametrize("kwargs", [{"max_live_rmse_increase": 0.0}, {"max_error_rate": 1.5}, {"min_labeled": 1}, {"cooldown_hours": -1}])
def test_meaningless_rollback_thresholds_are_refused(kwargs):
    with pytest.raises(PolicyError):
        RollbackPolicy(**kwargs)


def _record(at: datetime, request_id: str, athlete: int | None = 1, role: str = "champion", **extra):
    return {"request_id": request_id, "logged_at": at, "route": "/predict", "status": 200, "error": None, "role": role,
            "item": 0, "athlete_id": athlete, "feature_version": "v1", "features": json.dumps({"age": 30.0}),
            "features_at": pd.Timestamp("2026-11-01", tz="UTC"), "model_name": "m", "model_version": "2",
            "prediction": 500.0, "latency_ms": 1.0, **extra}  # fmt: skip


def test_the_log_is_partitioned_by_hour_and_read_by_window(settings):
    start = datetime(2026, 12, 7, 9, 50, tzinfo=UTC)
    records = [_record(start + timedelta(minutes=m), f"r{m}") for m in (0, 5, 15, 75)]
    root = live_root(settings)
    written = write_part(root, to_frame(records), seq=1)
    assert [p.parent.name for p in written] == ["hour=09", "hour=10", "hour=11"]
    assert [p.parent.parent.name for p in written] == ["date=2026-12-07"] * 3
    (written[0].parent / ".part-in-flight.parquet.tmp").write_bytes(b"half")  # a writer's temporary: never read
    frame = read_log(root, start + timedelta(minutes=5), start + timedelta(minutes=75))
    assert frame["request_id"].tolist() == ["r5", "r15"], "since is inclusive, until exclusive"
    assert str(frame["logged_at"].dtype) == "datetime64[us, UTC]" and frame["athlete_id"].dtype == "Int64"
    assert read_log(root, start, start).empty and read_log(root / "none", start, start + timedelta(hours=1)).empty


def _validated(settings, snapshot_id: str, labels: dict[int, float]) -> None:
    folder = settings.processed_dir / f"snapshot={snapshot_id}"
    folder.mkdir(parents=True)
    (folder / "validation_report.json").write_text(json.dumps({"status": "ok"}))
    pd.DataFrame({"athlete_id": list(labels), "event_timestamp": pd.Timestamp(snapshot_id, tz="UTC"),
                  "total_lift": list(labels.values())}).to_parquet(folder / "labels.parquet")  # fmt: skip


def test_a_prediction_is_labelled_by_the_first_snapshot_after_its_features(settings):
    _validated(settings, "2026-11-01", {1: 100.0, 2: 200.0})  # the features' own snapshot: not a label
    _validated(settings, "2026-12-01", {1: 110.0})
    _validated(settings, "2026-12-15", {1: 120.0, 2: 220.0})
    failed = settings.processed_dir / "snapshot=2026-11-20"
    failed.mkdir()
    (failed / "validation_report.json").write_text(json.dumps({"status": "failed"}))
    at = datetime(2026, 12, 7, tzinfo=UTC)
    rows = to_frame([
        _record(at, "a", athlete=1),
        _record(at, "b", athlete=2),  # not in 2026-12-01: no label there, even if a later snapshot has one
        _record(at, "c", athlete=1, features_at=pd.Timestamp("2026-12-01", tz="UTC")),
        _record(at, "d", athlete=None, route="/predict/features", features_at=None),
        _record(at, "e", athlete=1, features_at=pd.Timestamp("2026-12-15", tz="UTC")),  # nothing later yet
    ])  # fmt: skip
    labelled = attach_labels(rows, settings)
    assert labelled["label"].tolist()[:3] == [110.0, pytest.approx(np.nan, nan_ok=True), 120.0]
    assert labelled["label_snapshot"].tolist() == ["2026-12-01", None, "2026-12-15", None, None]
    assert np.isnan(labelled["label"].iloc[3]) and np.isnan(labelled["label"].iloc[4])


def test_the_monitor_command_prints_the_live_decision_and_its_reasons():
    from crossfit_stack.follow import format_live

    live = {"since": "2026-12-07T04:00:00+00:00", "until": "2026-12-07T05:00:00+00:00", "requests": 150, "labelled": 150,
            "live": {"rmse": 260.0}, "test_rmse": 150.0, "decision": "rollback", "reasons": ["live RMSE 260.0 lb ..."],
            "blocked": "", "path": "/state/monitoring/live/run=x"}  # fmt: skip
    text = format_live(live, rolled_back=True)
    assert "150 requests, 150 labelled, live RMSE 260.0 lb (test 150.0): ROLLED BACK" in text
    assert "  - live RMSE 260.0 lb ..." in text and "run=x/dashboard.png" in text and "shadow" not in text
    shadow = {"challenger_rmse": 171.5, "rmse_reference": 127.6, "rows": 55, "improvement": -0.344, "improvement_low": -0.625, "improvement_high": -0.125}
    shadowed = format_live({**live, "challenger_version": "2", "shadow": shadow}, rolled_back=False)
    assert ("  shadow challenger v2: live RMSE 171.5 vs the champion's 127.6 lb on the same 55 labelled requests: "
            "improvement -34.4% (95% CI -62.5% to -12.5%)") in shadowed  # fmt: skip
    blocked = format_live({**live, "decision": "rollback_blocked", "blocked": "no rollback: cool-down"}, rolled_back=False)
    assert "ROLLBACK_BLOCKED" in blocked and "  - no rollback: cool-down" in blocked
