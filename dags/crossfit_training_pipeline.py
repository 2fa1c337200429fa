"""
### crossfit_training_pipeline

Trains models that predict an athlete's **total lift** (clean and jerk + snatch + deadlift + back
squat) and promotes the best one through a champion/challenger gate.

1. **ingest_snapshot** makes the raw snapshot exist (a provided `athletes.csv`, or generated).
2. **validate_snapshot** checks it against the raw contract (rejected rows are quarantined with
   their reason) and cleans it.
3. **engineer_features** writes the V1 (5) and V2 (34) feature tables, in parallel.
4. **apply_feature_store** registers the Feast definitions (idempotent; nobody needs to run
   `feast apply` by hand). **materialize_online_store** loads the online store for serving.
5. **build_training_set** reads the labels' features point-in-time through each version's
   FeatureService and splits by athlete (70/15/15, stable hash).
6. **train_candidate** (dynamic task mapping, one task per grid entry) trains one model in an MLflow
   child run with CodeCarbon emissions, plots, the model and its datasets.
7. **register_challenger** takes the best run on validation, registers it as a new version of the
   model with alias `@challenger` and logs the leaderboard on the parent run.
8. **judge_challenger** compares challenger and champion on the same untouched test set;
   **gate** branches to **promote_challenger** (alias `@champion`) or **keep_champion** (the
   challenger stays registered, tagged rejected with the reason).

Parameters (trigger form): snapshot, rows, seed, sample size, the grid, the gate's thresholds.
Where to look: MLflow UI -> experiment `crossfit_athlete_airflow_run`, parent run named after this
DAG run; Models -> `crossfit_total_lift`.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.sdk import Param, dag, get_current_context, task

from crossfit_mlops.contract import (
    APPROVAL_MODES,
    APPROVE,
    CHAMPION_MODEL,
    DAG_RUN_TIMEOUT,
    MAX_GENERATED_ROWS,
    ONLINE_FEATURES,
    REJECT,
    SERVER_RETRIES,
    TRAINING_DAG,
    TRAINING_QUEUE,
    approval_timeout,
    param_schemas,
    rows_schema,
    snapshot_schema,
    timeout,
)
from crossfit_mlops.contract import TrainingTasks as T
from crossfit_mlops.data.vocabulary import FULL_SIZE
from crossfit_mlops.features.specs import FEATURE_SETS
from crossfit_mlops.registry.gate import GatePolicy
from crossfit_mlops.settings import task_settings
from crossfit_mlops.training.grid import DEFAULT_GRID, MAX_GRID_ENTRIES
from crossfit_mlops.training.run_request import MAX_SEED

VERSIONS = list(FEATURE_SETS)
# CPU niceness of the compute-heavy task processes (0 = normal priority, 19 = idle only). The
# parallel training tasks saturate every core of a small machine; the MLflow server and Airflow's
# API (which the tasks call, and the UIs use) answer promptly only if they get the CPU first.
# materialize_online_store is off the training path and runs beside the fan-out: at 19 it takes only
# the CPU the training tasks leave (at 10 it took about a fifth of the 2 cores from them; full-size
# trigger -> gate 59.5 s before, 44.6 s after, with the slot fix of the Airflow services, 2026-12-02).
TRAINING_NICENESS = 5
MATERIALIZE_NICENESS = 19
ONLINE_FEATURES_ASSET = ONLINE_FEATURES.as_asset()
CHAMPION_MODEL_ASSET = CHAMPION_MODEL.as_asset()

PARAMS = {
    "snapshot": Param(**snapshot_schema("ISO date of the raw snapshot; empty = the DAG run's date (UTC).")),
    "rows": Param(
        **rows_schema(FULL_SIZE, "Used only when the snapshot does not exist yet and no athletes.csv is provided.")
    ),
    "seed": Param(42, type="integer", minimum=0, maximum=MAX_SEED, title="Generator and sampling seed"),
    "sample_size": Param(
        0,
        type="integer",
        minimum=0,
        maximum=MAX_GENERATED_ROWS,
        title="Athletes to train on",
        description="0 = every clean athlete; otherwise a deterministic sample of that many.",
    ),
    # items of type object: the trigger form shows a JSON editor (a plain array is a one-string-per-
    # line box, which renders these entries as "[object Object]")
    "grid": Param(
        DEFAULT_GRID,
        type="array",
        items={"type": "object"},
        minItems=1,
        maxItems=MAX_GRID_ENTRIES,
        title="Training grid",
        description="One task per entry: {model: random_forest|lightgbm, feature_version: v1|v2, params: {...}}.",
    ),
    "cv_folds": Param(
        0,
        type="integer",
        minimum=0,
        maximum=10,
        title="Cross-validation folds of the chosen configuration",
        description="0 = off; k >= 2: a k-fold report (by athlete, on train + validation) on the parent run.",
    ),
    "approval": Param(
        "automatic",
        type="string",
        enum=list(APPROVAL_MODES),
        title="Gate mode",
        description="automatic: the gate promotes; human: a challenger the gate passes waits for a person to "
        "Approve or Reject it in the Airflow UI (Required actions), and is rejected when nobody answers in time.",
    ),
    # the gate's thresholds: defaults and bounds come from GatePolicy
    **{name: Param(**schema) for name, schema in param_schemas(GatePolicy).items()},
    "codecarbon_country": Param(
        None,
        type=["null", "string"],
        title="CodeCarbon country (ISO 3166 alpha-3)",
        description="Empty = CROSSFIT_CODECARBON_COUNTRY (default USA).",
    ),
}


def _lineage_tags(run: dict[str, Any]) -> dict[str, str]:
    ti = get_current_context()["ti"]
    return {
        **run["tags"],
        "airflow.task_id": ti.task_id,
        "airflow.map_index": str(ti.map_index),
        "airflow.try_number": str(ti.try_number),
    }


def _actor(run: dict[str, Any]) -> str:
    """Who moves an alias in this run: ``airflow:<dag id>/<run id>`` (the alias history records it)."""
    return f"airflow:{run['tags']['airflow.dag_id']}/{run['tags']['airflow.run_id']}"


class ApprovalBranch(HITLBranchOperator):
    """Airflow's human-in-the-loop branch (Approve / Reject), keeping who answered, when, and
    whether the timeout answered instead (XCom key ``approval``) for the history and the card."""

    def execute_complete(self, context, event):
        user = event.get("responded_by_user")  # {"id": ..., "name": ...}; None when the timeout answered
        answer = {
            "chosen": list(event.get("chosen_options") or []),
            "by": user.get("name") or user.get("id") if isinstance(user, dict) else user,
            "at": str(event.get("responded_at")),
            "timed_out": bool(event.get("timedout")),
        }
        context["ti"].xcom_push(key="approval", value=answer)
        return super().execute_complete(context=context, event=event)


def _fail_parent_run(context) -> None:
    """on_failure_callback: mark the DAG run's MLflow parent run FAILED, so it never looks running.
    Found by the id start_mlflow_run recorded or, when there is none (start_mlflow_run itself
    failed after creating it), by the parent's ``airflow.run_id`` tag."""
    try:
        from crossfit_mlops.tracking.runs import fail_parent_runs, finish_run

        parent = context["ti"].xcom_pull(task_ids=T.START_MLFLOW_RUN)
        if parent:
            finish_run(parent["tracking_uri"], parent["parent_run_id"], status="FAILED")
            return
        settings = task_settings()
        fail_parent_runs(settings.mlflow_tracking_uri, settings.mlflow_experiment, context["dag_run"].run_id, TRAINING_DAG)
    except Exception:  # a callback must never hide the task's own error
        import logging

        logging.getLogger(__name__).exception("could not mark the MLflow parent run failed")


