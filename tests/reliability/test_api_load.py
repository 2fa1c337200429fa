"""The API under load on a busy machine while ``@champion`` moves and the online store is
re-materialized: no 5xx, no dropped connection, no answer from the old model after the switch.

It runs the benchmark ``benchmarks/bench_serving_switch.py`` small (its own MLflow server, Feast
store and API, in a temp dir; one CPU burner per core) and asserts on what it recorded for every
request. The timings it records are not asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.services import QUIET_ENV, ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_no_5xx_no_old_model_no_dropped_connection_through_switch_and_rematerialization(tmp_path):
    out = tmp_path / "serving_switch.json"
    env = {**os.environ, **QUIET_ENV}
    for name in ("MLFLOW_TRACKING_URI", "CROSSFIT_STATE_DIR", "CROSSFIT_MLFLOW_PORT"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_serving_switch.py"), "--rows", "8000", "--seconds", "4",
         "--clients", "8", "--state-dir", str(tmp_path / "state"), "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    result = json.loads(out.read_text())
    assert result["machine"]["cpu_burners"] == os.cpu_count()
    for name in ("baseline", "switch_and_rematerialization"):
        phase = result[name]
        assert phase["requests"] > 0 and phase["statuses"] == {"200": phase["requests"]}, (name, phase["statuses"])
        assert phase["server_errors_5xx"] == 0 and phase["connection_errors"] == 0, (name, phase)
        assert phase["connections_opened"] == phase["clients"], f"{name}: a connection was dropped and reopened"
    during = result["switch_and_rematerialization"]
    switch = during["switch"]
    assert switch["versions_seen"] == [switch["old_version"], switch["new_version"]], switch
    assert switch["answered_by_new_model"] > 0
    assert switch["answered_by_old_model_after_first_new_answer"] == 0, switch
    remat = during["rematerialization"]
    assert remat["exit_code"] == 0, (tmp_path / "state" / "rematerialize.log").read_text()[-3000:]
    assert remat["requests_inside"]["requests"] > 0, "no request ran during the re-materialization"
