"""Champion/challenger: register the best run, judge it on the untouched test set, promote or not.

Vocabulary: MLflow 3 aliases (``@challenger`` = the newest candidate, ``@champion`` = the model that
serves) plus tags. Deprecated registry stages are never set; for readers used to them, every version
carries a ``legacy_stage`` tag (Staging / Production / Archived) that says what the stage would be.

The rule (:func:`decide`, pure): a challenger is rejected when its test R² is below the floor, or at
or above the leakage ceiling (an R² near 1 on this problem means a lift leaked into the features); with
no champion it is promoted; otherwise it must beat the champion's test RMSE, measured now on the same
test athletes, by the relative margin. The decision and its reason are written on the version.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"


class GateError(RuntimeError):
    """The gate could not judge the challenger (e.g. the champion cannot be evaluated)."""


class RollbackError(RuntimeError):
    """There is nothing to roll back to."""


@dataclass(frozen=True)
class GatePolicy:
    min_improvement: float = 0.005  # the challenger's test RMSE must be <= champion's x (1 - this)
    r2_floor: float = 0.5
    r2_ceiling: float = 0.98

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_improvement < 1.0:
            raise ValueError(f"min_improvement must be in [0, 1), got {self.min_improvement}")
        if not self.r2_floor < self.r2_ceiling <= 1.0:
            raise ValueError(f"need r2_floor < r2_ceiling <= 1, got {self.r2_floor} and {self.r2_ceiling}")


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str

    @property
    def label(self) -> str:
        return "promoted" if self.promote else "rejected"


def decide(challenger: dict[str, float], champion: dict[str, float] | None, policy: GatePolicy) -> Decision:
    """Pure gate rule on test metrics (``rmse``, ``r2``) of the challenger and the current champion."""
    r2, rmse = challenger["r2"], challenger["rmse"]
    if r2 >= policy.r2_ceiling:
        return Decision(False, f"test R² {r2:.4f} >= leakage ceiling {policy.r2_ceiling}: a lift probably leaked into the features")
    if r2 < policy.r2_floor:
        return Decision(False, f"test R² {r2:.4f} is below the floor {policy.r2_floor}")
    if champion is None:
        return Decision(True, f"no champion yet and test R² {r2:.4f} meets the floor {policy.r2_floor}")
    needed = champion["rmse"] * (1.0 - policy.min_improvement)
    if rmse <= needed:
        gain = 1.0 - rmse / champion["rmse"]
        return Decision(
            True,
            f"test RMSE {rmse:.2f} beats the champion's {champion['rmse']:.2f} by {gain:.2%} (margin {policy.min_improvement:.2%})",
        )
    return Decision(
        False,
        f"test RMSE {rmse:.2f} does not beat the champion's {champion['rmse']:.2f} by the margin "
        f"{policy.min_improvement:.2%} (needed <= {needed:.2f})",
    )


def _client(tracking_uri: str):
    from crossfit_mlops.training.tracking import client

    return client(tracking_uri)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def current_version(tracking_uri: str, model_name: str, alias: str):
    """The model version behind ``alias``, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return _client(tracking_uri).get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None


def register_challenger(tracking_uri: str, model_name: str, best: dict[str, Any], tags: dict[str, str]) -> str:
    """Register the best run's model as a new version and point ``@challenger`` at it."""
    from mlflow.exceptions import MlflowException

    c = _client(tracking_uri)
    try:
        c.create_registered_model(
            model_name,
            description="Predicts an athlete's total lift (lb) from profile and survey features. "
            "@champion serves; @challenger is the newest candidate; see each version's gate.* tags.",
        )
    except MlflowException as exc:
        if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    training_set = best["training_set"]
    version_tags = {
        **tags,
        "feature_version": best["feature_version"],
        "feature_service": training_set["feature_service"],
        "snapshot_id": training_set["snapshot_id"],
        "snapshot_sha256": training_set["snapshot_sha256"],
        "model_family": best["model"],
        "run_name": best["run_name"],
        "val_rmse": f"{best['val_rmse']:.4f}",
        "val_r2": f"{best['val_r2']:.4f}",
        "legacy_stage": "Staging",
        "gate.decision": "pending",
    }
    version = c.create_model_version(
        model_name,
        source=best["model_uri"],
        run_id=best["run_id"],
        model_id=best.get("model_id"),
        tags=version_tags,
        description=f"{best['run_name']} (validation RMSE {best['val_rmse']:.1f} lb)",
    )
    _wait_ready(c, model_name, version.version)
    c.set_registered_model_alias(model_name, CHALLENGER, version.version)
    log.info("registered %s version %s from run %s as @%s", model_name, version.version, best["run_id"], CHALLENGER)
    return str(version.version)


