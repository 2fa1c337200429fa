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
   child run with CodeCarbon emissions, plots, the model and its datasets. A candidate that fails
   (after its retries; a fit the library refuses fails at once) does not fail the run.
7. **register_challenger** (once every training task is done) logs the leaderboard on the parent
   run, failed candidates with their error; it fails the run when fewer than
   `min_successful_candidates` trained, else registers the best run on validation as a new version
   of the model with alias `@challenger`.
8. **judge_challenger** compares challenger and champion on the same untouched test set;
   **gate** branches to **promote_challenger** (alias `@champion`) or **keep_champion** (the
   challenger stays registered, tagged rejected with the reason; alert `challenger_rejected`).

A failed run posts the alert `dag_run_failed` (both alerts only with `CROSSFIT_ALERT_WEBHOOK_URL` set).

Parameters (trigger form): snapshot, rows, seed, sample size, the grid, how many candidates must
train, the gate's thresholds.
Where to look: MLflow UI -> experiment `crossfit_athlete_airflow_run`, parent run named after this
DAG run; Models -> `crossfit_total_lift`.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.sdk import Param, dag, get_current_context, task

from crossfit_mlops.alerts import CHALLENGER_REJECTED, DAG_RUN_FAILED
from crossfit_mlops.dag_contract import (
    APPROVE,
    CHAMPION_MODEL,
    DAG_RUN_TIMEOUT,
    ONLINE_FEATURES,
    REJECT,
    SERVER_RETRIES,
    TRAINING_DAG,
    TRAINING_QUEUE,
    approval_timeout,
    param_schemas,
    timeout,
)
from crossfit_mlops.dag_contract import TrainingTasks as T
from crossfit_mlops.features.specs import FEATURE_SETS
from crossfit_mlops.ops.alert_notifier import WebhookNotifier
from crossfit_mlops.payloads import Challenger, ParentRun, RunSpec, Verdict
from crossfit_mlops.registry.gate import GatePolicy
from crossfit_mlops.settings import task_settings
from crossfit_mlops.tracking import fail_fast_when_full
from crossfit_mlops.training.run_request import training_param_schemas

VERSIONS = list(FEATURE_SETS)
# CPU niceness of the compute-heavy task processes (0 = normal priority, 19 = idle only). The
# parallel training tasks saturate every core of a small machine; the MLflow server and Airflow's
# API (which the tasks call, and the UIs use) answer promptly only if they get the CPU first.
# materialize_online_store is off the training path and runs beside the fan-out: at 19 it takes only
# the CPU the training tasks leave (the measurement: docs/benchmarks.md, "niceness 19, not 10").
TRAINING_NICENESS = 5
MATERIALIZE_NICENESS = 19
ONLINE_FEATURES_ASSET = ONLINE_FEATURES.as_asset()
CHAMPION_MODEL_ASSET = CHAMPION_MODEL.as_asset()

# the trigger form: the same bounds resolve_run checks, the gate's from GatePolicy
PARAMS = {name: Param(**schema) for name, schema in training_param_schemas(param_schemas(GatePolicy)).items()}


def _lineage_tags(run: RunSpec) -> dict[str, str]:
    ti = get_current_context()["ti"]
    return {
        **run.tags,
        "airflow.task_id": ti.task_id,
        "airflow.map_index": str(ti.map_index),
        "airflow.try_number": str(ti.try_number),
    }


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

        recorded = context["ti"].xcom_pull(task_ids=T.START_MLFLOW_RUN)
        if recorded:
            parent = ParentRun.from_xcom(recorded)
            finish_run(parent.tracking_uri, parent.parent_run_id, status="FAILED")
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
    return RunSpec(
        snapshot_id=check_snapshot_id(params["snapshot"] or when.strftime("%Y-%m-%d")),
        # the DAG's declared params: conf keys are merged into the run's params, typos included
        **checked_inputs(dag_run.conf or {}, dict(params), set(context["dag"].params), settings.codecarbon_country),
        approval=params["approval"],
        policy=GatePolicy(**{name: params[name] for name in param_schemas(GatePolicy)}).as_dict(),
        tags={
            "airflow.dag_id": dag_run.dag_id,
            "airflow.run_id": dag_run.run_id,
            "git_commit": git_commit(settings.project_root),
            "code_version": code_version(),
        },
    ).to_xcom()


