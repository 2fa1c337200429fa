"""The champion/challenger rule: pure, numbers in, a decision with its reason out.

A challenger is rejected when its test R² is below the floor, or at or above the leakage ceiling
(an R² near 1 on this problem means a lift leaked into the features); with no champion it is
promoted. Otherwise both models predict the same test athletes, and the challenger must lower the
RMSE by more than the margin with confidence: the lower end of the bootstrap interval of the paired
improvement (resampling athletes, the same ones for both models) must clear ``min_improvement``.
On data like these a test R² moves by about +-0.01 with the choice of split alone, so a point
estimate a fraction of a percent better is noise, and is not promoted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from crossfit_mlops.dag_contract import bounded, check_bounds


@dataclass(frozen=True)
class GatePolicy:
    """The gate's thresholds. Their defaults and bounds are also the training DAG's Params."""

    # the challenger's test RMSE must be <= the champion's x (1 - this)
    min_improvement: float = bounded(
        0.005, "Gate: relative test-RMSE margin over the champion", minimum=0, exclusive_maximum=1
    )
    r2_floor: float = bounded(0.5, "Gate: minimum test R²", minimum=-1, exclusive_maximum=1)
    r2_ceiling: float = bounded(0.98, "Gate: leakage ceiling on test R²", exclusive_minimum=0, maximum=1)
    confidence: float = bounded(
        0.95, "Gate: confidence of the improvement's bootstrap interval", minimum=0.5, exclusive_maximum=1
    )
    bootstrap_samples: int = bounded(
        1000, "Gate: bootstrap resamples of the test athletes", minimum=100, maximum=20000, kind="integer"
    )
    # among candidates whose validation RMSE is within this share of the best, the one that used the
    # least energy to train is the challenger (0 = the lowest validation RMSE, whatever it cost)
    energy_tolerance: float = bounded(
        0.01, "Choice: validation-RMSE tolerance within which the cheapest in energy wins", minimum=0, maximum=0.2
    )

    def __post_init__(self) -> None:
        check_bounds(self, ValueError)
        if not self.r2_floor < self.r2_ceiling:
            raise ValueError(f"need r2_floor < r2_ceiling, got {self.r2_floor} and {self.r2_ceiling}")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str

    @property
    def label(self) -> str:
        return "promoted" if self.promote else "rejected"


def decide(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    policy: GatePolicy,
    paired: dict[str, float] | None = None,
    shadow: dict[str, float] | None = None,
) -> Decision:
    """Pure gate rule on test metrics (``rmse``, ``r2``) of the challenger and the current champion.

    ``paired``: :func:`crossfit_mlops.metrics.paired_improvement` of the challenger over the
    champion on the same athletes. With it the decision is on the interval's lower end; without it
    (a caller that has only the two RMSEs) on the point estimates.

    ``shadow``: what live monitoring measured of this challenger in the shadow of the current
    champion (``improvement``, ``improvement_low``/``_high``, ``rows``; the ``shadow.*`` tags). A
    challenger clearly worse than the champion on live traffic (the whole interval below 0) is
    rejected whatever the test split says; otherwise the evidence is quoted in the reason.
    """
    decision = _decide_offline(challenger, champion, policy, paired)
    if shadow is None or champion is None or not decision.promote:
        return decision
    said = (
        f"on live traffic in the champion's shadow: improvement {shadow['improvement']:+.2%} "
        f"(CI {shadow['improvement_low']:+.2%} to {shadow['improvement_high']:+.2%}) on {int(shadow['rows'])} labelled requests"
    )
    if shadow["improvement_high"] < 0:
        return Decision(False, f"{decision.reason}; but {said}: clearly worse than the champion, not promoted")
    return Decision(True, f"{decision.reason}; {said}")


def _decide_offline(
    challenger: dict[str, float], champion: dict[str, float] | None, policy: GatePolicy, paired: dict[str, float] | None
) -> Decision:
    r2, rmse = challenger["r2"], challenger["rmse"]
    if r2 >= policy.r2_ceiling:
        return Decision(False, f"test R² {r2:.4f} >= leakage ceiling {policy.r2_ceiling}: a lift probably leaked into the features")
    if r2 < policy.r2_floor:
        return Decision(False, f"test R² {r2:.4f} is below the floor {policy.r2_floor}")
    if champion is None:
        return Decision(True, f"no champion yet and test R² {r2:.4f} meets the floor {policy.r2_floor}")
    if paired is not None:
        return _decide_paired(paired, policy)
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


def _decide_paired(paired: dict[str, float], policy: GatePolicy) -> Decision:
    gain, low, high = paired["improvement"], paired["improvement_low"], paired["improvement_high"]
    said = (
        f"test RMSE {paired['rmse_candidate']:.2f} vs the champion's {paired['rmse_reference']:.2f} on the same "
        f"{paired['rows']} athletes: improvement {gain:+.2%} ({paired['confidence']:.0%} CI {low:+.2%} to {high:+.2%})"
    )
    if low > policy.min_improvement:
        return Decision(True, f"{said} clears the margin {policy.min_improvement:.2%}")
    if high < 0:
        return Decision(False, f"{said}: the challenger is worse, it does not beat the champion")
    return Decision(
        False, f"{said}: it does not beat the champion by the margin {policy.min_improvement:.2%}: within the noise"
    )
