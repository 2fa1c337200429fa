"""The one MLflow floor: clients built from the settings, experiments and runs, the registry's words.

Every call takes the tracking URI (or the settings) explicitly and works through an
:class:`mlflow.MlflowClient`: tasks run in separate processes (Airflow) or one after another in one
process (``dag.test()``), and serving swaps models in a background thread, so the fluent API's
process-wide URI is never relied on. The few library calls that only exist in the fluent API
(``mlflow.start_run`` + ``log_model``, ``models:/`` loads) run inside :func:`fluent`, which sets
that URI for the block and restores what was there before.

- :mod:`crossfit_mlops.tracking.runs`: experiments, parent and child runs, lineage.
- :mod:`crossfit_mlops.tracking.aliases`: ``CHAMPION`` / ``CHALLENGER``, ``champion_version()``,
  ``NoChampion``, loading a registered version.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from crossfit_mlops.settings import Settings

_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
_fluent_lock = threading.RLock()


def client(tracking_uri: str) -> MlflowClient:
    """A client of the tracking server, which is also the model registry."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def client_for(settings: Settings) -> MlflowClient:
    return client(settings.mlflow_tracking_uri)


@contextmanager
def fluent(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (tracking and registry) at ``tracking_uri`` for the block only.

    On exit the process-wide URIs are unset again and the ``MLFLOW_*_URI`` environment variables
    (which ``mlflow.set_tracking_uri`` also writes) are restored to what they were. Blocks are
    serialized across threads and may nest.
    """
    import mlflow

    with _fluent_lock:
        saved = {name: os.environ.get(name) for name in _URI_VARIABLES}
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def store_full(exc: BaseException) -> str | None:
    """What to tell the user when ``exc`` (or an error it came from) is a full store: MLflow's
    artifact store answering 507 (``tracking/server_app.py``) or a local disk that is full. None
    for any other error. A retry cannot fix either, so the tasks fail at once with this message."""
    from crossfit_mlops.storage import is_disk_full

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 507:
            return f"MLflow's artifact store is full (no space left on device); free space on the server's artifact store, then clear the task: {exc}"
        if isinstance(exc, OSError) and is_disk_full(exc):
            return f"no space left on device: {exc}"
        exc = exc.__cause__ or exc.__context__
    return None


def fail_fast_when_full(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate an Airflow task that talks to a server: when its store is full (:func:`store_full`)
    it fails at once with that reason (``AirflowFailException``: no retry), because a retry would
    fail the same way after minutes of backoff. Every other error keeps the task's retry policy."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            reason = store_full(exc)
            if reason is None:
                raise
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(reason) from exc

    return run
