"""The training fan-out's outcome: which candidates trained, which failed and why, and whether
enough of them trained for the run to go on.

One grid entry that fails (a fit the library refuses, a server that stayed down through the task's
retries) does not fail the run: ``register_challenger`` runs once every training task is done,
whatever its state, and registers the best of the others. The failed ones are on the leaderboard
with their error, read from their MLflow child run (``train_candidate`` tags it before the task
fails: a failed task leaves no XCom). The run fails when fewer than ``min_successful_candidates``
trained, naming how many failed and the first error.

Nothing heavy is imported here at module level: the DAG's tasks import it inside their bodies.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

ERROR_TAG = "training.error"  # on a child run whose training raised: "<exception type>: <message>"
MAX_ERROR_CHARS = 2000  # MLflow takes tag values up to 8000 characters; the first lines say it
NO_RUN = "failed before its MLflow run started (see the task's log in Airflow)"


class FitError(RuntimeError):
    """The model library refused to fit this grid entry on this data. The same entry on the same
    data fails the same way again, so its task fails at once instead of retrying."""


class TooFewCandidates(RuntimeError):
    """Fewer candidates trained than the run's ``min_successful_candidates``."""


@dataclass(frozen=True)
class FailedCandidate:
    """A grid entry whose training task ended without a result."""

    run_name: str
    model: str
    feature_version: str
    map_index: int
    state: str  # the task instance's state: failed, upstream_failed, removed ...
    error: str
    run_id: str | None = None  # its (last) MLflow child run, when one was started

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def describe_error(exc: BaseException) -> str:
    """``"<type>: <message>"`` of an exception, cut to what a tag holds (a :class:`FitError`
    already says which library error it wraps)."""
    text = str(exc) if isinstance(exc, FitError) else f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def _state(state: Any) -> str:
    return str(getattr(state, "value", state))  # a plain string from the API, or Airflow's enum


def map_states(task_states: dict[str, Any], task_id: str) -> dict[int, str]:
    """``{map index: state}`` of a mapped task from Airflow's task states of one run
    (``{"<task_id>_<map index>": state}``; the unexpanded task is ``"<task_id>"``: index -1)."""
    states: dict[int, str] = {}
    for key, state in task_states.items():
        if key == task_id:
            states[-1] = _state(state)
        elif key.startswith(f"{task_id}_") and key.removeprefix(f"{task_id}_").isdigit():
            states[int(key.removeprefix(f"{task_id}_"))] = _state(state)
    return states


def failed_candidates(
    jobs: list[dict[str, Any]],
    results: list[dict[str, Any]],
    states: dict[int, str],
    errors: dict[int, tuple[str, str]],
) -> list[FailedCandidate]:
    """The planned jobs (map index = position) that produced no result, in map order.

    ``states``: each map index's task state; ``errors``: ``{map index: (run id, error)}`` of the
    failed child runs. A job without a child run failed before training began."""
    trained = {r["run_name"] for r in results}
    failed = []
    for index, job in enumerate(jobs):
        config = job["config"]
        if config["name"] in trained:
            continue
        run_id, error = errors.get(index, (None, NO_RUN))
        failed.append(
            FailedCandidate(
                run_name=config["name"], model=config["model"], feature_version=config["feature_version"],
                map_index=index, state=states.get(index, "failed"), error=error, run_id=run_id,
            )
        )  # fmt: skip
    return failed


def require_enough(trained: int, failed: list[FailedCandidate], minimum: int) -> None:
    """Raise :class:`TooFewCandidates` when fewer than ``minimum`` candidates trained, naming how
    many failed and the first failure's error; log the failures otherwise."""
    total = trained + len(failed)
    for candidate in failed:
        log.warning("candidate %s (map index %d) %s: %s", candidate.run_name, candidate.map_index, candidate.state, candidate.error)
    if trained >= minimum:
        return
    first = failed[0] if failed else None
    why = f"; the first: {first.run_name}: {first.error}" if first else ""
    raise TooFewCandidates(
        f"only {trained} of {total} candidates trained, fewer than min_successful_candidates={minimum}: "
        f"{len(failed)} failed{why}"
    )


def candidate_errors(tracking_uri: str, experiment_id: str, parent_run_id: str) -> dict[int, tuple[str, str]]:
    """``{map index: (run id, error)}`` of the parent's FAILED child runs: the newest run of each
    map index (its last try), its :data:`ERROR_TAG`, else why it ended (a killed try's ``aborted``)."""
    from crossfit_mlops.tracking.runs import child_runs

    errors: dict[int, tuple[str, str]] = {}
    newest: dict[int, int] = {}
    for run in child_runs(tracking_uri, experiment_id, parent_run_id, status="FAILED"):
        tags = run.data.tags
        index = tags.get("airflow.map_index", "")
        if not index.lstrip("-").isdigit() or run.info.start_time < newest.get(int(index), -1):
            continue
        newest[int(index)] = run.info.start_time
        aborted = tags.get("aborted", "").removeprefix("true: ")
        error = tags.get(ERROR_TAG) or (f"aborted: {aborted}" if aborted else "its MLflow run ended FAILED")
        errors[int(index)] = (run.info.run_id, error)
    return errors


def never_ran(task_states: dict[str, Any], task_id: str) -> str | None:
    """Why the fan-out ``task_id`` did not run (it never expanded: a task before it failed), naming
    the failed tasks of the run; None when it ran. ``task_states``: the run's ``{task key: state}``."""
    if any(index >= 0 for index in map_states(task_states, task_id)):
        return None
    failed = sorted(key for key, state in task_states.items() if _state(state) == "failed")
    return f"the training fan-out did not run: {', '.join(failed) or 'a task before it'} failed"


def outcome(
    jobs: list[dict[str, Any]], results: list[dict[str, Any]], task_states: dict[str, Any], task_id: str,
    tracking_uri: str, experiment_id: str, parent_run_id: str,
) -> tuple[list[dict[str, Any]], list[FailedCandidate]]:
    """The fan-out's trained results and its failed candidates with their errors (read from the
    parent's FAILED child runs only when a candidate failed)."""
    results = list(results)
    if len(results) >= len(jobs):
        return results, []
    errors = candidate_errors(tracking_uri, experiment_id, parent_run_id)
    return results, failed_candidates(jobs, results, map_states(task_states, task_id), errors)
