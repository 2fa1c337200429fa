"""Profiles of the stack: named sets of setting defaults, never code paths.

``CROSSFIT_PROFILE=local`` (default) is the laptop stack: SQLite, local files, LocalExecutor.
``CROSSFIT_PROFILE=cluster`` is the scale-out stack run on one machine: the defaults below, each of
which a variable set in the environment overrides (a test points them at its own databases).
Compose mode (``CROSSFIT_MODE=compose``) is not a profile of this stack: Docker runs it, with the
same settings written into its compose files.

The training fan-out's queue is the contract's (``TRAINING_QUEUE``): the cluster's workers consume it.
"""

from __future__ import annotations

import os
import socket

from crossfit_mlops.contract import TRAINING_QUEUE

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"

PROFILES: dict[str, dict[str, str]] = {
    "local": {},
    "cluster": {
        "CROSSFIT_AIRFLOW_EXECUTOR": "CeleryExecutor",
        "CROSSFIT_CELERY_WORKERS": "2",
        "CROSSFIT_CELERY_BROKER_URL": "redis://127.0.0.1:6379/1",
        "CROSSFIT_CELERY_RESULT_BACKEND": f"db+{PG}/crossfit_airflow",
        "CROSSFIT_CELERY_QUEUES": f"default,{TRAINING_QUEUE}",
        "CROSSFIT_AIRFLOW_DB_URI": f"{PG}/crossfit_airflow",
        "CROSSFIT_MLFLOW_BACKEND_URI": f"{PG}/crossfit_mlflow",
        "CROSSFIT_MLFLOW_AUTH": "1",
        "CROSSFIT_OBJECT_STORE": "seaweedfs",
        "CROSSFIT_ARTIFACTS_DESTINATION": "s3://crossfit-mlflow-artifacts/",
        "CROSSFIT_FEAST_REDIS": "127.0.0.1:6379,db=0",
        "CROSSFIT_FEAST_REGISTRY_URI": f"{PG}/crossfit_feast",
    },
}


def with_profile(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` with the defaults of its ``CROSSFIT_PROFILE`` filled in where unset."""
    name = (environ.get("CROSSFIT_PROFILE") or "local").strip()
    if name not in PROFILES:
        raise ValueError(f"CROSSFIT_PROFILE={name!r} is not a profile; choose one of {sorted(PROFILES)}")
    resolved = dict(environ)
    for key, value in PROFILES[name].items():
        if not resolved.get(key):
            resolved[key] = value
    resolved["CROSSFIT_PROFILE"] = name
    return resolved


def worker_hostname() -> str:
    """Airflow's ``hostname_callable`` for the stack's Celery workers: ``worker1.<fqdn>``, so each
    task instance's ``hostname`` names the worker that ran it even when both workers share a
    machine (Airflow records the machine's name otherwise). Outside a worker: the plain name.
    The api-server reads finished task logs from the shared log folder, so the name need not
    resolve on one machine; workers on several machines keep the default callable."""
    name = os.environ.get("CROSSFIT_WORKER_NAME")
    fqdn = socket.getfqdn()
    return f"{name}.{fqdn}" if name else fqdn


def log_server_hostname() -> str:
    """Airflow's ``hostname_callable`` under the LocalExecutor: the address the task-log server
    listens on (``CROSSFIT_LOG_SERVER_HOST``, the stack's bind host), which the api-server then
    asks for a running task's log. The machine's name may resolve elsewhere (127.0.1.1 on Debian),
    where nothing listens. A wildcard bind host gives the machine's name."""
    host = os.environ.get("CROSSFIT_LOG_SERVER_HOST", "")
    return host if host not in {"", "0.0.0.0", "::"} else socket.getfqdn()
