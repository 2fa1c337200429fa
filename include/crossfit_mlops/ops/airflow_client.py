"""A small client of Airflow 3's REST API (``/api/v2``, JWT from ``/auth/token``).

Used by ``start-all.sh`` (through ``python -m crossfit_mlops pipeline``), the benchmark and the
tests: wait for a DAG to be parsed, set Variables, unpause, trigger with a conf, follow a run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

log = logging.getLogger(__name__)

FINISHED = {"success", "failed"}


class AirflowApiError(RuntimeError):
    """The API refused a call or a run did not finish as asked; the message has the answer."""


class AirflowClient:
    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.username, self.password, self.timeout = username, password, timeout
        self.session = requests.Session()
        self._token: str | None = None

    def _authenticate(self) -> None:
        response = self.session.post(
            f"{self.base_url}/auth/token", json={"username": self.username, "password": self.password}, timeout=self.timeout
        )
        if response.status_code >= 300:
            raise AirflowApiError(f"login as {self.username} at {self.base_url} failed: {response.status_code} {response.text[:300]}")
        self._token = response.json()["access_token"]
        self.session.headers["Authorization"] = f"Bearer {self._token}"

    def request(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs) -> Any:
        if self._token is None:
            self._authenticate()
        url = f"{self.base_url}/api/v2/{path.lstrip('/')}"
        response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        if response.status_code == 401:  # token expired: once more with a new one
            self._authenticate()
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        if response.status_code not in ok:
            raise AirflowApiError(f"{method} {url}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    # --- DAGs and Variables ----------------------------------------------------------------------
    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the dag-processor has parsed ``dag_id``; fail early on an import error."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.session.get(f"{self.base_url}/api/v2/dags/{dag_id}", timeout=self.timeout) if self._token else None
            if response is None or response.status_code == 401:
                self._authenticate()
                continue
            if response.status_code == 200:
                return response.json()
            errors = self.request("GET", "importErrors").get("import_errors", [])
            if errors:
                details = "\n".join(f"{e['filename']}: {e['stack_trace'][-800:]}" for e in errors)
                raise AirflowApiError(f"DAG files failed to import:\n{details}")
            if time.monotonic() > deadline:
                raise AirflowApiError(f"DAG {dag_id} not parsed after {timeout:.0f}s (is the dag-processor running?)")
            time.sleep(1.0)

    def set_variable(self, key: str, value: str, description: str = "") -> None:
        body = {"key": key, "value": value, "description": description}
        try:
            self.request("PATCH", f"variables/{key}", json=body)
        except AirflowApiError:
            self.request("POST", "variables", ok=(200, 201), json=body)

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"dags/{dag_id}", json={"is_paused": False})

    # --- runs ------------------------------------------------------------------------------------
    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        run = self.request("POST", f"dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.request("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 200})["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        entry = self.request(
            "GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
            params={"map_index": map_index, "deserialize": True},
        )
        return entry["value"]

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        timeout: float = 1800.0,
        poll: float = 2.0,
        on_change: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the run ends; call ``on_change`` with the task instances when states change."""
        deadline, last = time.monotonic() + timeout, None
        while True:
            run = self.dag_run(dag_id, run_id)
            if on_change is not None:
                tis = self.task_instances(dag_id, run_id)
                states = sorted((t["task_id"], t["map_index"], t["state"]) for t in tis)
                if states != last:
                    on_change(tis)
                    last = states
            if run["state"] in FINISHED:
                return run
            if time.monotonic() > deadline:
                raise AirflowApiError(f"run {run_id} of {dag_id} still {run['state']} after {timeout:.0f}s")
            time.sleep(poll)


def declared_variables(path: Path) -> dict[str, str]:
    """The Variables that ``airflow_settings.yaml`` declares (Astro's format)."""
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    variables = (data.get("airflow") or {}).get("variables") or []
    return {v["variable_name"]: str(v.get("variable_value", "")) for v in variables}