@task(task_id=T.RESOLVE_RUN, **timeout("quick"))
def resolve_run() -> dict[str, Any]:
    """Fix this run's plain inputs once: snapshot id, sizes, grid, gate policy, lineage tags."""
    from crossfit_mlops.storage import check_snapshot_id
    from crossfit_mlops.tracking.runs import code_version, git_commit
    from crossfit_mlops.training.run_request import checked_inputs

    context = get_current_context()
    params, dag_run = context["params"], context["dag_run"]
    when = dag_run.logical_date or dag_run.run_after
    settings = task_settings()
    return {
        "snapshot_id": check_snapshot_id(params["snapshot"] or when.strftime("%Y-%m-%d")),
        # the DAG's declared params: conf keys are merged into the run's params, typos included
        **checked_inputs(dag_run.conf or {}, dict(params), set(context["dag"].params), settings.codecarbon_country),
        "approval": params["approval"],
        "policy": GatePolicy(**{name: params[name] for name in param_schemas(GatePolicy)}).as_dict(),
        "tags": {
            "airflow.dag_id": dag_run.dag_id,
            "airflow.run_id": dag_run.run_id,
            "git_commit": git_commit(settings.project_root),
            "code_version": code_version(),
        },
    }


@task(task_id=T.START_MLFLOW_RUN, **SERVER_RETRIES, **timeout("quick"))
def start_mlflow_run(run: dict[str, Any]) -> dict[str, str]:
    """Create the experiment (once, before the fan-out) and this DAG run's parent run."""
    from crossfit_mlops.tracking.runs import ensure_experiment, start_parent_run

    settings = task_settings()
    experiment_id = ensure_experiment(settings.mlflow_tracking_uri, settings.mlflow_experiment)
    tags = {**run["tags"], "snapshot_id": run["snapshot_id"], "pipeline": TRAINING_DAG}
    parent = start_parent_run(settings.mlflow_tracking_uri, experiment_id, run["tags"]["airflow.run_id"], tags)
    return {"tracking_uri": settings.mlflow_tracking_uri, "experiment_id": experiment_id, "parent_run_id": parent}