def _wait_ready(c, model_name: str, version: str, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while True:
        status = c.get_model_version(model_name, version).status
        if status == "READY":
            return
        if status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise GateError(f"{model_name} version {version} did not become READY (status {status})")
        time.sleep(0.2)


def evaluate_version(tracking_uri: str, model_name: str, version: str, test_sets: dict[str, dict]) -> dict[str, Any]:
    """Test metrics of a registered version on the test split of the feature version it was trained on."""
    import mlflow

    from crossfit_mlops.training.datasets import load_split
    from crossfit_mlops.training.evaluate import regression_metrics

    mv = _client(tracking_uri).get_model_version(model_name, version)
    feature_version = mv.tags.get("feature_version")
    if feature_version not in test_sets:
        raise GateError(
            f"{model_name} v{version} was trained on feature version {feature_version!r}, and this run has no "
            f"test set for it (have {sorted(test_sets)})"
        )
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
    X, y, _ = load_split(test_sets[feature_version], "test")
    metrics = regression_metrics(y, model.predict(X))
    return {"version": str(version), "feature_version": feature_version, "rows": len(y), **metrics}


def judge_challenger(
    tracking_uri: str,
    model_name: str,
    challenger_version: str,
    test_sets: dict[str, dict],
    policy: GatePolicy,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Evaluate challenger and champion on the same test athletes, decide, record it on the version."""
    c = _client(tracking_uri)
    challenger = evaluate_version(tracking_uri, model_name, challenger_version, test_sets)
    champion_mv = current_version(tracking_uri, model_name, CHAMPION)
    champion = None
    if champion_mv is not None and str(champion_mv.version) != str(challenger_version):
        champion = evaluate_version(tracking_uri, model_name, champion_mv.version, test_sets)
    decision = decide(challenger, champion, policy)
    result = {
        "model_name": model_name,
        "decision": decision.label,
        "promote": decision.promote,
        "reason": decision.reason,
        "challenger": challenger,
        "champion": champion,
        "policy": asdict(policy),
        "decided_at": _now(),
    }
    record = {
        "gate.decision": decision.label,
        "gate.reason": decision.reason,
        "gate.test_rmse": f"{challenger['rmse']:.4f}",
        "gate.test_r2": f"{challenger['r2']:.4f}",
        "gate.test_rows": str(challenger["rows"]),
        "gate.champion_version": champion["version"] if champion else "none",
        "gate.champion_test_rmse": f"{champion['rmse']:.4f}" if champion else "none",
        "gate.policy": json.dumps(asdict(policy)),
        "gate.decided_at": result["decided_at"],
        **(tags or {}),
    }
    for key, value in record.items():
        c.set_model_version_tag(model_name, challenger_version, key, value)
    log.info("gate for %s v%s: %s (%s)", model_name, challenger_version, decision.label.upper(), decision.reason)
    return result


def promote(tracking_uri: str, model_name: str, version: str) -> str | None:
    """Move ``@champion`` to ``version``; tag the previous champion archived. Returns the previous one."""
    c = _client(tracking_uri)
    previous = current_version(tracking_uri, model_name, CHAMPION)
    previous_version = str(previous.version) if previous is not None else None
    c.set_registered_model_alias(model_name, CHAMPION, version)
    c.set_model_version_tag(model_name, version, "legacy_stage", "Production")
    c.set_model_version_tag(model_name, version, "promoted_at", _now())
    if previous_version and previous_version != str(version):
        c.set_model_version_tag(model_name, version, "previous_champion", previous_version)
        c.set_model_version_tag(model_name, previous_version, "legacy_stage", "Archived")
        c.set_model_version_tag(model_name, previous_version, "archived", "true")
        c.set_model_version_tag(model_name, previous_version, "superseded_by", str(version))
    log.info("@%s: %s v%s (was %s)", CHAMPION, model_name, version, previous_version or "none")
    return previous_version


def mark_rejected(tracking_uri: str, model_name: str, version: str) -> None:
    """A rejected challenger stays registered, visibly rejected (and keeps ``@challenger``)."""
    _client(tracking_uri).set_model_version_tag(model_name, version, "legacy_stage", "Archived")


def rollback(tracking_uri: str, model_name: str) -> tuple[str, str]:
    """Point ``@champion`` back at the champion before the current one. Returns (from, to)."""
    c = _client(tracking_uri)
    current = current_version(tracking_uri, model_name, CHAMPION)
    if current is None:
        raise RollbackError(f"{model_name} has no @{CHAMPION}: nothing to roll back")
    previous = current.tags.get("previous_champion")
    if not previous:
        raise RollbackError(f"{model_name} v{current.version} is the first champion: there is no previous one to roll back to")
    c.set_registered_model_alias(model_name, CHAMPION, previous)
    c.set_model_version_tag(model_name, current.version, "legacy_stage", "Archived")
    c.set_model_version_tag(model_name, current.version, "rolled_back_at", _now())
    c.set_model_version_tag(model_name, previous, "legacy_stage", "Production")
    c.set_model_version_tag(model_name, previous, "archived", "false")
    c.set_model_version_tag(model_name, previous, "restored_at", _now())
    log.info("rolled @%s back from v%s to v%s", CHAMPION, current.version, previous)
    return str(current.version), str(previous)
