"""The stack's settings (crossfit_stack.config.StackSettings): typed, validated before anything
starts, and a refusal names the variable and its value. The launcher's grace on its command line."""

from __future__ import annotations

import pytest

from crossfit_stack import launch
from crossfit_stack.config import StackSettings, StackSettingsError, config_from_env


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CROSSFIT_API_PORT", "0", "CROSSFIT_API_PORT='0' must be at least 1"),
        ("CROSSFIT_AIRFLOW_PORT", "70000", "CROSSFIT_AIRFLOW_PORT='70000' must be at most 65535"),
        ("CROSSFIT_S3_PORT", "8333.5", "CROSSFIT_S3_PORT='8333.5' is not an integer"),
        ("CROSSFIT_AIRFLOW_PARALLELISM", "0", "CROSSFIT_AIRFLOW_PARALLELISM='0' must be at least 1"),
        ("CROSSFIT_CELERY_CONCURRENCY", "many", "CROSSFIT_CELERY_CONCURRENCY='many' is not an integer"),
        ("CROSSFIT_STOP_GRACE_S", "-1", "CROSSFIT_STOP_GRACE_S='-1' must be greater than 0"),
        ("CROSSFIT_STOP_GRACE_S", "inf", "CROSSFIT_STOP_GRACE_S='inf' must be a finite number"),
        ("CROSSFIT_STOP_GRACE_S", "soon", "CROSSFIT_STOP_GRACE_S='soon' is not a number"),
        ("CROSSFIT_PRELOAD", "perhaps", "CROSSFIT_PRELOAD='perhaps' must be 0 or 1"),
        ("CROSSFIT_OBJECT_STORE", "minio", "CROSSFIT_OBJECT_STORE='minio' is not supported: choose empty or seaweedfs"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(tmp_path, variable, value, message):
    with pytest.raises(StackSettingsError, match=f"^{message}$"):
        config_from_env({"CROSSFIT_STATE_DIR": str(tmp_path), variable: value})


def test_every_refused_variable_is_named_at_once():
    with pytest.raises(StackSettingsError) as refused:
        StackSettings.from_environ({"CROSSFIT_MLFLOW_PORT": "x", "CROSSFIT_MLFLOW_AUTH": "maybe"})
    assert "CROSSFIT_MLFLOW_PORT='x'" in str(refused.value) and "CROSSFIT_MLFLOW_AUTH='maybe'" in str(refused.value)


def test_an_empty_variable_is_unset_and_values_are_typed(tmp_path):
    cfg = config_from_env({"CROSSFIT_STATE_DIR": str(tmp_path), "CROSSFIT_API_PORT": "", "CROSSFIT_MLFLOW_AUTH": "yes",
                           "CROSSFIT_STOP_GRACE_S": "2.5", "CROSSFIT_PRELOAD": "0"})  # fmt: skip
    assert (cfg.api_port, cfg.mlflow_auth, cfg.stop_grace_s, cfg.preload) == (8000, True, 2.5, False)


def test_the_process_environment_reads_the_same_as_a_given_one(monkeypatch):
    """``StackSettings()`` (pydantic-settings, env_prefix CROSSFIT_) and ``from_environ``: one reading."""
    given = {"CROSSFIT_MLFLOW_PORT": "5123", "CROSSFIT_AIRFLOW_EXECUTOR": "CeleryExecutor", "CROSSFIT_BIND_HOST": " 0.0.0.0 ",
             "CROSSFIT_CELERY_WORKERS": "", "CROSSFIT_STOP_GRACE_S": "3"}  # fmt: skip
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    assert StackSettings() == StackSettings.from_environ(given)
    assert StackSettings().bind_host == "0.0.0.0" and StackSettings().celery_workers == 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["api", "rec.json", "--", "sleep", "1"], ("api", 10.0, ["sleep", "1"])),
        (["api", "rec.json", "--grace", "2.5", "--", "sleep", "1"], ("api", 2.5, ["sleep", "1"])),
        (["api", "rec.json", "--grace", "0", "--", "sleep"], None),
        (["api", "rec.json", "--grace", "nan", "--", "sleep"], None),
        (["api", "rec.json", "--grace", "x", "--", "sleep"], None),
        (["api", "rec.json", "--wait", "2", "--", "sleep"], None),
        (["api", "rec.json", "--"], None),
        (["api", "rec.json", "sleep"], None),
    ],
)
def test_the_launcher_takes_its_grace_on_the_command_line(args, expected):
    parsed = launch.parse(args)
    assert (parsed if parsed is None else (parsed[0], parsed[2], parsed[3])) == expected


def test_the_stacks_grace_reaches_the_launcher_and_supervisords_stop_wait(tmp_path):
    from crossfit_stack import control
    from crossfit_stack.supervisor import Program

    cfg = config_from_env({"CROSSFIT_STATE_DIR": str(tmp_path), "CROSSFIT_STOP_GRACE_S": "2.5"})
    conf = control.supervisor(cfg).render([Program("api", ["sleep", "1"], stop_wait_s=10)])
    assert "--grace 2.5 -- sleep 1" in conf and "stopwaitsecs=12" in conf
