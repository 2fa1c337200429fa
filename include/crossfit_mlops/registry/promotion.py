"""Promotion through the registry: register the best run, judge it, move the aliases, roll back.

Vocabulary: MLflow 3 aliases (``@challenger`` = the newest candidate, ``@champion`` = the model that
serves) plus tags. Deprecated registry stages are never set; for readers used to them, every version
carries a ``legacy_stage`` tag (Staging / Production / Archived) that says what the stage would be.
The rule itself is :func:`crossfit_mlops.registry.gate.decide`; the decision and its reason are
written on the version as ``gate.*`` tags.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from crossfit_mlops.features.training_sets import load_split
from crossfit_mlops.metrics import metric_intervals, paired_improvement, regression_metrics
from crossfit_mlops.registry.card import write_card
from crossfit_mlops.registry.gate import GatePolicy, decide
from crossfit_mlops.storage import ENTITY_KEY
from crossfit_mlops.tracking import client
from crossfit_mlops.tracking.aliases import (
    CHALLENGER,
    CHAMPION,
    GATE_TAGS,
    current_version,
    load_version,
)
from crossfit_mlops.tracking.history import cli_actor, record

log = logging.getLogger(__name__)


class GateError(RuntimeError):
    """The gate could not judge the challenger (e.g. the champion cannot be evaluated)."""


class RollbackError(RuntimeError):
    """There is nothing to roll back to."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def move_alias(
    tracking_uri: str, model_name: str, alias: str, version: str, event: str, actor: str, reason: str
) -> str | None:
    """Point ``alias`` at ``version`` and record the move in the alias history (every alias move
    goes through here). Returns the version the alias pointed at before."""
    before = current_version(tracking_uri, model_name, alias)
    client(tracking_uri).set_registered_model_alias(model_name, alias, version)
    previous = str(before.version) if before is not None else None
    record(tracking_uri, model_name, event, alias, previous, str(version), actor, reason)
    return previous


REGISTRATION_KEY_TAG = "registration_key"
UNCHANGED = "unchanged"  # the gate's outcome when the challenger already is the champion


