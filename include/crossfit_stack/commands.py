"""``python -m crossfit_stack <command>``: the local stack (no Docker) and the runs it carries.

``up`` / ``down`` / ``status`` / ``start SERVICE`` / ``stop SERVICE`` manage the supervised services;
``pipeline`` and ``monitor`` trigger the training and monitoring DAGs through Airflow's REST API and
follow them; ``registry`` is ``python -m crossfit_mlops registry`` with the stack's profile and
MLflow credential. Failures take the ML command line's one error path
(:mod:`crossfit_mlops.ops.console`): one line ``error: ...``, exit 2.
"""

from __future__ import annotations

import argparse
import json
import os

from crossfit_mlops.dag_contract import BATCH_DAG, MONITORING_DAG, TRAINING_DAG
from crossfit_mlops.ops.cli import add_registry_command, registry_command
from crossfit_mlops.ops.console import CommandError, command_line, main_of, require_server
from crossfit_stack import control, provision
from crossfit_stack.config import StackConfig, config_from_env

AIRFLOW_SETTING = "CROSSFIT_AIRFLOW_PORT"


# --- the stack ------------------------------------------------------------------------------------
def _start_api_if_champion(cfg: StackConfig) -> str:
    """The prediction API needs a champion to serve: start it once one exists."""
    from crossfit_mlops.tracking.aliases import NoChampion, champion_version

    control.use_stack_clients(cfg)
    name = cfg.settings.registered_model_name
    if champion_version(cfg.settings.mlflow_tracking_uri, name) is None:
        return f"skipped: {NoChampion.missing(name)}"
    return control.start_api(cfg)


def _print_up(cfg: StackConfig, status: dict[str, str], api: str) -> None:
    secrets = cfg.secrets_path
    auth = f", basic-auth: user admin, password: mlflow_admin_password in {secrets}" if cfg.mlflow_auth else ""
    feast_ui = f"Feast UI ({status['feast_ui']}): {cfg.feast_ui_url}\n" if "feast_ui" in status else ""
    print(
        f"MLflow  ({status['mlflow']}): {cfg.mlflow_url}{auth}\n"
        f"Airflow ({status['airflow']}): {cfg.airflow_url}  user {provision.ADMIN_USER}, "
        f"password: admin_password in {secrets} (mode 0600)\n"
        f"API     ({api}): {cfg.api_url}/docs\n"
        f"{feast_ui}"
        f"profile {cfg.profile}, executor {cfg.executor}; services supervised by supervisord ({status['supervisor']}): "
        f"python -m crossfit_stack status\n"
        f"logs: {cfg.log_dir}"
    )


def _stack_config(args: argparse.Namespace) -> StackConfig:
    if getattr(args, "profile", None):  # the services inherit it too
        os.environ["CROSSFIT_PROFILE"] = args.profile
    return config_from_env()


def _cmd_up(args: argparse.Namespace) -> None:
    cfg = _stack_config(args)
    status = control.up(cfg)
    _print_up(cfg, status, _start_api_if_champion(cfg))


def _cmd_down(args: argparse.Namespace) -> None:
    stopped = control.down(_stack_config(args))
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


def _cmd_service(args: argparse.Namespace) -> None:
    """``start SERVICE`` / ``stop SERVICE``: one service, the rest keeps running."""
    cfg = _stack_config(args)
    if args.service not in control.service_names(cfg):
        raise ValueError(f"unknown service {args.service!r}; services of this profile: {control.service_names(cfg)}")
    if args.command == "start":
        print(f"{args.service}: {control.start_service(cfg, args.service)}")
    else:
        print(f"{args.service}: {'stopped' if control.stop_service(cfg, args.service) else 'was not running'}")


def _cmd_status(args: argparse.Namespace) -> None:
    rows = control.describe(_stack_config(args))
    width = max(len(r["service"]) for r in rows)
    for row in rows:
        print(f"{row['service']:<{width}}  {row['state']:<9} {row['detail']:<32} {row['log']}")


# --- the runs the stack carries --------------------------------------------------------------------
def _conf(args: argparse.Namespace, **values) -> dict:
    """``--conf`` (a JSON object) plus the options given; checked before any server is called."""
    try:
        conf = json.loads(args.conf) if args.conf else {}
    except ValueError as exc:
        raise CommandError(f"--conf is not valid JSON ({exc}): give an object, e.g. '{{\"sample_size\": 2000}}'") from None
    if not isinstance(conf, dict):
        raise CommandError(f"--conf must be a JSON object of DAG params, got {type(conf).__name__} {args.conf!r}")
    conf.update({k: v for k, v in values.items() if v is not None})
    return conf


