"""What the DAGs' tasks hand each other, typed.

XCom carries plain JSON (readable in the Airflow UI, no custom deserializer to allow); each task
converts at its boundary: ``RunSpec.from_xcom(run)`` on the way in, ``.to_xcom()`` on the way out.
A missing or unknown key is a ``TypeError`` at that boundary, not a ``KeyError`` deep in a task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, Self


class _Payload:
    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_xcom(cls, value: Mapping[str, Any]) -> Self:
        unknown = set(value) - {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = required - set(value)
        if unknown or missing:
            raise TypeError(f"{cls.__name__} from XCom: unknown keys {sorted(unknown)}, missing {sorted(missing)}")
        return cls(**value)


@dataclass(frozen=True)
class RunSpec(_Payload):
    """The run's inputs, fixed once by ``resolve_run`` and checked there."""

    snapshot_id: str
    rows: int
    seed: int
    sample_size: int
    cv_folds: int
    grid: list[dict[str, Any]]
    country: str  # CodeCarbon's ISO alpha-3 code
    approval: str  # gate mode: automatic | human
    policy: dict[str, Any]  # GatePolicy.as_dict()
    tags: dict[str, str]  # lineage: airflow.dag_id, airflow.run_id, git_commit, code_version
    min_successful_candidates: int = 1  # fewer trained candidates fail the run

    @property
    def run_id(self) -> str:
        return self.tags["airflow.run_id"]

    @property
    def code_version(self) -> str:
        return self.tags["code_version"]

    @property
    def actor(self) -> str:
        """Who moves an alias in this run: ``airflow:<dag id>/<run id>`` (the alias history records it)."""
        return f"airflow:{self.tags['airflow.dag_id']}/{self.run_id}"


@dataclass(frozen=True)
class ParentRun(_Payload):
    """The DAG run's MLflow parent run, and the one tracking URI every later task uses."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str


@dataclass(frozen=True)
class Challenger(_Payload):
    """The registered challenger: its model version, the run it came from, why it was chosen."""

    version: str
    run_id: str
    run_name: str
    selection: str


@dataclass(frozen=True)
class Verdict(_Payload):
    """The gate's decision on the challenger (also the record the registry's tags and card use)."""

    model_name: str
    decision: str
    promote: bool
    reason: str
    challenger: dict[str, Any]  # its test evaluation (version, rmse, r2, interval ...)
    champion: dict[str, Any] | None  # the champion's, on the same athletes; None without one
    policy: dict[str, Any]
    decided_at: str
    paired: dict[str, Any] | None = None  # the paired bootstrap of the improvement
    model_card: str | None = None

    @property
    def challenger_version(self) -> str:
        return str(self.challenger["version"])

    @property
    def champion_version(self) -> str | None:
        return str(self.champion["version"]) if self.champion else None


@dataclass(frozen=True)
class MonitoringRun(_Payload):
    """The monitoring run's inputs, fixed once by its ``resolve_run``."""

    snapshot_id: str
    rows: int | None  # raw rows to generate when the snapshot does not exist yet
    seed: int
    season_shift: float
    policy: dict[str, Any]  # MonitoringPolicy.as_dict()
    retrain_allowed: bool  # the `retrain` param: off, the policy's "retrain" only logs
    tags: dict[str, str]  # airflow.dag_id, airflow.run_id
    # live traffic: measured in every run; the snapshot lane only in manual runs (a scheduled or
    # Asset-triggered run has no snapshot of its own to judge)
    snapshot_lane: bool = True
    until: str = ""  # ISO time: the end of the live window (the run's start)
    live_window_hours: float = 24.0
    rollback_policy: dict[str, Any] | None = None  # RollbackPolicy.as_dict()
    rollback_allowed: bool = True  # the `auto_rollback` param

    @property
    def run_id(self) -> str:
        return self.tags["airflow.run_id"]
