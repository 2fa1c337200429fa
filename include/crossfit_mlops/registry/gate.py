"""The champion/challenger rule: pure, numbers in, a decision with its reason out.

A challenger is rejected when its test R² is below the floor, or at or above the leakage ceiling
(an R² near 1 on this problem means a lift leaked into the features); with no champion it is
promoted; otherwise it must beat the champion's test RMSE, measured now on the same test athletes,
by the relative margin.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from crossfit_mlops.contract import bounded, check_bounds


@dataclass(frozen=True)
class GatePolicy:
    """The gate's thresholds. Their defaults and bounds are also the training DAG's Params."""

    # the challenger's test RMSE must be <= the champion's x (1 - this)
    min_improvement: float = bounded(
        0.005, "Gate: relative test-RMSE margin over the champion", minimum=0, exclusive_maximum=1
    )
    r2_floor: float = bounded(0.5, "Gate: minimum test R²", minimum=-1, exclusive_maximum=1)
    r2_ceiling: float = bounded(0.98, "Gate: leakage ceiling on test R²", exclusive_minimum=0, maximum=1)

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