def _cmd_pipeline(args: argparse.Namespace) -> None:
    """Set the Variables, trigger the training DAG through the REST API, follow it, summarize."""
    from crossfit_stack.follow import format_summary, require_success, run_and_follow, summarize

    conf = _conf(args, snapshot=args.snapshot or None, rows=args.rows or None, sample_size=args.sample_size)
    cfg = config_from_env()
    require_server(cfg.airflow_url, "Airflow", AIRFLOW_SETTING)
    control.use_stack_clients(cfg)  # MLflow's credential when basic-auth is on, bounded retries
    client = control.airflow_client(cfg)
    control.set_declared_variables(cfg, client)
    # batch inference is scheduled on the assets the training run updates: unpaused, it follows;
    # monitoring watches live traffic hourly and when the online store gets new features (its
    # scheduled runs measure the prediction log only), and a trigger from the UI just runs
    for dag_id in (BATCH_DAG, MONITORING_DAG):
        client.wait_for_dag(dag_id)
        client.unpause(dag_id)
    run_id, run = run_and_follow(client, conf, timeout=args.timeout)
    require_success(client, TRAINING_DAG, run_id, run, control.task_log_hint(cfg))
    summary = summarize(client, run_id)
    print(format_summary(summary, cfg.mlflow_url, cfg.airflow_url, cfg.settings.registered_model_name))
    api = _start_api_if_champion(cfg)
    if api.startswith("skipped"):
        print(f"prediction API: {api}")
        return
    from crossfit_mlops.serving.online import example_athlete

    athlete = example_athlete(cfg.settings) or 2554
    print(
        f"prediction API ({api}): {cfg.api_url}/docs\n"
        f"  curl -s {cfg.api_url}/predict -H 'Content-Type: application/json' -d '{{\"athlete_id\": {athlete}}}'\n"
        f"batch inference: DAG {BATCH_DAG} runs on the new features / champion "
        f"(predictions under {cfg.settings.predictions_dir})"
    )


def _cmd_monitor(args: argparse.Namespace) -> None:
    """Trigger crossfit_monitoring through the REST API, follow it, print its decision and dashboard."""
    from crossfit_mlops.monitoring.monitor import MONITORING_EXPERIMENT
    from crossfit_mlops.storage import check_snapshot_id
    from crossfit_mlops.tracking import client as mlflow_client
    from crossfit_stack.follow import (
        format_monitoring,
        monitoring_outcome,
        require_success,
        run_and_follow,
    )

    check_snapshot_id(args.snapshot)
    conf = _conf(args, snapshot=args.snapshot, season_shift=args.season_shift, rows=args.rows or None)
    cfg = config_from_env()
    require_server(cfg.airflow_url, "Airflow", AIRFLOW_SETTING)
    control.use_stack_clients(cfg)  # MLflow's credential when basic-auth is on, bounded retries
    client = control.airflow_client(cfg)
    run_id, run = run_and_follow(client, conf, dag_id=MONITORING_DAG, timeout=args.timeout)
    instances = require_success(client, MONITORING_DAG, run_id, run, control.task_log_hint(cfg))
    outcome = monitoring_outcome(client, run_id, instances)
    if outcome is None:
        print("no @champion to monitor yet: run the training pipeline first")
        return
    experiment = mlflow_client(cfg.settings.mlflow_tracking_uri).get_experiment_by_name(MONITORING_EXPERIMENT)
    print(format_monitoring(outcome, cfg.mlflow_url, cfg.airflow_url, experiment.experiment_id))


def _cmd_registry(args: argparse.Namespace) -> None:
    cfg = config_from_env()  # the profile's settings (a cluster's Feast registry, its MLflow)
    control.use_stack_clients(cfg)  # the stack's MLflow credential, if basic-auth is on
    registry_command(args, cfg.settings)


# --- the parser ----------------------------------------------------------------------------------
def _with_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=["local", "cluster"], default=None, help="default: CROSSFIT_PROFILE, else local")


def _stack_commands(sub) -> None:
    for name, func, text in [
        ("up", _cmd_up, "start (or reuse) the stack's services, supervised by supervisord (no Docker)"),
        ("down", _cmd_down, "stop every service and supervisord"),
        ("status", _cmd_status, "each service: state, pid, uptime, log"),
    ]:
        _with_profile(sub.add_parser(name, help=text))
        sub.choices[name].set_defaults(func=func)
    for name in ("start", "stop"):
        p = sub.add_parser(name, help=f"{name} one service (the rest keeps running)")
        p.add_argument("service", help="mlflow, airflow-api-server, api, ... (see status)")
        _with_profile(p)
        p.set_defaults(func=_cmd_service)


def _with_shift(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--season-shift", type=float, default=0.0,
        help="simulate a later season: lifts this much heavier, body weight half as much (0.1 = +10%%)",
    )


def _run_commands(sub) -> None:
    p = sub.add_parser("pipeline", help=f"trigger {TRAINING_DAG} via the REST API and follow it")
    p.add_argument("--snapshot", default=None, help="snapshot id (default: the DAG's, today)")
    p.add_argument("--rows", type=int, default=None, help="raw rows to generate if the snapshot is new")
    p.add_argument("--sample-size", type=int, default=None, help="athletes to train on (0 = all)")
    p.add_argument("--conf", default=None, help="JSON of further DAG params (grid, gate thresholds...)")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.set_defaults(func=_cmd_pipeline)

    p = sub.add_parser("monitor", help=f"trigger {MONITORING_DAG} on a snapshot via the REST API and follow it")
    p.add_argument("--snapshot", required=True, help="the new snapshot id (ISO date)")
    p.add_argument("--rows", type=int, default=None, help="raw rows if generated (default: as the champion's)")
    _with_shift(p)
    p.add_argument("--conf", default=None, help="JSON of further DAG params (thresholds, retrain)")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.set_defaults(func=_cmd_monitor)

    add_registry_command(sub).set_defaults(func=_cmd_registry)


def build_parser() -> argparse.ArgumentParser:
    return command_line("python -m crossfit_stack", __doc__, _stack_commands, _run_commands)


def main(argv: list[str] | None = None) -> int:
    return main_of(build_parser(), argv)
