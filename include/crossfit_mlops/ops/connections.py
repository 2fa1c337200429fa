"""Reachability checks of the services the pipeline needs (used by the ``test_connections`` DAG)."""

from __future__ import annotations

import logging
import urllib.request
from typing import Any

from crossfit_mlops.settings import Settings

log = logging.getLogger(__name__)


class ServiceCheckError(RuntimeError):
    """A service is unreachable or answers wrongly; the message names it and the address."""


def check_mlflow(tracking_uri: str, timeout: float = 10.0) -> dict[str, Any]:
    """``/health`` answers OK and the experiments API works."""
    if not tracking_uri.startswith(("http://", "https://")):
        raise ServiceCheckError(f"MLflow tracking URI {tracking_uri!r} is not an http(s) server address")
    try:
        with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout) as response:
            body = response.read().decode().strip()
    except OSError as exc:
        raise ServiceCheckError(f"MLflow at {tracking_uri} is unreachable: {exc}") from exc
    from mlflow.exceptions import MlflowException

    from crossfit_mlops.tracking import client

    try:
        experiments = client(tracking_uri).search_experiments(max_results=100)
    except MlflowException as exc:
        if "401" in str(exc) or "403" in str(exc):
            raise ServiceCheckError(
                f"MLflow at {tracking_uri} refused the credentials (basic-auth is on): set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (the stack gives its services the admin's)"
            ) from exc
        raise ServiceCheckError(f"MLflow at {tracking_uri} answers, but its API failed: {exc}") from exc
    result = {"tracking_uri": tracking_uri, "health": body, "experiments": [e.name for e in experiments]}
    log.info("MLflow OK: %s", result)
    return result


def check_feast(settings: Settings) -> dict[str, Any]:
    """The registry loads and holds the views and services of the specs (applying them if needed)."""
    from crossfit_mlops.features.feast_repo import apply_definitions, get_store
    from crossfit_mlops.features.specs import FEATURE_SETS

    store = get_store(settings)
    apply_definitions(settings, store)
    views = sorted(v.name for v in store.list_feature_views())
    services = sorted(s.name for s in store.list_feature_services())
    missing = [s.view_name for s in FEATURE_SETS.values() if s.view_name not in views]
    missing += [s.service_name for s in FEATURE_SETS.values() if s.service_name not in services]
    if missing:
        raise ServiceCheckError(f"Feast registry {settings.feast_registry_path} lacks {missing}")
    result = {"repo": str(settings.feast_repo_path), "registry": str(settings.feast_registry_path), "views": views, "services": services}
    log.info("Feast OK: %s", result)
    return result


def check_postgres(host: str, port: int, user: str | None, password: str | None, dbname: str | None) -> dict[str, Any]:
    """``SELECT version()`` on the database."""
    import psycopg2

    try:
        with psycopg2.connect(host=host, port=port, user=user, password=password, dbname=dbname or "postgres", connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute("SELECT version()")
            version = cur.fetchone()[0]
    except psycopg2.Error as exc:
        raise ServiceCheckError(f"PostgreSQL at {host}:{port}/{dbname} is unreachable: {exc}") from exc
    log.info("PostgreSQL OK: %s", version)
    return {"host": host, "port": port, "dbname": dbname, "version": version}
