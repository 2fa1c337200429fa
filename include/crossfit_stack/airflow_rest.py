"""Airflow 3's REST API (``/api/v2``) through the official client, ``apache-airflow-client``.

A small facade over it for what this project does from outside Airflow (``start-all.sh``'s
``pipeline`` and ``monitor`` commands, the benchmarks, the tests): log in with the JWT from
``/auth/token``, wait until a DAG is parsed, set Variables, unpause, trigger with a conf, follow a
run, read task instances and XComs, clear tasks. Results are plain JSON-like dicts (timestamps as
ISO strings), as the REST API returns them.
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
    """The REST API as ``username``; every call re-authenticates once if its token expired."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30.0) -> None:
        from airflow_client.client import ApiClient, Configuration

        self.base_url = base_url.rstrip("/")
        self.username, self.password, self.timeout = username, password, timeout
        self._config = Configuration(host=self.base_url)
        self._api = ApiClient(self._config)
        self._token: str | None = None

    # --- plumbing ---------------------------------------------------------------------------------
    def _authenticate(self) -> None:
        response = requests.post(
            f"{self.base_url}/auth/token", json={"username": self.username, "password": self.password}, timeout=self.timeout
        )
        if response.status_code >= 300:
            raise AirflowApiError(f"login as {self.username} at {self.base_url} failed: {response.status_code} {response.text[:300]}")
        self._token = response.json()["access_token"]
        self._config.access_token = self._token

    def _call(self, api: str, method: str, *args, **kwargs) -> Any:
        """``<Api class>.<method>(*args)`` as JSON-like data; one re-login on 401."""
        import airflow_client.client as generated
        from airflow_client.client.exceptions import ApiException

        if self._token is None:
            self._authenticate()
        endpoint = getattr(getattr(generated, api)(self._api), method)
        for attempt in (1, 2):
            try:
                result = endpoint(*args, _request_timeout=self.timeout, **kwargs)
                result = getattr(result, "actual_instance", result)  # a oneOf answer (e.g. an XCom entry)
                # JSON types, every field present (None where unset), as the REST API returns them
                return result.model_dump(mode="json", by_alias=True) if hasattr(result, "model_dump") else result
            except ApiException as exc:
                if exc.status == 401 and attempt == 1:
                    self._authenticate()
                    continue
                raise AirflowApiError(f"{api}.{method}{args}: {exc.status} {(exc.body or exc.reason or '')[:500]}") from None
        raise AssertionError("unreachable")

    # --- DAGs and Variables -----------------------------------------------------------------------
    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the dag-processor has parsed ``dag_id``; fail early on an import error."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._call("DAGApi", "get_dag", dag_id)
            except AirflowApiError as exc:
                if " 404 " not in str(exc):
                    raise
            errors = self._call("ImportErrorApi", "get_import_errors").get("import_errors", [])
            if errors:
                details = "\n".join(f"{e['filename']}: {e['stack_trace'][-800:]}" for e in errors)
                raise AirflowApiError(f"DAG files failed to import:\n{details}")
            if time.monotonic() > deadline:
                raise AirflowApiError(f"DAG {dag_id} not parsed after {timeout:.0f}s (is the dag-processor running?)")
            time.sleep(1.0)

    def set_variable(self, key: str, value: str, description: str = "") -> None:
        from airflow_client.client.models import VariableBody

        body = VariableBody(key=key, value=value, description=description)
        try:
            self._call("VariableApi", "patch_variable", key, body)
        except AirflowApiError:
            self._call("VariableApi", "post_variable", body)

    def unpause(self, dag_id: str) -> None:
        from airflow_client.client.models import DAGPatchBody

        self._call("DAGApi", "patch_dag", dag_id, DAGPatchBody(is_paused=False))

    # --- runs -------------------------------------------------------------------------------------
    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        from airflow_client.client.models import TriggerDAGRunPostBody

        run = self._call("DagRunApi", "trigger_dag_run", dag_id, TriggerDAGRunPostBody(logical_date=None, conf=conf or {}))
        return run["dag_run_id"]

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self._call("DagRunApi", "get_dag_run", dag_id, run_id)

    def dag_runs(self, dag_id: str, limit: int = 25) -> list[dict[str, Any]]:
        return self._call("DagRunApi", "get_dag_runs", dag_id, limit=limit)["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self._call("TaskInstanceApi", "get_task_instances", dag_id, run_id, limit=200)["task_instances"]

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict[str, Any]]:
        """Every try of one task instance (``try_number``, ``hostname``, ``state`` of each), oldest first."""
        if map_index >= 0:
            found = self._call("TaskInstanceApi", "get_mapped_task_instance_tries", dag_id, run_id, task_id, map_index)
        else:
            found = self._call("TaskInstanceApi", "get_task_instance_tries", dag_id, run_id, task_id)
        return sorted(found["task_instances"], key=lambda t: t["try_number"])

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        entry = self._call("XComApi", "get_xcom_entry", dag_id, task_id, run_id, "return_value", map_index=map_index, deserialize=True)
        return entry["value"]

    def clear(self, dag_id: str, run_id: str, task_ids: list[str], include_downstream: bool = True) -> list[dict[str, Any]]:
        """Clear tasks of a run (they and, by default, their downstream tasks run again)."""
        from airflow_client.client.models import (
            ClearTaskInstancesBody,
            ClearTaskInstancesBodyTaskIdsInner,
        )

        body = ClearTaskInstancesBody(
            dry_run=False, dag_run_id=run_id, task_ids=[ClearTaskInstancesBodyTaskIdsInner(t) for t in task_ids], only_failed=False,
            include_downstream=include_downstream, reset_dag_runs=True,
        )  # fmt: skip
        return self._call("TaskInstanceApi", "post_clear_task_instances", dag_id, body)["task_instances"]

    def answer(self, dag_id: str, run_id: str, task_id: str, chosen: list[str], map_index: int = -1) -> dict[str, Any]:
        """Answer a human-in-the-loop task (e.g. ``["Approve"]``) as this client's user."""
        from airflow_client.client.models import UpdateHITLDetailPayload

        body = UpdateHITLDetailPayload(chosen_options=chosen, params_input={})
        return self._call("TaskInstanceApi", "update_hitl_detail", dag_id, run_id, task_id, map_index, body)

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
                states = sorted((t["task_id"], t["map_index"], t["state"] or "") for t in tis)
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
