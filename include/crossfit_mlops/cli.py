"""``python -m crossfit_mlops <command>``: every stage of the data half from the shell.

Each command prints a JSON result on stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, is_dataclass
from datetime import date
from pathlib import Path

from crossfit_mlops.data.contract import RawFileError
from crossfit_mlops.data.generate import FULL_SIZE
from crossfit_mlops.data.pipeline import ValidationFloorError


def _emit(result: object) -> None:
    if is_dataclass(result):
        result = asdict(result)
    print(json.dumps(result, indent=2, default=str))


BATCH_DAG = "crossfit_batch_inference"
MONITORING_DAG = "crossfit_monitoring"


class PipelineFailed(RuntimeError):
    """The triggered DAG run did not succeed."""


def _cmd_settings(args: argparse.Namespace) -> None:
    from crossfit_mlops.settings import get_settings

    _emit(get_settings().describe())


def _cmd_generate(args: argparse.Namespace) -> None:
    from crossfit_mlops.data.generate import write_snapshot

    _emit(
        write_snapshot(
            Path(args.out), rows=args.rows, seed=args.seed, snapshot_id=args.snapshot, season_shift=args.season_shift
        )
    )


def _cmd_ingest(args: argparse.Namespace) -> None:
    from crossfit_mlops.data.pipeline import ingest_snapshot

    _emit(ingest_snapshot(args.snapshot, rows=args.rows, seed=args.seed, season_shift=args.season_shift))


def _cmd_validate(args: argparse.Namespace) -> None:
    from crossfit_mlops.data.pipeline import validate_and_clean

    _emit(validate_and_clean(args.snapshot, min_valid_share=args.min_valid_share))


def _cmd_features(args: argparse.Namespace) -> None:
    from crossfit_mlops.features.build import build_feature_table

    _emit({v: build_feature_table(args.snapshot, v) for v in args.version})


def _cmd_feast_apply(args: argparse.Namespace) -> None:
    from crossfit_mlops.features.store import apply_definitions

    _emit({"applied": apply_definitions()})


def _cmd_materialize(args: argparse.Namespace) -> None:
    from crossfit_mlops.data.pipeline import snapshot_time
    from crossfit_mlops.features.store import materialize_snapshot

    materialize_snapshot(snapshot_time(args.snapshot), versions=tuple(args.version))
    _emit({"materialized": args.version, "snapshot": args.snapshot})


def _cmd_prepare(args: argparse.Namespace) -> None:
    """The whole data half for one snapshot: ingest, validate+clean, features, apply, materialize."""
    from crossfit_mlops.data.pipeline import ingest_snapshot, snapshot_time, validate_and_clean
    from crossfit_mlops.features.build import build_feature_table
    from crossfit_mlops.features.store import apply_definitions, get_store, materialize_snapshot
    from crossfit_mlops.settings import get_settings

    raw = ingest_snapshot(args.snapshot, rows=args.rows, seed=args.seed)
    cleaned = validate_and_clean(args.snapshot, min_valid_share=args.min_valid_share)
    tables = {v: build_feature_table(args.snapshot, v) for v in ("v1", "v2")}
    store = get_store()
    apply_definitions(store=store)
    materialize_snapshot(snapshot_time(args.snapshot), store=store)
    _emit({"raw": asdict(raw), "cleaned": asdict(cleaned), "features": tables})
    report = json.loads(Path(cleaned.report_path).read_text())
    settings = get_settings()
    print(
        f"\nsnapshot {args.snapshot}: {report['rows_in']} raw rows, {report['rows_quarantined']} "
        f"quarantined, {report['rows_out']} clean ({report['share_out']:.1%}); report: {cleaned.directory}\n"
        f"Feast registry: {settings.feast_registry_path}\nonline store:   {settings.feast_online_store_path}"
    )


def _cmd_stack(args: argparse.Namespace) -> None:
    from crossfit_mlops import localstack

    cfg = localstack.config_from_env()
    if args.action == "up":
        status = localstack.up(cfg)
        api = localstack.start_api(cfg)
        secrets = localstack.ensure_secrets(cfg)
        print(
            f"MLflow  ({status['mlflow']}): {cfg.mlflow_url}\n"
            f"Airflow ({status['airflow']}): {cfg.airflow_url}  user {localstack.ADMIN_USER}, "
            f"password {secrets['admin_password']}\n"
            f"API     ({api}): {cfg.api_url}/docs\n"
            f"logs: {cfg.log_dir}"
        )
    elif args.action == "down":
        stopped = localstack.down(cfg)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    else:
        names = ["mlflow", *(f"airflow-{c}" for c in localstack.AIRFLOW_COMPONENTS), "api"]
        _emit({name: localstack.running_pid(cfg, name) for name in names})


def _cmd_pipeline(args: argparse.Namespace) -> None:
    """Set the Variables, trigger the training DAG through the REST API, follow it, summarize."""
    from crossfit_mlops import localstack
    from crossfit_mlops.report import failed_tasks, format_summary, run_and_follow, summarize

    cfg = localstack.config_from_env()
    client = localstack.airflow_client(cfg)
    localstack.set_declared_variables(cfg, client)
    # batch inference is scheduled on the assets the training run updates: unpaused, it follows
    client.wait_for_dag(BATCH_DAG)
    client.unpause(BATCH_DAG)
    # monitoring runs only when triggered (schedule None): unpaused, a trigger from the UI just runs
    client.wait_for_dag(MONITORING_DAG)
    client.unpause(MONITORING_DAG)
    conf = json.loads(args.conf) if args.conf else {}
    if args.snapshot:
        conf["snapshot"] = args.snapshot
    if args.rows:
        conf["rows"] = args.rows
    if args.sample_size is not None:
        conf["sample_size"] = args.sample_size
    run_id, run = run_and_follow(client, conf, timeout=args.timeout)
    if run["state"] != "success":
        tis = client.task_instances("crossfit_training_pipeline", run_id)
        raise PipelineFailed(
            f"run {run_id} ended {run['state']}; failed tasks: {', '.join(failed_tasks(tis)) or 'none'}; "
            f"task logs in the Airflow UI ({cfg.airflow_url}) or {cfg.airflow_home / 'logs'}"
        )
    summary = summarize(client, run_id)
    print(format_summary(summary, cfg.mlflow_url, cfg.airflow_url, cfg.settings.registered_model_name))
    api = localstack.start_api(cfg)
    if api.startswith("skipped"):
        print(f"prediction API: {api}")
    else:
        from crossfit_mlops.serving.features import example_athlete

        athlete = example_athlete(cfg.settings) or 2554
        print(
            f"prediction API ({api}): {cfg.api_url}/docs\n"
            f"  curl -s {cfg.api_url}/predict -H 'Content-Type: application/json' -d '{{\"athlete_id\": {athlete}}}'\n"
            f"batch inference: DAG {BATCH_DAG} runs on the new features / champion "
            f"(predictions under {cfg.settings.predictions_dir})"
        )


def _cmd_monitor(args: argparse.Namespace) -> None:
    """Trigger crossfit_monitoring through the REST API, follow it, print its decision and dashboard."""
    from crossfit_mlops import localstack
    from crossfit_mlops.monitoring.monitor import MONITORING_EXPERIMENT
    from crossfit_mlops.report import failed_tasks, run_and_follow
    from crossfit_mlops.training.tracking import client as mlflow_client

    cfg = localstack.config_from_env()
    client = localstack.airflow_client(cfg)
    conf = json.loads(args.conf) if args.conf else {}
    conf.update({"snapshot": args.snapshot, "season_shift": args.season_shift})
    if args.rows:
        conf["rows"] = args.rows
    run_id, run = run_and_follow(client, conf, dag_id=MONITORING_DAG, timeout=args.timeout)
    instances = client.task_instances(MONITORING_DAG, run_id)
    tis = {ti["task_id"]: ti["state"] for ti in instances}
    if run["state"] != "success":
        raise PipelineFailed(
            f"run {run_id} ended {run['state']}; failed tasks: {', '.join(failed_tasks(instances)) or 'none'}; "
            f"task logs in the Airflow UI ({cfg.airflow_url}) or {cfg.airflow_home / 'logs'}"
        )
    if tis.get("find_champion") == "skipped":
        print("no @champion to monitor yet: run the training pipeline first")
        return
    c = mlflow_client(cfg.settings.mlflow_tracking_uri)
    experiment = c.get_experiment_by_name(MONITORING_EXPERIMENT)
    found = c.search_runs([experiment.experiment_id], filter_string=f"tags.`airflow.run_id` = '{run_id}'")
    if not found:
        raise PipelineFailed(f"run {run_id} succeeded but left no MLflow run in {MONITORING_EXPERIMENT}")
    tags, metrics = found[0].data.tags, found[0].data.metrics
    print(
        f"snapshot {tags['snapshot_id']} vs {tags['reference_snapshot_id']} (champion v{tags['model_version']}, "
        f"{tags['feature_version']}): {tags['decision'].upper()}\n"
        + "".join(f"  - {reason}\n" for reason in tags["reasons"].split("; "))
        + f"  target drift {metrics['target_drift']:.3f}, prediction drift {metrics['prediction_drift']:.3f}\n"
        f"retraining: {'triggered (' + cfg.airflow_url + '/dags/crossfit_training_pipeline)' if tis.get('trigger_retraining') == 'success' else 'not triggered'}\n"
        f"dashboard: {tags['monitoring_path']}/report.html and dashboard.png\n"
        f"MLflow: {cfg.mlflow_url}/#/experiments/{experiment.experiment_id}/runs/{found[0].info.run_id}"
    )


def _cmd_registry(args: argparse.Namespace) -> None:
    from crossfit_mlops.registry.gate import CHALLENGER, CHAMPION, rollback
    from crossfit_mlops.settings import get_settings
    from crossfit_mlops.training.tracking import client

    settings = get_settings()
    name = settings.registered_model_name
    if args.action == "rollback":
        old, new = rollback(settings.mlflow_tracking_uri, name)
        print(f"@{CHAMPION} of {name}: v{old} -> v{new}")
        return
    c = client(settings.mlflow_tracking_uri)
    model = c.get_registered_model(name)
    rows = []
    for mv in sorted(c.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version)):
        aliases = [a for a, v in model.aliases.items() if str(v) == str(mv.version)]
        rows.append(
            {
                "version": mv.version,
                "aliases": aliases,
                "legacy_stage": mv.tags.get("legacy_stage"),
                "feature_version": mv.tags.get("feature_version"),
                "gate": mv.tags.get("gate.decision"),
                "reason": mv.tags.get("gate.reason"),
            }
        )
    _emit({"model": name, CHAMPION: model.aliases.get(CHAMPION), CHALLENGER: model.aliases.get(CHALLENGER), "versions": rows})


def _cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from crossfit_mlops.serving.app import build_app

    app = build_app(refresh_seconds=args.refresh_seconds, max_batch=args.max_batch)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log)


def _cmd_predict_two_hop(args: argparse.Namespace) -> None:
    from crossfit_mlops.serving.two_hop import TwoHopClient

    client = TwoHopClient(args.endpoint)
    predictions = client.predict(args.athlete_id)
    _emit(
        {
            "endpoint": client.endpoint,
            "model_version": client.inputs.version,
            "feature_version": client.inputs.feature_version,
            "predictions": dict(zip(args.athlete_id, predictions, strict=True)),
        }
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m crossfit_mlops", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_snapshot(p: argparse.ArgumentParser) -> None:
        p.add_argument("--snapshot", default=date.today().isoformat(), help="snapshot id (ISO date)")

    def with_size(p: argparse.ArgumentParser) -> None:
        p.add_argument("--rows", type=int, default=FULL_SIZE, help="rows to generate")
        p.add_argument("--seed", type=int, default=42)

    def with_shift(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--season-shift", type=float, default=0.0,
            help="simulate a later season: lifts this much heavier, body weight half as much (0.1 = +10%%)",
        )

    p = sub.add_parser("settings", help="print the resolved settings")
    p.set_defaults(func=_cmd_settings)

    p = sub.add_parser("generate", help="write a generated athletes.csv to --out")
    p.add_argument("--out", required=True)
    with_snapshot(p)
    with_size(p)
    with_shift(p)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("ingest", help="create the raw snapshot (provided file or generated)")
    with_snapshot(p)
    with_size(p)
    with_shift(p)
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("validate", help="validate + clean a raw snapshot (quarantine, report)")
    with_snapshot(p)
    p.add_argument("--min-valid-share", type=float, default=None)
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("features", help="engineer feature tables of a cleaned snapshot")
    with_snapshot(p)
    p.add_argument("--version", nargs="+", default=["v1", "v2"], choices=["v1", "v2"])
    p.set_defaults(func=_cmd_features)

    p = sub.add_parser("feast-apply", help="register the Feast definitions (idempotent)")
    p.set_defaults(func=_cmd_feast_apply)

    p = sub.add_parser("materialize", help="load a snapshot's features into the online store")
    with_snapshot(p)
    p.add_argument("--version", nargs="+", default=["v1", "v2"], choices=["v1", "v2"])
    p.set_defaults(func=_cmd_materialize)

    p = sub.add_parser("prepare", help="ingest, validate, clean, engineer, apply and materialize")
    with_snapshot(p)
    with_size(p)
    p.add_argument("--min-valid-share", type=float, default=None)
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("stack", help="the local MLflow + Airflow processes (no Docker)")
    p.add_argument("action", choices=["up", "down", "status"])
    p.set_defaults(func=_cmd_stack)

    p = sub.add_parser("pipeline", help="trigger crossfit_training_pipeline via the REST API and follow it")
    p.add_argument("--snapshot", default=None, help="snapshot id (default: the DAG's, today)")
    p.add_argument("--rows", type=int, default=None, help="raw rows to generate if the snapshot is new")
    p.add_argument("--sample-size", type=int, default=None, help="athletes to train on (0 = all)")
    p.add_argument("--conf", default=None, help="JSON of further DAG params (grid, gate thresholds...)")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.set_defaults(func=_cmd_pipeline)

    p = sub.add_parser("monitor", help="trigger crossfit_monitoring on a snapshot via the REST API and follow it")
    p.add_argument("--snapshot", required=True, help="the new snapshot id (ISO date)")
    p.add_argument("--rows", type=int, default=None, help="raw rows if generated (default: as the champion's)")
    with_shift(p)
    p.add_argument("--conf", default=None, help="JSON of further DAG params (thresholds, retrain)")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.set_defaults(func=_cmd_monitor)

    p = sub.add_parser("registry", help="show the registered model, or roll @champion back")
    p.add_argument("action", choices=["show", "rollback"])
    p.set_defaults(func=_cmd_registry)

    p = sub.add_parser("serve", help="the prediction API (FastAPI + uvicorn) on @champion and Feast's online store")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--refresh-seconds", type=float, default=None, help="how often @champion is polled")
    p.add_argument("--max-batch", type=int, default=None, help="athletes per request (413 above)")
    p.add_argument("--log-level", default="info")
    p.add_argument("--access-log", action="store_true", help="log every request (off: it costs latency)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "predict-two-hop",
        help="the tutorial's path: read online features from Feast, POST them to `mlflow models serve`",
    )
    p.add_argument("--athlete-id", type=int, action="append", required=True, help="repeat for several")
    p.add_argument("--endpoint", default="http://127.0.0.1:1234/invocations")
    p.set_defaults(func=_cmd_predict_two_hop)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        args.func(args)
    except (RawFileError, ValidationFloorError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