@task(task_id=T.INGEST, **timeout("data"))
def ingest_snapshot(run: dict[str, Any]) -> dict[str, Any]:
    """Raw snapshot: reuse it, copy the provided file, or generate it (immutable once written)."""
    from crossfit_mlops.data.ingest import ingest_snapshot as ingest

    return ingest(run["snapshot_id"], rows=run["rows"], seed=run["seed"], settings=task_settings()).as_dict()


@task(task_id=T.VALIDATE, **timeout("data"))
def validate_snapshot(raw: dict[str, Any]) -> dict[str, Any]:
    """Raw contract + cleaning. Fails (no clean data published) below the valid-share floor."""
    from dataclasses import asdict

    from crossfit_mlops.data.validate import validate_and_clean

    return asdict(validate_and_clean(raw["snapshot_id"], settings=task_settings()))


@task(task_id=T.ENGINEER, **timeout("data"))
def engineer_features(cleaned: dict[str, Any], version: str) -> str:
    """One feature version's table: the offline source of its Feast feature view."""
    from crossfit_mlops.features.build import build_feature_table

    return build_feature_table(cleaned["snapshot_id"], version, settings=task_settings())


@task(task_id=T.APPLY_FEATURE_STORE, **SERVER_RETRIES, **timeout("quick"))
def apply_feature_store(tables: list[str]) -> list[str]:
    """`feast apply` from code: entity, sources, views, FeatureServices (idempotent)."""
    from crossfit_mlops.features.store import apply_definitions

    return apply_definitions(settings=task_settings())


@task(task_id=T.MATERIALIZE, outlets=[ONLINE_FEATURES_ASSET], **SERVER_RETRIES, **timeout("materialize"))
def materialize_online_store(run: dict[str, Any], applied: list[str]) -> str:
    """Load each athlete's newest features up to the snapshot into the online store; updates the
    Asset `crossfit_online_features` (with the snapshot id), which schedules batch inference."""
    from crossfit_mlops.features.store import materialize_snapshot
    from crossfit_mlops.ops.priority import lower_cpu_priority
    from crossfit_mlops.storage import snapshot_time

    lower_cpu_priority(MATERIALIZE_NICENESS)
    materialize_snapshot(snapshot_time(run["snapshot_id"]), settings=task_settings())
    get_current_context()["outlet_events"][ONLINE_FEATURES_ASSET].extra = {"snapshot_id": run["snapshot_id"]}
    return run["snapshot_id"]


@task(task_id=T.BUILD_TRAINING_SET, **SERVER_RETRIES, **timeout("data"))
def build_training_set(run: dict[str, Any], applied: list[str], version: str) -> dict[str, Any]:
    """Point-in-time features for the labels via the FeatureService, split by athlete."""
    from crossfit_mlops.features.training_sets import build_training_set as build

    return build(run["snapshot_id"], version, run["sample_size"], run["seed"], settings=task_settings()).as_dict()