def registration_key(training_set: dict[str, Any], grid: list[dict[str, Any]], code_version: str) -> str:
    """What makes two registrations the same: the data (snapshot digest and sample), the grid and
    the code. A retried or cleared run computes the same key and finds the version it registered."""
    import hashlib

    payload = {
        "snapshot_sha256": training_set["snapshot_sha256"],
        "sample_size": training_set.get("sample_size", 0),
        "grid": sorted(json.dumps(entry, sort_keys=True) for entry in grid),
        "code_version": code_version,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _ensure_registered_model(c, model_name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        c.create_registered_model(
            model_name,
            description="Predicts an athlete's total lift (lb) from profile and survey features. "
            "@champion serves; @challenger is the newest candidate; see each version's gate.* tags.",
        )
    except MlflowException as exc:
        if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise


def version_with_key(tracking_uri: str, model_name: str, key: str):
    """The version registered with ``key`` (the newest, should there be several), or None."""
    versions = client(tracking_uri).search_model_versions(f"name='{model_name}'")
    same = [mv for mv in versions if mv.tags.get(REGISTRATION_KEY_TAG) == key]
    return max(same, key=lambda mv: int(mv.version)) if same else None


def register_challenger(
    tracking_uri: str,
    model_name: str,
    best: dict[str, Any],
    tags: dict[str, str],
    key: str | None = None,
    actor: str = "pipeline",
) -> str:
    """Register the best run's model as a new version and point ``@challenger`` at it.

    With a registration ``key`` (see :func:`registration_key`) this is idempotent: if a version
    with that key exists, it is the challenger again and no new version is made.
    """
    c = client(tracking_uri)
    _ensure_registered_model(c, model_name)
    existing = version_with_key(tracking_uri, model_name, key) if key else None
    if existing is not None:
        _wait_ready(c, model_name, existing.version)
        if str(getattr(current_version(tracking_uri, model_name, CHALLENGER), "version", "")) != str(existing.version):
            move_alias(tracking_uri, model_name, CHALLENGER, existing.version, "registration", actor,
                       f"the same data, grid and code as v{existing.version} (registration key {key}): reused")  # fmt: skip
        log.info("%s v%s was registered with the same data, grid and code (key %s): reused", model_name, existing.version, key)
        return str(existing.version)
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
        **({REGISTRATION_KEY_TAG: key} if key else {}),
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
    move_alias(tracking_uri, model_name, CHALLENGER, version.version, "registration", actor,
               f"best of the run: {best.get('selection') or best['run_name']}")  # fmt: skip
    log.info("registered %s version %s from run %s as @%s", model_name, version.version, best["run_id"], CHALLENGER)
    return str(version.version)


def _wait_ready(c, model_name: str, version: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = c.get_model_version(model_name, version).status
        if status == "READY":
            return
        if status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise GateError(f"{model_name} version {version} did not become READY (status {status})")
        time.sleep(0.2)


def _test_predictions(tracking_uri: str, model_name: str, version: str, test_sets: dict[str, dict]):
    """``(feature_version, athlete_id -> (label, prediction) frame)`` of a registered version on the
    test split of the feature version it was trained on."""
    import pandas as pd

    loaded = load_version(tracking_uri, model_name, version)
    if loaded.feature_version not in test_sets:
        raise GateError(
            f"{model_name} v{version} was trained on feature version {loaded.feature_version!r}, and this run has no "
            f"test set for it (have {sorted(test_sets)})"
        )
    X, y, frame = load_split(test_sets[loaded.feature_version], "test")
    scored = pd.DataFrame({"label": y.to_numpy(), "prediction": loaded.model.predict(X[list(loaded.columns)])})
    return loaded.feature_version, scored.set_axis(frame[ENTITY_KEY].to_numpy())


def evaluate_version(
    tracking_uri: str, model_name: str, version: str, test_sets: dict[str, dict], policy: GatePolicy | None = None
) -> dict[str, Any]:
    """Test metrics of a registered version on the test split of the feature version it was
    trained on, with their bootstrap intervals (resampling athletes)."""
    policy = policy or GatePolicy()
    feature_version, scored = _test_predictions(tracking_uri, model_name, version, test_sets)
    metrics = regression_metrics(scored["label"], scored["prediction"])
    intervals = metric_intervals(scored["label"], scored["prediction"], policy.bootstrap_samples, policy.confidence)
    return {"version": str(version), "feature_version": feature_version, "rows": len(scored), **metrics, **intervals}


def paired_test(tracking_uri: str, model_name: str, champion: str, challenger: str, test_sets: dict[str, dict], policy: GatePolicy):
    """The challenger's improvement over the champion on the athletes both test sets hold."""
    _, old = _test_predictions(tracking_uri, model_name, champion, test_sets)
    _, new = _test_predictions(tracking_uri, model_name, challenger, test_sets)
    both = old.join(new, how="inner", lsuffix="_champion", rsuffix="_challenger")
    if both.empty:
        raise GateError(f"v{champion} and v{challenger} have no test athlete in common: they cannot be compared")
    return paired_improvement(
        both["label_champion"], both["prediction_champion"], both["prediction_challenger"],
        policy.bootstrap_samples, policy.confidence,
    )  # fmt: skip


def shadow_evidence(tags: dict[str, str], champion_mv) -> dict[str, float] | None:
    """The ``shadow.*`` tags live monitoring wrote on a version, if they were measured against the
    current champion (evidence against another champion says nothing about this one)."""
    if champion_mv is None or tags.get("shadow.champion_version") != str(champion_mv.version):
        return None
    try:
        return {k: float(tags[f"shadow.{k}"]) for k in ("improvement", "improvement_low", "improvement_high", "rows")}
    except (KeyError, ValueError):
        return None


def judge_challenger(
    tracking_uri: str,
    model_name: str,
    challenger_version: str,
    test_sets: dict[str, dict],
    policy: GatePolicy,
    tags: dict[str, str] | None = None,
    selection: str | None = None,
) -> dict[str, Any]:
    """Evaluate challenger and champion on the same test athletes, decide, record it on the version.
    ``selection`` says why this candidate is the challenger (the leaderboard's choice)."""
    c = client(tracking_uri)
    challenger = evaluate_version(tracking_uri, model_name, challenger_version, test_sets, policy)
    champion_mv = current_version(tracking_uri, model_name, CHAMPION)
    if champion_mv is not None and str(champion_mv.version) == str(challenger_version):
        # a rerun found its own earlier registration, which already serves: nothing to judge, and
        # the version keeps the gate tags of the decision that promoted it
        reason = f"v{challenger_version} is already the champion (registered before with the same data, grid and code)"
        log.info("gate for %s: %s", model_name, reason)
        return {"model_name": model_name, "decision": UNCHANGED, "promote": False, "reason": reason,
                "challenger": challenger, "champion": challenger, "policy": policy.as_dict(), "decided_at": _now()}  # fmt: skip
    champion, paired = None, None
    if champion_mv is not None:
        champion = evaluate_version(tracking_uri, model_name, champion_mv.version, test_sets, policy)
        paired = paired_test(tracking_uri, model_name, str(champion_mv.version), challenger_version, test_sets, policy)
    shadow = shadow_evidence(c.get_model_version(model_name, challenger_version).tags, champion_mv)
    decision = decide(challenger, champion, policy, paired=paired, shadow=shadow)
    reason = f"{decision.reason}; challenger chosen as {selection}" if selection else decision.reason
    result = {
        "model_name": model_name,
        "decision": decision.label,
        "promote": decision.promote,
        "reason": reason,
        "challenger": challenger,
        "champion": champion,
        "paired": paired,
        "policy": policy.as_dict(),
        "decided_at": _now(),
    }
    gate_tags = {
        "gate.decision": decision.label,
        "gate.reason": reason,
        "gate.test_rmse": f"{challenger['rmse']:.4f}",
        "gate.test_r2": f"{challenger['r2']:.4f}",
        "gate.test_rows": str(challenger["rows"]),
        "gate.champion_version": champion["version"] if champion else "none",
        "gate.champion_test_rmse": f"{champion['rmse']:.4f}" if champion else "none",
        "gate.test_rmse_interval": f"{challenger['rmse_low']:.2f} to {challenger['rmse_high']:.2f}",
        "gate.improvement_interval": f"{paired['improvement_low']:.4f} to {paired['improvement_high']:.4f}" if paired else "none",
        "gate.policy": json.dumps(policy.as_dict()),
        "gate.decided_at": result["decided_at"],
        **(tags or {}),
    }
    for key, value in gate_tags.items():
        c.set_model_version_tag(model_name, challenger_version, key, value)
    log.info("gate for %s v%s: %s (%s)", model_name, challenger_version, decision.label.upper(), reason)
    result["model_card"] = write_card(tracking_uri, model_name, challenger_version)
    return result


_UNCHECKED = object()


def promote(
    tracking_uri: str,
    model_name: str,
    version: str,
    expected_champion: Any = _UNCHECKED,
    actor: str = "pipeline",
    reason: str = "promoted",
    event: str = "promotion",
) -> str | None:
    """Move ``@champion`` to ``version``; tag the previous champion archived. Returns the previous one.

    ``expected_champion``: the version (or None) the gate judged the challenger against. If
    ``@champion`` moved since (another run promoted meanwhile), nothing is changed and
    :class:`GateError` says so: a challenger is only promoted over the champion it beat.
    """
    c = client(tracking_uri)
    previous = current_version(tracking_uri, model_name, CHAMPION)
    previous_version = str(previous.version) if previous is not None else None
    if expected_champion is not _UNCHECKED and previous_version != (None if expected_champion is None else str(expected_champion)):
        raise GateError(
            f"@{CHAMPION} of {model_name} moved from v{expected_champion} to v{previous_version} after the gate judged "
            f"v{version} against it: not promoted; trigger a new run to judge it against the current champion"
        )
    move_alias(tracking_uri, model_name, CHAMPION, version, event, actor, reason)
    c.set_model_version_tag(model_name, version, "legacy_stage", "Production")
    c.set_model_version_tag(model_name, version, "promoted_at", _now())
    if previous_version and previous_version != str(version):
        c.set_model_version_tag(model_name, version, "previous_champion", previous_version)
        c.set_model_version_tag(model_name, previous_version, "legacy_stage", "Archived")
        c.set_model_version_tag(model_name, previous_version, "archived", "true")
        c.set_model_version_tag(model_name, previous_version, "superseded_by", str(version))
    log.info("@%s: %s v%s (was %s)", CHAMPION, model_name, version, previous_version or "none")
    return previous_version


def mark_rejected(
    tracking_uri: str, model_name: str, decision: dict[str, Any], actor: str = "pipeline", event: str = "rejection"
) -> None:
    """A rejected challenger stays registered, visibly rejected (and keeps ``@challenger``); the
    rejection is recorded in the alias history. A challenger that already is the champion is left
    as it is."""
    if decision["decision"] == UNCHANGED:
        return
    version = decision["challenger"]["version"]
    client(tracking_uri).set_model_version_tag(model_name, version, "legacy_stage", "Archived")
    champion = (decision.get("champion") or {}).get("version")
    record(tracking_uri, model_name, event, CHAMPION, champion, champion, actor, f"v{version} not promoted: {decision['reason']}",
           version=version)  # fmt: skip


def _check_rollback_target(tracking_uri: str, model_name: str, current: str, previous: str) -> None:
    """The recorded previous champion must be a version that still exists: a tag edited by hand
    or a deleted version is refused before any alias moves."""
    from mlflow.exceptions import MlflowException

    if not previous.isdigit() or int(previous) < 1:
        raise RollbackError(
            f"{model_name} v{current} records previous_champion={previous!r}, which is not a version number: "
            "nothing was changed; move @champion by hand with the MLflow client"
        )
    try:
        client(tracking_uri).get_model_version(model_name, previous)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise RollbackError(
            f"{model_name} v{current} records previous_champion={previous}, but v{previous} does not exist "
            "(deleted?): nothing was changed"
        ) from None


def rollback(
    tracking_uri: str,
    model_name: str,
    actor: str | None = None,
    reason: str = "rolled back by hand",
    expected_current: str | None = None,
) -> tuple[str, str]:
    """Point ``@champion`` back at the champion before the current one, recorded in the alias
    history as a rollback (by ``actor``, default the CLI user). Returns (from, to).

    ``expected_current``: the version the decision to roll back was about (automated rollback); if
    ``@champion`` moved since, nothing is changed and :class:`RollbackError` says so."""
    c = client(tracking_uri)
    current = current_version(tracking_uri, model_name, CHAMPION)
    if current is None:
        raise RollbackError(f"{model_name} has no @{CHAMPION}: nothing to roll back")
    if expected_current is not None and str(current.version) != str(expected_current):
        raise RollbackError(
            f"@{CHAMPION} of {model_name} moved from v{expected_current} to v{current.version} after the evidence was "
            "measured: not rolled back; the next measurement judges the new champion"
        )
    previous = current.tags.get("previous_champion")
    if not previous:
        raise RollbackError(f"{model_name} v{current.version} is the first champion: there is no previous one to roll back to")
    _check_rollback_target(tracking_uri, model_name, str(current.version), previous)
    move_alias(tracking_uri, model_name, CHAMPION, previous, "rollback", actor or cli_actor(), reason)
    c.set_model_version_tag(model_name, current.version, "legacy_stage", "Archived")
    c.set_model_version_tag(model_name, current.version, "rolled_back_at", _now())
    c.set_model_version_tag(model_name, previous, "legacy_stage", "Production")
    c.set_model_version_tag(model_name, previous, "archived", "false")
    c.set_model_version_tag(model_name, previous, "restored_at", _now())
    log.info("rolled @%s back from v%s to v%s", CHAMPION, current.version, previous)
    return str(current.version), str(previous)


def rollback_on_evidence(tracking_uri: str, model_name: str, version: str, reason: str, evidence_run_id: str, actor: str) -> dict[str, str]:
    """The automated rollback: ``@champion`` from ``version`` (refused if it moved since the evidence
    was measured) back to the previous champion; the rolled-back version keeps the evidence's run id
    and the reason (``rollback.*`` tags)."""
    rolled_from, rolled_to = rollback(tracking_uri, model_name, actor=actor, reason=reason, expected_current=version)
    c = client(tracking_uri)
    c.set_model_version_tag(model_name, rolled_from, "rollback.evidence_run_id", evidence_run_id)
    c.set_model_version_tag(model_name, rolled_from, "rollback.reason", reason[:4900])
    return {"from_version": rolled_from, "to_version": rolled_to, "reason": reason, "evidence_run_id": evidence_run_id}


def versions_table(tracking_uri: str, model_name: str) -> dict[str, Any]:
    """The registered model's versions, aliases and gate decisions (what ``registry show`` prints)."""
    c = client(tracking_uri)
    model = c.get_registered_model(model_name)
    rows = []
    for mv in sorted(c.search_model_versions(f"name='{model_name}'"), key=lambda v: int(v.version)):
        rows.append(
            {
                "version": mv.version,
                "aliases": [a for a, v in model.aliases.items() if str(v) == str(mv.version)],
                "legacy_stage": mv.tags.get("legacy_stage"),
                "feature_version": mv.tags.get("feature_version"),
                GATE_TAGS: mv.tags.get(f"{GATE_TAGS}.decision"),
                "reason": mv.tags.get(f"{GATE_TAGS}.reason"),
            }
        )
    return {"model": model_name, CHAMPION: model.aliases.get(CHAMPION), CHALLENGER: model.aliases.get(CHALLENGER), "versions": rows}


def settle_approval(tracking_uri: str, model_name: str, decision: dict[str, Any], approval: dict[str, Any]) -> dict[str, Any]:
    """Carry out a person's answer on a challenger the gate passed (or the lack of one).

    ``approval``: ``{"chosen": [...], "by": user or None, "at": iso, "timed_out": bool}`` from the
    approval task. Approve: ``@champion`` moves (recorded as an approval by that person). Reject,
    or no answer before the timeout: the challenger is rejected, and the history says who or that
    nobody answered. The version's gate and approval tags and its model card say the same.
    """
    version = decision["challenger"]["version"]
    who = approval.get("by")
    approved = approval.get("chosen") == ["Approve"] and not approval.get("timed_out")
    c = client(tracking_uri)
    if approved:
        actor, event = f"approver:{who}", "approval"
        judged_against = decision["champion"]["version"] if decision.get("champion") else None
        promote(tracking_uri, model_name, version, judged_against, actor=actor, reason=f"approved by {who}: {decision['reason']}", event=event)
        outcome = {**decision, "decision": "promoted", "reason": f"approved by {who}; {decision['reason']}"}
    else:
        timed_out = bool(approval.get("timed_out")) or who is None
        actor, event = ("timeout", "approval_timeout") if timed_out else (f"approver:{who}", "approval_rejected")
        why = "nobody approved it before the timeout" if timed_out else f"rejected by {who}"
        outcome = {**decision, "decision": "rejected", "promote": False, "reason": f"{why} (the gate had passed it: {decision['reason']})"}
        mark_rejected(tracking_uri, model_name, outcome, actor=actor, event=event)
        c.set_model_version_tag(model_name, version, "gate.decision", "rejected")
        c.set_model_version_tag(model_name, version, "gate.reason", outcome["reason"])
    for key, value in {"approval.decision": event, "approval.by": actor, "approval.at": str(approval.get("at"))}.items():
        c.set_model_version_tag(model_name, version, key, value)
    outcome["model_card"] = write_card(tracking_uri, model_name, version)
    return outcome
