"""The DAG contract: what the rest of the code may know about the DAGs, named once.

DAG ids, the task ids other code reads (XCom, task states), the Assets the DAGs exchange, the
retraining conf monitoring hands to the training DAG, the one retry policy of server-facing tasks,
and the bridge from policy dataclasses to DAG ``Param``s (one source for defaults and bounds).

The DAG files set these task ids explicitly (``@task(task_id=...)``) and a test checks that every
id named here exists in the parsed DAG; no other module spells a task id as a string. Nothing
heavy is imported here: DAG files, the CLI and the benchmarks import it at parse time.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

# --- DAG ids -------------------------------------------------------------------------------------
TRAINING_DAG = "crossfit_training_pipeline"
BATCH_DAG = "crossfit_batch_inference"
MONITORING_DAG = "crossfit_monitoring"
CONNECTIONS_DAG = "test_connections"


class TrainingTasks:
    """Task ids of :data:`TRAINING_DAG`, in the order of the pipeline figure."""

    RESOLVE_RUN = "resolve_run"
    START_MLFLOW_RUN = "start_mlflow_run"
    INGEST = "ingest_snapshot"
    VALIDATE = "validate_snapshot"
    ENGINEER = "engineer_features"
    APPLY_FEATURE_STORE = "apply_feature_store"
    MATERIALIZE = "materialize_online_store"
    BUILD_TRAINING_SET = "build_training_set"
    PLAN = "plan_training"
    TRAIN = "train_candidate"
    REGISTER = "register_challenger"
    JUDGE = "judge_challenger"
    GATE = "gate"
    PROMOTE = "promote_challenger"
    KEEP = "keep_champion"
    AWAIT_APPROVAL = "await_approval"  # gate mode "human": a person approves or rejects in the UI
    PROMOTE_APPROVED = "promote_approved"
    RECORD_REJECTION = "record_rejection"
    FINISH = "finish_mlflow_run"


class MonitoringTasks:
    """Task ids of :data:`MONITORING_DAG`."""

    RESOLVE_RUN = "resolve_run"
    FIND_CHAMPION = "find_champion"
    PREPARE = "prepare_snapshot"
    MEASURE = "measure_drift"
    DECIDE = "decide"
    TRIGGER_RETRAINING = "trigger_retraining"
    NO_RETRAINING = "no_retraining"
    MEASURE_LIVE = "measure_live_traffic"
    JUDGE_LIVE = "judge_live"
    ROLLBACK = "rollback_champion"
    KEEP_SERVING = "keep_serving"


class BatchTasks:
    """Task ids of :data:`BATCH_DAG`."""

    RESOLVE_SNAPSHOT = "resolve_snapshot"
    SCORE = "score_snapshot"


class ConnectionTasks:
    """Task ids of :data:`CONNECTIONS_DAG`."""

    MLFLOW = "check_mlflow"
    FEAST = "check_feast"
    POSTGRES = "check_postgres"


def task_ids(tasks: type) -> dict[str, str]:
    """``{constant name: task id}`` of one of the task classes above."""
    return {name: value for name, value in vars(tasks).items() if name.isupper()}


# --- Assets --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AssetRef:
    """An Airflow Asset by name and URI (DAG files build the ``airflow.sdk.Asset``)."""

    name: str
    uri: str
    doc: str

    def as_asset(self):
        """The ``airflow.sdk.Asset`` (imported here only when a DAG file asks for it)."""
        from airflow.sdk import Asset

        return Asset(name=self.name, uri=self.uri)


# Updated by materialize_online_store with extra {"snapshot_id": ...}: the online store now holds
# that snapshot's features. Batch inference is scheduled on it.
ONLINE_FEATURES = AssetRef(
    "crossfit_online_features", "feast://crossfit/online_store", "the online store holds a snapshot's features"
)
# Updated by promote_challenger when @champion moves: batch inference rescores with the new champion.
CHAMPION_MODEL = AssetRef(
    "crossfit_champion_model", "mlflow://registry/crossfit_total_lift/champion", "@champion moved"
)


# --- the retraining conf -------------------------------------------------------------------------
@dataclass(frozen=True)
class RetrainConf:
    """What monitoring asks the training DAG to do: retrain on ``snapshot`` with the champion's
    training sample size. ``as_conf()`` is the trigger conf; its keys are training DAG params."""

    snapshot: str
    sample_size: int = 0

    def as_conf(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot, "sample_size": int(self.sample_size)}


RETRAIN_RUN_PREFIX = "retrain__"  # run id of a training run monitoring triggered: retrain__<monitoring run id>

# The Celery queue of the training fan-out (the scale-out profile's workers listen on it; the
# LocalExecutor ignores queues, so the local stack and compose mode run the same DAG unchanged).
TRAINING_QUEUE = "training"


# --- the one retry policy of tasks that talk to a server (MLflow, the Feast registry) -----------
# Pure data steps fail fast instead: a retry would fail the same way.
SERVER_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay": timedelta(seconds=5),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=2),
}


# --- timeouts, sized from the full-size benchmark (benchmarks/results/training_pipeline.json) ------
# About 20x the slowest duration seen there on a 2-core machine, and never under 5 minutes: a hung
# task (a server that accepts connections but never answers, a deadlocked library) fails instead of
# holding its slot forever, while a slower machine or a bigger grid still has room.
TASK_TIMEOUTS: dict[str, timedelta] = {
    "quick": timedelta(minutes=5),  # bookkeeping, registry calls, gate: seconds at full size
    "data": timedelta(minutes=10),  # ingest (generation 8.9 s), validate (6.4 s), features, training sets
    "materialize": timedelta(minutes=20),  # 56.7 s at full size beside the fan-out (SQLite online store)
    "train": timedelta(minutes=20),  # the slowest fit + logging: 48.2 s (RandomForest depth 20 on V2)
    "monitor": timedelta(minutes=15),  # prepare + measure: 17.9 s and 9.3 s at full size
}
DAG_RUN_TIMEOUT = timedelta(hours=1)  # a full-size training run took 88 s from trigger to end


def timeout(kind: str) -> dict[str, timedelta]:
    """``{"execution_timeout": ...}`` for a task of ``kind`` (see :data:`TASK_TIMEOUTS`)."""
    return {"execution_timeout": TASK_TIMEOUTS[kind]}


# --- human approval -------------------------------------------------------------------------------
APPROVAL_MODES = ("automatic", "human")
APPROVE, REJECT = "Approve", "Reject"  # the options the approval task offers (Airflow's HITL form)


def approval_timeout() -> timedelta:
    """How long a challenger waits for a person before it is rejected: ``CROSSFIT_APPROVAL_TIMEOUT_S``
    (read where the DAG is parsed; default a day). A value that is not a positive number is refused."""
    from crossfit_mlops.settings import DataSettings, read_section

    return timedelta(seconds=read_section(DataSettings).approval_timeout_s)


# --- policy dataclasses -> DAG Params -------------------------------------------------------------
@dataclass(frozen=True)
class Bound:
    """A policy field's label and range: the dataclass checks it, the DAG's Param shows it."""

    title: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    kind: str = "number"  # the JSON-schema type: "number" | "integer"

    def violation(self, value: Any) -> str | None:
        """Why ``value`` is out of range (NaN and non-numbers always are), or None."""
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            return f"must be a number, got {value!r}"
        if self.kind == "integer" and not float(value).is_integer():
            return f"must be a whole number, got {value!r}"
        if self.minimum is not None and not value >= self.minimum:
            return f"must be >= {self.minimum}, got {value}"
        if self.maximum is not None and not value <= self.maximum:
            return f"must be <= {self.maximum}, got {value}"
        if self.exclusive_minimum is not None and not value > self.exclusive_minimum:
            return f"must be > {self.exclusive_minimum}, got {value}"
        if self.exclusive_maximum is not None and not value < self.exclusive_maximum:
            return f"must be < {self.exclusive_maximum}, got {value}"
        return None

    def json_schema(self) -> dict[str, Any]:
        keys = {
            "minimum": self.minimum,
            "maximum": self.maximum,
            "exclusiveMinimum": self.exclusive_minimum,
            "exclusiveMaximum": self.exclusive_maximum,
        }
        return {"type": self.kind, "title": self.title, **{k: v for k, v in keys.items() if v is not None}}


def bounded(default: float, title: str, **limits: float) -> Any:
    """A dataclass field with a default and a :class:`Bound` (``minimum``, ``exclusive_maximum`` ...)."""
    return dataclasses.field(default=default, metadata={"bound": Bound(title, **limits)})


def check_bounds(instance: Any, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` naming the first field of a policy dataclass that is out of its bounds."""
    for f in dataclasses.fields(instance):
        bound = f.metadata.get("bound")
        problem = bound and bound.violation(getattr(instance, f.name))
        if problem:
            raise error(f"{f.name} {problem}")


