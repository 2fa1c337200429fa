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