@task(task_id=T.START_MLFLOW_RUN, **SERVER_RETRIES, **timeout("quick"))
@fail_fast_when_full
def start_mlflow_run(run: dict[str, Any]) -> dict[str, str]:
    """Create the experiment (once, before the fan-out) and this DAG run's parent run."""
    from crossfit_mlops.tracking.runs import ensure_experiment, start_parent_run

    spec, settings = RunSpec.from_xcom(run), task_settings()
    uri = settings.mlflow_tracking_uri  # the run's one tracking URI: later tasks take it from ParentRun
    experiment_id = ensure_experiment(uri, settings.mlflow_experiment)
    tags = {**spec.tags, "snapshot_id": spec.snapshot_id, "pipeline": TRAINING_DAG}
    return ParentRun(uri, experiment_id, start_parent_run(uri, experiment_id, spec.run_id, tags)).to_xcom()


@task(task_id=T.INGEST, **timeout("data"))
def ingest_snapshot(run: dict[str, Any]) -> dict[str, Any]:
    """Raw snapshot: reuse it, copy the provided file, or generate it (immutable once written)."""
    from crossfit_mlops.data.ingest import ingest_snapshot as ingest

    spec = RunSpec.from_xcom(run)
    return ingest(spec.snapshot_id, rows=spec.rows, seed=spec.seed, settings=task_settings()).as_dict()


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
@fail_fast_when_full
def apply_feature_store(tables: list[str]) -> list[str]:
    """`feast apply` from code: entity, sources, views, FeatureServices (idempotent)."""
    from crossfit_mlops.features.feast_repo import apply_definitions

    return apply_definitions(settings=task_settings())


@task(task_id=T.MATERIALIZE, outlets=[ONLINE_FEATURES_ASSET], **SERVER_RETRIES, **timeout("materialize"))
@fail_fast_when_full
def materialize_online_store(run: dict[str, Any], applied: list[str]) -> str:
    """Load each athlete's newest features up to the snapshot into the online store; updates the
    Asset `crossfit_online_features` (with the snapshot id), which schedules batch inference."""
    from crossfit_mlops.features.feast_repo import materialize_snapshot
    from crossfit_mlops.ops.priority import lower_cpu_priority
    from crossfit_mlops.storage import snapshot_time

    snapshot_id = RunSpec.from_xcom(run).snapshot_id
    lower_cpu_priority(MATERIALIZE_NICENESS)
    materialize_snapshot(snapshot_time(snapshot_id), settings=task_settings())
    get_current_context()["outlet_events"][ONLINE_FEATURES_ASSET].extra = {"snapshot_id": snapshot_id}
    return snapshot_id


@task(task_id=T.BUILD_TRAINING_SET, **SERVER_RETRIES, **timeout("data"))
@fail_fast_when_full
def build_training_set(run: dict[str, Any], applied: list[str], version: str) -> dict[str, Any]:
    """Point-in-time features for the labels via the FeatureService, split by athlete."""
    from crossfit_mlops.features.training_sets import build_training_set as build

    spec = RunSpec.from_xcom(run)
    return build(spec.snapshot_id, version, spec.sample_size, spec.seed, settings=task_settings()).as_dict()