def param_schemas(policy: type) -> dict[str, dict[str, Any]]:
    """``{field: {"default": ..., <JSON schema>}}`` of a policy dataclass's bounded fields: the DAG
    turns each into ``Param(**schema)``, so defaults and bounds are written once, in the policy."""
    return {
        f.name: {"default": f.default, **f.metadata["bound"].json_schema()}
        for f in dataclasses.fields(policy)
        if "bound" in f.metadata
    }


# --- Params that several DAGs share --------------------------------------------------------------
# A generated snapshot keeps about 7% of its raw rows after cleaning: 4000 raw rows give the
# CROSSFIT_MIN_CLEAN_ROWS (200) clean athletes a snapshot needs to be trained or judged on.
MIN_GENERATED_ROWS = 4000
# At most about 5x the full-size snapshot (423,006 rows: generated in 8.9 s, validated in 6.4 s on
# the 2-core machine), so that generation and validation stay well inside the data tasks' 10-minute
# timeout; 10^12 used to fail inside pandas' sampling.
MAX_GENERATED_ROWS = 2_000_000


def snapshot_schema(description: str) -> dict[str, Any]:
    """The optional ``snapshot`` Param: ``["null", "string"]`` so the trigger form leaves it optional
    (a plain ``string`` is a required field there)."""
    return {"default": None, "type": ["null", "string"], "title": "Snapshot id", "description": description}


def rows_schema(default: int | None, description: str) -> dict[str, Any]:
    """The ``rows`` Param of a generated snapshot, at least :data:`MIN_GENERATED_ROWS`."""
    kind: Any = "integer" if default is not None else ["null", "integer"]
    return {
        "default": default,
        "type": kind,
        "minimum": MIN_GENERATED_ROWS,
        "maximum": MAX_GENERATED_ROWS,
        "title": "Raw rows to generate",
        "description": description,
    }