@task(task_id=T.PLAN, **timeout("quick"))
def plan_training(run: dict[str, Any], training_sets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One job per grid entry, each with the training set of its feature version, slowest first
    (the mapped tasks start in this order, and the slowest one bounds the fan-out's wall time)."""
    from crossfit_mlops.training.grid import plan_jobs

    return plan_jobs(run["grid"], training_sets)


@task(task_id=T.TRAIN, queue=TRAINING_QUEUE, map_index_template="{{ run_label }}", **SERVER_RETRIES, **timeout("train"))
def train_candidate(job: dict[str, Any], run: dict[str, Any], parent: dict[str, str]) -> dict[str, Any]:
    """One grid entry -> one MLflow child run (metrics, emissions, plots, model, datasets)."""
    from crossfit_mlops.ops.priority import lower_cpu_priority
    from crossfit_mlops.training.train import RunContext
    from crossfit_mlops.training.train import train_candidate as train

    get_current_context()["run_label"] = job["config"]["name"]
    lower_cpu_priority(TRAINING_NICENESS)
    settings = task_settings()
    ctx = RunContext(
        tracking_uri=parent["tracking_uri"],
        experiment_id=parent["experiment_id"],
        parent_run_id=parent["parent_run_id"],
        emissions_dir=str(settings.emissions_dir / parent["parent_run_id"]),
        country_iso_code=run["country"],
        tags=_lineage_tags(run),
    )
    return train(job["config"], job["training_set"], ctx)


@task(task_id=T.REGISTER, **SERVER_RETRIES, **timeout("quick"))
def register_challenger(results: list[dict[str, Any]], run: dict[str, Any], parent: dict[str, str]) -> dict[str, Any]:
    """Best run on validation -> new model version with @challenger; leaderboard on the parent run."""
    from crossfit_mlops.features.store import get_store
    from crossfit_mlops.registry.lineage import tag_lineage
    from crossfit_mlops.registry.promotion import register_challenger as register
    from crossfit_mlops.registry.promotion import registration_key
    from crossfit_mlops.training.leaderboard import log_leaderboard, select_best

    results = list(results)
    log_leaderboard(parent["tracking_uri"], parent["parent_run_id"], results)
    best = select_best(results, energy_tolerance=run["policy"]["energy_tolerance"])
    key = registration_key(best["training_set"], run["grid"], run["tags"]["code_version"])
    settings = task_settings()
    version = register(parent["tracking_uri"], settings.registered_model_name, best, run["tags"], key=key, actor=_actor(run))
    tag_lineage(parent["tracking_uri"], settings.registered_model_name, version, best["feature_version"], get_store(settings))
    if run["cv_folds"]:
        from crossfit_mlops.training.cross_validation import log_cross_validation

        log_cross_validation(parent["tracking_uri"], parent["parent_run_id"], best, run["cv_folds"])
    return {"version": version, "run_id": best["run_id"], "run_name": best["run_name"], "selection": best["selection"]}


@task(task_id=T.JUDGE, **SERVER_RETRIES, **timeout("quick"))
def judge_challenger(
    challenger: dict[str, Any], training_sets: list[dict[str, Any]], run: dict[str, Any], parent: dict[str, str]
) -> dict[str, Any]:
    """Challenger vs champion on the same untouched test athletes; the decision is tagged on the version."""
    from crossfit_mlops.registry.promotion import judge_challenger as judge

    return judge(
        parent["tracking_uri"],
        task_settings().registered_model_name,
        challenger["version"],
        {ts["feature_version"]: ts for ts in training_sets},
        GatePolicy(**run["policy"]),
        tags={"gate.airflow_run_id": run["tags"]["airflow.run_id"]},
        selection=challenger["selection"],
    )


@task.branch(task_id=T.GATE, **timeout("quick"))
def gate(decision: dict[str, Any], run: dict[str, Any]) -> str:
    """Promote, keep, or (gate mode "human") ask a person: the branch taken is the decision."""
    if not decision["promote"]:
        return T.KEEP
    return T.AWAIT_APPROVAL if run["approval"] == "human" else T.PROMOTE


@task(task_id=T.PROMOTE, outlets=[CHAMPION_MODEL_ASSET], **SERVER_RETRIES, **timeout("quick"))
def promote_challenger(decision: dict[str, Any], parent: dict[str, str], run: dict[str, Any]) -> dict[str, Any]:
    """Move @champion to the challenger; the previous champion is tagged archived. Updates the
    Asset `crossfit_champion_model`, which schedules batch inference with the new champion."""
    from crossfit_mlops.registry.promotion import promote

    version = decision["challenger"]["version"]
    judged_against = decision["champion"]["version"] if decision["champion"] else None
    previous = promote(
        parent["tracking_uri"], decision["model_name"], version, expected_champion=judged_against,
        actor=_actor(run), reason=decision["reason"],
    )  # fmt: skip
    get_current_context()["outlet_events"][CHAMPION_MODEL_ASSET].extra = {"model_version": str(version)}
    return {**decision, "previous_champion": previous}


@task(task_id=T.KEEP, **SERVER_RETRIES, **timeout("quick"))
def keep_champion(decision: dict[str, Any], parent: dict[str, str], run: dict[str, Any]) -> dict[str, Any]:
    """The challenger stays registered, visibly rejected; @champion does not move."""
    import logging

    from crossfit_mlops.registry.promotion import mark_rejected

    mark_rejected(parent["tracking_uri"], decision["model_name"], decision, actor=_actor(run))
    logging.getLogger(__name__).warning("challenger v%s not promoted: %s", decision["challenger"]["version"], decision["reason"])
    return decision


@task(task_id=T.PROMOTE_APPROVED, outlets=[CHAMPION_MODEL_ASSET], **SERVER_RETRIES, **timeout("quick"))
def promote_approved(decision: dict[str, Any]) -> dict[str, Any]:
    """A person approved the challenger: @champion moves, recorded as their approval."""
    from crossfit_mlops.registry.promotion import settle_approval

    answer = get_current_context()["ti"].xcom_pull(task_ids=T.AWAIT_APPROVAL, key="approval")
    outcome = settle_approval(task_settings().mlflow_tracking_uri, decision["model_name"], decision, answer)
    get_current_context()["outlet_events"][CHAMPION_MODEL_ASSET].extra = {"model_version": decision["challenger"]["version"]}
    return outcome


@task(task_id=T.RECORD_REJECTION, **SERVER_RETRIES, **timeout("quick"))
def record_rejection(decision: dict[str, Any]) -> dict[str, Any]:
    """A person rejected the challenger, or nobody answered in time: it is rejected, and says so."""
    from crossfit_mlops.registry.promotion import settle_approval

    answer = get_current_context()["ti"].xcom_pull(task_ids=T.AWAIT_APPROVAL, key="approval")
    return settle_approval(task_settings().mlflow_tracking_uri, decision["model_name"], decision, answer)


@task(task_id=T.FINISH, trigger_rule="none_failed_min_one_success", **SERVER_RETRIES, **timeout("quick"))
def finish_mlflow_run(decision: dict[str, Any], parent: dict[str, str]) -> dict[str, Any]:
    """Record the outcome (the gate's, or the person's) on the parent run and close it."""
    from crossfit_mlops.tracking.runs import close_parent_run

    outcomes = get_current_context()["ti"].xcom_pull(task_ids=[T.PROMOTE, T.KEEP, T.PROMOTE_APPROVED, T.RECORD_REJECTION])
    final = next((o for o in outcomes if o), decision)
    return close_parent_run(parent["tracking_uri"], parent["parent_run_id"], final)


def await_approval() -> ApprovalBranch:
    """Gate mode "human": the challenger waits in the Airflow UI for Approve or Reject."""
    judged = f"ti.xcom_pull(task_ids='{T.JUDGE}')"
    return ApprovalBranch(
        task_id=T.AWAIT_APPROVAL,
        subject=f"Promote {{{{ {judged}['model_name'] }}}} v{{{{ {judged}['challenger']['version'] }}}} to @champion?",
        body=(
            f"The gate passed it: {{{{ {judged}['reason'] }}}}\n\n"
            f"Model card: `{{{{ {judged}['model_card'] }}}}` (MLflow, the version's run, `model_card/card.html`).\n\n"
            "Approve moves @champion; Reject keeps the current champion. Without an answer it is rejected."
        ),
        options=[APPROVE, REJECT],
        options_mapping={APPROVE: T.PROMOTE_APPROVED, REJECT: T.RECORD_REJECTION},
        defaults=[REJECT],
        response_timeout=approval_timeout(),
        **timeout("quick"),  # the execution phase before the wait; the wait itself is response_timeout
        doc_md="A person approves or rejects the challenger the gate passed (gate mode `human`).",
    )


@dag(
    dag_id=TRAINING_DAG,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=DAG_RUN_TIMEOUT,
    doc_md=__doc__,
    tags=["crossfit", "training", "mlflow", "feast"],
    default_args={"owner": "crossfit-mlops", "retries": 0, "on_failure_callback": _fail_parent_run},
    params=PARAMS,
)
def crossfit_training_pipeline():
    run = resolve_run()
    parent = start_mlflow_run(run)
    # the data steps start once the parent run exists: a data step that fails then always finds
    # the parent's id, and no parent is created after the run has already failed (left RUNNING)
    raw = ingest_snapshot(run)
    parent >> raw
    cleaned = validate_snapshot(raw)
    tables = engineer_features.partial(cleaned=cleaned).expand(version=VERSIONS)
    applied = apply_feature_store(tables)
    materialize_online_store(run, applied)
    training_sets = build_training_set.partial(run=run, applied=applied).expand(version=VERSIONS)
    results = train_candidate.partial(run=run, parent=parent).expand(job=plan_training(run, training_sets))
    decision = judge_challenger(register_challenger(results, run, parent), training_sets, run, parent)
    approval = await_approval()
    outcomes = [promote_challenger(decision, parent, run), keep_champion(decision, parent, run)]
    approved = [promote_approved(decision), record_rejection(decision)]
    gate(decision, run) >> [*outcomes, approval]
    approval >> approved
    [*outcomes, *approved] >> finish_mlflow_run(decision, parent)


crossfit_training_pipeline()