@task(task_id=T.PLAN, **timeout("quick"))
def plan_training(run: dict[str, Any], training_sets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One job per grid entry, each with the training set of its feature version, slowest first
    (the mapped tasks start in this order, and the slowest one bounds the fan-out's wall time)."""
    from crossfit_mlops.training.grid import plan_jobs

    return plan_jobs(RunSpec.from_xcom(run).grid, training_sets)


# on_failure_callback=None: one failed candidate does not fail the parent run (register_challenger
# decides whether enough trained, and its own failure does)
@task(
    task_id=T.TRAIN, queue=TRAINING_QUEUE, map_index_template="{{ run_label }}", on_failure_callback=None,
    **SERVER_RETRIES, **timeout("train"),
)  # fmt: skip
@fail_fast_when_full
def train_candidate(job: dict[str, Any], run: dict[str, Any], parent: dict[str, str]) -> dict[str, Any]:
    """One grid entry -> one MLflow child run (metrics, emissions, plots, model, datasets). A fit
    the library refuses fails at once (no retry: it would fail the same way), its run tagged with the error."""
    from airflow.sdk.exceptions import AirflowFailException

    from crossfit_mlops.ops.priority import lower_cpu_priority
    from crossfit_mlops.training.fan_out import FitError
    from crossfit_mlops.training.train import RunContext
    from crossfit_mlops.training.train import train_candidate as train

    spec, mlflow_parent = RunSpec.from_xcom(run), ParentRun.from_xcom(parent)
    get_current_context()["run_label"] = job["config"]["name"]
    lower_cpu_priority(TRAINING_NICENESS)
    ctx = RunContext(
        tracking_uri=mlflow_parent.tracking_uri,
        experiment_id=mlflow_parent.experiment_id,
        parent_run_id=mlflow_parent.parent_run_id,
        emissions_dir=str(task_settings().emissions_dir / mlflow_parent.parent_run_id),
        country_iso_code=spec.country,
        tags=_lineage_tags(spec),
    )
    try:
        return train(job["config"], job["training_set"], ctx)
    except FitError as exc:
        raise AirflowFailException(str(exc)) from exc


# all_done: runs once every training task ended, trained or failed (a failed one has no XCom: the
# results hold the trained ones only)
@task(task_id=T.REGISTER, trigger_rule="all_done", **SERVER_RETRIES, **timeout("quick"))
@fail_fast_when_full
def register_challenger(results: list[dict[str, Any]], run: dict[str, Any], parent: dict[str, str]) -> dict[str, Any]:
    """The leaderboard on the parent run (failed candidates with their error); then, if at least
    `min_successful_candidates` trained, the best run on validation -> new model version with @challenger."""
    from airflow.sdk.exceptions import AirflowFailException

    from crossfit_mlops.features.feast_repo import get_store
    from crossfit_mlops.registry.lineage import tag_lineage
    from crossfit_mlops.registry.promotion import register_challenger as register
    from crossfit_mlops.registry.promotion import registration_key
    from crossfit_mlops.training.fan_out import TooFewCandidates, never_ran, outcome, require_enough
    from crossfit_mlops.training.leaderboard import log_leaderboard, select_best

    ti = get_current_context()["ti"]
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
    if reason := never_ran(states, T.TRAIN):  # all_done fires also when the fan-out never started
        raise AirflowFailException(f"nothing to register: {reason}")
    spec, mlflow_parent, settings = RunSpec.from_xcom(run), ParentRun.from_xcom(parent), task_settings()
    uri, jobs = mlflow_parent.tracking_uri, ti.xcom_pull(task_ids=T.PLAN)
    results, failed = outcome(jobs, results, states, T.TRAIN, uri, mlflow_parent.experiment_id, mlflow_parent.parent_run_id)
    log_leaderboard(uri, mlflow_parent.parent_run_id, results, [f.as_row() for f in failed])
    try:
        require_enough(len(results), failed, spec.min_successful_candidates)
    except TooFewCandidates as exc:  # the same tasks stay failed: a retry would fail the same way
        raise AirflowFailException(str(exc)) from exc
    best = select_best(results, energy_tolerance=spec.policy["energy_tolerance"])
    key = registration_key(best["training_set"], spec.grid, spec.code_version)
    version = register(uri, settings.registered_model_name, best, spec.tags, key=key, actor=spec.actor)
    tag_lineage(uri, settings.registered_model_name, version, best["feature_version"], get_store(settings))
    if spec.cv_folds:
        from crossfit_mlops.training.cross_validation import log_cross_validation

        log_cross_validation(uri, mlflow_parent.parent_run_id, best, spec.cv_folds)
    return Challenger(str(version), best["run_id"], best["run_name"], best["selection"]).to_xcom()


@task(task_id=T.JUDGE, **SERVER_RETRIES, **timeout("quick"))
@fail_fast_when_full
def judge_challenger(
    challenger: dict[str, Any], training_sets: list[dict[str, Any]], run: dict[str, Any], parent: dict[str, str]
) -> dict[str, Any]:
    """Challenger vs champion on the same untouched test athletes; the decision is tagged on the version."""
    from crossfit_mlops.registry.promotion import judge_challenger as judge

    spec, chosen = RunSpec.from_xcom(run), Challenger.from_xcom(challenger)
    verdict = judge(
        ParentRun.from_xcom(parent).tracking_uri,
        task_settings().registered_model_name,
        chosen.version,
        {ts["feature_version"]: ts for ts in training_sets},
        GatePolicy(**spec.policy),
        tags={"gate.airflow_run_id": spec.run_id},
        selection=chosen.selection,
    )
    return Verdict.from_xcom(verdict).to_xcom()


@task.branch(task_id=T.GATE, **timeout("quick"))
def gate(decision: dict[str, Any], run: dict[str, Any]) -> str:
    """Promote, keep, or (gate mode "human") ask a person: the branch taken is the decision."""
    if not Verdict.from_xcom(decision).promote:
        return T.KEEP
    return T.AWAIT_APPROVAL if RunSpec.from_xcom(run).approval == "human" else T.PROMOTE


@task(task_id=T.PROMOTE, outlets=[CHAMPION_MODEL_ASSET], **SERVER_RETRIES, **timeout("quick"))
@fail_fast_when_full
def promote_challenger(decision: dict[str, Any], parent: dict[str, str], run: dict[str, Any]) -> dict[str, Any]:
    """Move @champion to the challenger; the previous champion is tagged archived. Updates the
    Asset `crossfit_champion_model`, which schedules batch inference with the new champion."""
    from crossfit_mlops.registry.promotion import promote

    verdict = Verdict.from_xcom(decision)
    previous = promote(
        ParentRun.from_xcom(parent).tracking_uri, verdict.model_name, verdict.challenger_version,
        expected_champion=verdict.champion_version, actor=RunSpec.from_xcom(run).actor, reason=verdict.reason,
    )  # fmt: skip
    get_current_context()["outlet_events"][CHAMPION_MODEL_ASSET].extra = {"model_version": verdict.challenger_version}
    return {**verdict.to_xcom(), "previous_champion": previous}


# alert challenger_rejected (CROSSFIT_ALERT_WEBHOOK_URL) with the version and the gate's reason
@task(task_id=T.KEEP, on_success_callback=WebhookNotifier(CHALLENGER_REJECTED, result_of=T.KEEP), **SERVER_RETRIES, **timeout("quick"))
@fail_fast_when_full
def keep_champion(decision: dict[str, Any], parent: dict[str, str], run: dict[str, Any]) -> dict[str, Any]:
    """The challenger stays registered, visibly rejected; @champion does not move."""
    import logging

    from crossfit_mlops.registry.promotion import mark_rejected

    verdict = Verdict.from_xcom(decision)
    mark_rejected(ParentRun.from_xcom(parent).tracking_uri, verdict.model_name, verdict.to_xcom(), actor=RunSpec.from_xcom(run).actor)
    logging.getLogger(__name__).warning("challenger v%s not promoted: %s", verdict.challenger_version, verdict.reason)
    return verdict.to_xcom()


@task(task_id=T.PROMOTE_APPROVED, outlets=[CHAMPION_MODEL_ASSET], **SERVER_RETRIES, **timeout("quick"))
@fail_fast_when_full
def promote_approved(decision: dict[str, Any], parent: dict[str, str]) -> dict[str, Any]:
    """A person approved the challenger: @champion moves, recorded as their approval."""
    from crossfit_mlops.registry.promotion import settle_approval

    verdict = Verdict.from_xcom(decision)
    answer = get_current_context()["ti"].xcom_pull(task_ids=T.AWAIT_APPROVAL, key="approval")
    outcome = settle_approval(ParentRun.from_xcom(parent).tracking_uri, verdict.model_name, verdict.to_xcom(), answer)
    get_current_context()["outlet_events"][CHAMPION_MODEL_ASSET].extra = {"model_version": verdict.challenger_version}
    return outcome


@task(
    task_id=T.RECORD_REJECTION, on_success_callback=WebhookNotifier(CHALLENGER_REJECTED, result_of=T.RECORD_REJECTION),
    **SERVER_RETRIES, **timeout("quick"),
)  # fmt: skip
@fail_fast_when_full
def record_rejection(decision: dict[str, Any], parent: dict[str, str]) -> dict[str, Any]:
    """A person rejected the challenger, or nobody answered in time: it is rejected, and says so."""
    from crossfit_mlops.registry.promotion import settle_approval

    verdict = Verdict.from_xcom(decision)
    answer = get_current_context()["ti"].xcom_pull(task_ids=T.AWAIT_APPROVAL, key="approval")
    return settle_approval(ParentRun.from_xcom(parent).tracking_uri, verdict.model_name, verdict.to_xcom(), answer)


@task(task_id=T.FINISH, trigger_rule="none_failed_min_one_success", **SERVER_RETRIES, **timeout("quick"))
@fail_fast_when_full
def finish_mlflow_run(decision: dict[str, Any], parent: dict[str, str]) -> dict[str, Any]:
    """Record the outcome (the gate's, or the person's) on the parent run and close it."""
    from crossfit_mlops.tracking.runs import close_parent_run

    outcomes = get_current_context()["ti"].xcom_pull(task_ids=[T.PROMOTE, T.KEEP, T.PROMOTE_APPROVED, T.RECORD_REJECTION])
    final = next((o for o in outcomes if o), decision)
    mlflow_parent = ParentRun.from_xcom(parent)
    return close_parent_run(mlflow_parent.tracking_uri, mlflow_parent.parent_run_id, final)


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
    on_failure_callback=WebhookNotifier(DAG_RUN_FAILED),  # the alert (off unless CROSSFIT_ALERT_WEBHOOK_URL)
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
    approved = [promote_approved(decision, parent), record_rejection(decision, parent)]
    gate(decision, run) >> [*outcomes, approval]
    approval >> approved
    [*outcomes, *approved] >> finish_mlflow_run(decision, parent)


crossfit_training_pipeline()
