"""Pure helpers of the local stack (no process is started here)."""

import sqlite3

import pytest

from crossfit_stack.provision import sqlite_wal


def test_sqlite_backend_is_put_in_wal_mode_before_the_server_opens_it(tmp_path):
    db = tmp_path / "nested" / "mlflow.db"
    assert sqlite_wal(f"sqlite:///{db}") is True
    with sqlite3.connect(db) as conn:  # the mode is stored in the file
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert sqlite_wal(f"sqlite:///{db}") is True  # idempotent


def test_other_backends_are_left_alone():
    assert sqlite_wal("postgresql+psycopg2://localhost/mlflow") is False


def test_the_stacks_airflow_tuning_is_set_and_the_users_own_value_wins(tmp_path, monkeypatch):
    from crossfit_stack import config
    from crossfit_stack import programs as stack_programs

    for name in stack_programs.AIRFLOW_TUNING:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CROSSFIT_STATE_DIR", str(tmp_path / "state"))
    cfg = config.config_from_env()
    secrets = {"fernet_key": "f", "jwt_secret": "j"}
    env = stack_programs.airflow_env(cfg, secrets)
    assert env["AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL"] == "1"  # a finished task frees its slot within 1 s
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] == "0.25"
    monkeypatch.setenv("AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME", "1")
    assert stack_programs.airflow_env(cfg, secrets)["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] == "1"


def test_the_hostname_callables_named_to_airflow_exist(tmp_path):
    """Airflow imports AIRFLOW__CORE__HOSTNAME_CALLABLE by its dotted path in every process: a
    path left behind by a move would only show in a live stack."""
    import importlib

    from crossfit_stack import config
    from crossfit_stack import programs as stack_programs

    secrets = {"fernet_key": "f", "jwt_secret": "j"}
    for executor in ("LocalExecutor", "CeleryExecutor"):
        env = {"CROSSFIT_STATE_DIR": str(tmp_path), "CROSSFIT_AIRFLOW_EXECUTOR": executor}
        path = stack_programs.airflow_env(config.config_from_env(env), secrets)["AIRFLOW__CORE__HOSTNAME_CALLABLE"]
        module, name = path.rsplit(".", 1)
        assert isinstance(getattr(importlib.import_module(module), name)(), str), path


def test_the_cluster_profile_gives_tasks_the_pipelines_key_pair_and_the_object_store_none(tmp_path):
    """SeaweedFS makes an AWS key pair of its own environment an admin identity: the object store
    must start without the pair every task gets, and the pair must not be MLflow's."""
    from crossfit_stack import config
    from crossfit_stack import programs as stack_programs

    cfg = config.config_from_env({"CROSSFIT_STATE_DIR": str(tmp_path), "CROSSFIT_PROFILE": "cluster"})
    assert cfg.settings.data_url == "s3://crossfit-data" and cfg.settings.s3_endpoint == cfg.s3_endpoint
    secrets = {"fernet_key": "f", "jwt_secret": "j", "mlflow_admin_password": "p", "flask_secret_key": "k",
               "s3_access_key": "mlflow-key", "s3_secret_key": "mlflow-secret",
               "s3_data_access_key": "pipeline-key", "s3_data_secret_key": "pipeline-secret"}  # fmt: skip
    assert stack_programs.client_env(cfg, secrets)["AWS_ACCESS_KEY_ID"] == "pipeline-key"
    found = {p.name: p for p in stack_programs.programs(cfg, secrets)}
    store = found[stack_programs.OBJECT_STORE].argv
    assert store[0] == "env" and all(["-u", name] == store[i : i + 2] for i, name in
                                     zip(range(1, 7, 2), stack_programs.OBJECT_STORE_UNSET, strict=True))  # fmt: skip
    assert found["mlflow"].environment["AWS_ACCESS_KEY_ID"] == "mlflow-key"


def test_only_the_mlflow_server_gets_the_prometheus_folder_in_the_state_dir(tmp_path):
    """Every process that imports prometheus_client with PROMETHEUS_MULTIPROC_DIR set writes its
    metrics there: the server's own environment has it, the shared one (tasks, Airflow) must not."""
    from crossfit_stack import config, control
    from crossfit_stack import programs as stack_programs

    cfg = config.config_from_env({"CROSSFIT_STATE_DIR": str(tmp_path / "state")})
    server = {p.name: p for p in stack_programs.programs(cfg, {"fernet_key": "f", "jwt_secret": "j"})}["mlflow"]
    folder = server.environment["PROMETHEUS_MULTIPROC_DIR"]
    assert folder == str(tmp_path / "state" / "mlflow" / "metrics")
    assert "crossfit" in server.argv[server.argv.index("--app-name") + 1]  # the app that serves /metrics
    assert "PROMETHEUS_MULTIPROC_DIR" not in control.stack_environment(cfg)


def test_the_metrics_endpoint_label_is_bounded():
    from crossfit_mlops.tracking.server_app import endpoint_of

    assert endpoint_of("/api/2.0/mlflow/runs/search") == "/api/2.0/mlflow/runs/search"
    assert endpoint_of("/ajax-api/2.0/mlflow/runs/search/more") == "/ajax-api/2.0/mlflow/runs/search"
    # an artifact's path (any length, any name) is not a label value
    assert endpoint_of("/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/model/MLmodel") == "/api/2.0/mlflow-artifacts/artifacts"
    assert endpoint_of("/static-files/static/js/main.123.js") == "/static-files"
    assert endpoint_of("/") == "/"


def test_feast_ui_is_a_service_only_when_switched_on(tmp_path):
    """Off by default (no program, no name); ``CROSSFIT_FEAST_UI=1`` adds it on the bind host and
    its own port, with a readiness check on the registry API and a port variable to name."""
    from crossfit_stack import config
    from crossfit_stack import programs as stack_programs

    secrets = {"fernet_key": "f", "jwt_secret": "j"}
    off = config.config_from_env({"CROSSFIT_STATE_DIR": str(tmp_path)})
    assert stack_programs.FEAST_UI not in stack_programs.names(off)
    assert stack_programs.FEAST_UI not in {p.name for p in stack_programs.programs(off, secrets)}

    on = config.config_from_env({"CROSSFIT_STATE_DIR": str(tmp_path), "CROSSFIT_FEAST_UI": "1", "CROSSFIT_FEAST_UI_PORT": "18888"})
    assert stack_programs.names(on)[-1] == stack_programs.FEAST_UI
    program = {p.name: p for p in stack_programs.programs(on, secrets)}[stack_programs.FEAST_UI]
    assert program.argv[1:] == ["-m", "crossfit_stack.feast_ui", "--host", "127.0.0.1", "--port", "18888"]
    assert stack_programs.health_url(on, stack_programs.FEAST_UI) == "http://127.0.0.1:18888/api/v1/feature_views?project=crossfit"
    assert stack_programs.port_of(on, stack_programs.FEAST_UI) == 18888
    assert stack_programs.port_variable(stack_programs.FEAST_UI) == "CROSSFIT_FEAST_UI_PORT"


def test_the_stack_says_why_feast_ui_did_not_start_instead_of_failing(tmp_path, monkeypatch):
    from crossfit_stack import config, control, feast_ui

    cfg = config.config_from_env({"CROSSFIT_STATE_DIR": str(tmp_path), "CROSSFIT_FEAST_UI": "1"})
    monkeypatch.setattr(feast_ui, "missing_packages", lambda: ["grpcio-health-checking"])
    assert control.start_feast_ui(cfg).startswith("not started: it needs grpcio-health-checking (feast[grpcio])")
    with pytest.raises(SystemExit) as exited:
        feast_ui.main(["--port", "18888"])
    assert exited.value.code == 2
