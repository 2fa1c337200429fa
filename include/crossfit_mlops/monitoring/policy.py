"""The retraining policy: thresholds and the decision they give. Pure; no I/O."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from crossfit_mlops.dag_contract import bounded, check_bounds


class PolicyError(ValueError):
    """A threshold outside its meaningful range."""


@dataclass(frozen=True)
class MonitoringPolicy:
    """When a champion should be retrained.

    Args:
        max_drift_share: retrain when at least this share of the model's features drifted.
        max_rmse_increase: retrain when the champion's RMSE on the new held-out athletes exceeds
            its RMSE on the reference held-out athletes by more than this fraction (0.10 = +10%).
        drift_threshold: a feature drifted when its distance reaches this value (normed
            Wasserstein distance for numeric features, Jensen-Shannon distance for categorical
            ones). Both are effect sizes, not p-values, so the verdict does not depend on how many
            athletes a snapshot has (a test with 300,000 rows flags differences nobody cares about).

    The defaults and bounds are also the monitoring DAG's Params.
    """

    max_drift_share: float = bounded(
        0.3, "Retrain at this share of drifted features", exclusive_minimum=0, maximum=1
    )
    max_rmse_increase: float = bounded(
        0.10, "Retrain above this relative RMSE increase", minimum=0, exclusive_maximum=10
    )
    drift_threshold: float = bounded(
        0.1, "Per-feature drift distance threshold", exclusive_minimum=0, exclusive_maximum=1
    )

    def __post_init__(self) -> None:
        check_bounds(self, PolicyError)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "retrain" if self.retrain else "keep"

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons)


def decide(
    policy: MonitoringPolicy,
    drifted_features: list[str],
    n_features: int,
    rmse_reference: float,
    rmse_current: float,
) -> RetrainDecision:
    """Retrain when the error grew past the margin or too many features drifted; say why either way."""
    if n_features <= 0:
        raise PolicyError("the model has no features to judge drift on")
    if not rmse_reference > 0:
        raise PolicyError(f"the reference RMSE must be positive, got {rmse_reference}")
    share = len(drifted_features) / n_features
    increase = rmse_current / rmse_reference - 1.0
    reasons, retrain = [], False
    if increase > policy.max_rmse_increase:
        retrain = True
        reasons.append(
            f"RMSE rose {increase:+.1%} ({rmse_reference:.1f} -> {rmse_current:.1f} lb), "
            f"more than the {policy.max_rmse_increase:.0%} allowed"
        )
    else:
        reasons.append(
            f"RMSE {increase:+.1%} ({rmse_reference:.1f} -> {rmse_current:.1f} lb), "
            f"within the {policy.max_rmse_increase:.0%} allowed"
        )
    named = ", ".join(drifted_features[:5]) + (" ..." if len(drifted_features) > 5 else "")
    if share >= policy.max_drift_share:
        retrain = True
        reasons.append(
            f"{len(drifted_features)}/{n_features} features drifted ({named}), "
            f"at or above the {policy.max_drift_share:.0%} share allowed"
        )
    else:
        reasons.append(
            f"{len(drifted_features)}/{n_features} features drifted" + (f" ({named})" if drifted_features else "")
            + f", below the {policy.max_drift_share:.0%} share that triggers retraining"
        )
    return RetrainDecision(retrain=retrain, reasons=reasons)


@dataclass(frozen=True)
class RollbackPolicy:
    """When live traffic says ``@champion`` must go back to the champion before it.

    Args:
        max_live_rmse_increase: roll back when the champion's live RMSE (on requests whose labels
            have arrived) is worse than its own test RMSE by more than this fraction, with the
            lower end of its bootstrap interval above that bound too (0.2 = +20%).
        max_error_rate: roll back when at least this share of the requests the champion answered
            ended in a server error (5xx).
        min_labeled: fewest labelled live predictions the error rule needs.
        min_requests: fewest requests the error-rate rule needs.
        cooldown_hours: no automated rollback within this many hours of the last one (it never
            flaps: a second bad sign right after a rollback waits for a person or the next window).

    The defaults and bounds are also the monitoring DAG's Params.
    """

    max_live_rmse_increase: float = bounded(
        0.2, "Rollback above this live-over-test RMSE increase (interval clear)", exclusive_minimum=0, maximum=10
    )
    max_error_rate: float = bounded(0.05, "Rollback at this share of 5xx answers", exclusive_minimum=0, maximum=1)
    min_labeled: int = bounded(30, "Rollback: fewest labelled live predictions", minimum=2, maximum=1_000_000, kind="integer")
    min_requests: int = bounded(50, "Rollback: fewest requests for the error rate", minimum=1, maximum=1_000_000, kind="integer")
    cooldown_hours: float = bounded(6.0, "Rollback: hours between two automated rollbacks", minimum=0, maximum=720)

    def __post_init__(self) -> None:
        check_bounds(self, PolicyError)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class RollbackDecision:
    rollback: bool
    reasons: list[str] = field(default_factory=list)
    blocked: str = ""  # why a rollback the evidence asks for is not done (cool-down, no previous champion)

    @property
    def label(self) -> str:
        if self.rollback:
            return "rollback"
        return "rollback_blocked" if self.blocked else "keep"

    @property
    def summary(self) -> str:
        return "; ".join([*self.reasons, *([self.blocked] if self.blocked else [])])


def decide_rollback(
    policy: RollbackPolicy,
    *,
    test_rmse: float | None,
    live: dict[str, float] | None,
    requests: int,
    server_errors: int,
    previous_champion: str | None,
    hours_since_last_rollback: float | None,
) -> RollbackDecision:
    """The rollback rule on what live traffic showed of the current champion.

    ``live``: its live ``rmse`` with the bootstrap interval (``rmse_low``/``rmse_high``) and the
    ``rows`` labelled, or None when no label has arrived. Pure: numbers in, a decision out.
    """
    reasons, bad = [], False
    if live is None or live["rows"] < policy.min_labeled:
        rows = 0 if live is None else int(live["rows"])
        reasons.append(f"{rows} labelled live predictions, fewer than the {policy.min_labeled} the error rule needs")
    elif test_rmse is None or not test_rmse > 0:
        reasons.append("the champion has no test RMSE to compare its live error with")
    else:
        bound = test_rmse * (1.0 + policy.max_live_rmse_increase)
        said = (
            f"live RMSE {live['rmse']:.1f} lb on {int(live['rows'])} labelled predictions "
            f"(95% CI {live['rmse_low']:.1f} to {live['rmse_high']:.1f}) against its test RMSE {test_rmse:.1f} lb"
        )
        if live["rmse_low"] > bound:
            bad = True
            reasons.append(f"{said}: the whole interval is above {bound:.1f} (+{policy.max_live_rmse_increase:.0%})")
        else:
            reasons.append(f"{said}: not clearly above {bound:.1f} (+{policy.max_live_rmse_increase:.0%})")
    if requests < policy.min_requests:
        reasons.append(f"{requests} requests, fewer than the {policy.min_requests} the error-rate rule needs")
    else:
        rate = server_errors / requests
        if rate >= policy.max_error_rate:
            bad = True
            reasons.append(f"{server_errors}/{requests} requests ended in a server error ({rate:.1%} >= {policy.max_error_rate:.1%})")
        else:
            reasons.append(f"{server_errors}/{requests} server errors ({rate:.1%} < {policy.max_error_rate:.1%})")
    if not bad:
        return RollbackDecision(False, reasons)
    if not previous_champion:
        return RollbackDecision(False, reasons, "no rollback: this is the first champion, there is no previous one")
    if hours_since_last_rollback is not None and hours_since_last_rollback < policy.cooldown_hours:
        return RollbackDecision(
            False, reasons,
            f"no rollback: the last one was {hours_since_last_rollback:.1f} h ago, within the {policy.cooldown_hours:g} h cool-down",
        )  # fmt: skip
    return RollbackDecision(True, reasons)
