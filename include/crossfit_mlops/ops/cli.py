"""``python -m crossfit_mlops <command>``: every stage of the data half, the local stack, the
pipeline and monitoring runs, the registry and the API, from the shell.

Each data command prints a JSON result on stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from dataclasses import asdict, is_dataclass
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

from crossfit_mlops.contract import BATCH_DAG, MONITORING_DAG, TRAINING_DAG
from crossfit_mlops.data.contract import RawFileError
from crossfit_mlops.data.vocabulary import FULL_SIZE
from crossfit_mlops.features.specs import FEATURE_SETS

VERSIONS = list(FEATURE_SETS)


def _emit(result: object) -> None:
    if is_dataclass(result):
        result = asdict(result)
    print(json.dumps(result, indent=2, default=str))


# --- the one error path ---------------------------------------------------------------------------
MLFLOW_SETTING = "MLFLOW_TRACKING_URI or CROSSFIT_MLFLOW_PORT"
AIRFLOW_SETTING = "CROSSFIT_AIRFLOW_PORT"


class CommandError(RuntimeError):
    """A bad argument or a missing precondition of a command; the message says what and where."""


def _require_server(url: str, what: str, setting: str, timeout: float = 2.0) -> None:
    """Fail within ``timeout`` when nothing listens at ``url`` (an http(s) URL; others pass), not
    after the client's retries (MLflow's: about 11 s), naming the server and the setting."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise CommandError(
            f"{what} is not reachable at {url} ({exc.strerror or exc}): start the stack (./start-all.sh) or set {setting}"
        ) from None


def _is_a(exc: Exception, module: str, name: str) -> bool:
    """``exc`` is a ``module.name`` error, asked without importing the library (a command that
    never loaded it cannot have raised its errors)."""
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(exc, getattr(loaded, name))


def _mlflow_error(exc: Exception) -> str | None:
    """MLflow's own exceptions as one line: a missing object, a refused value, a server that fails."""
    if not _is_a(exc, "mlflow.exceptions", "MlflowException"):
        return None
    message = str(exc.message).splitlines()[0] if str(exc.message) else exc.error_code
    if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
        return f"not found in the MLflow registry: {message}"
    return f"MLflow refused the call ({exc.error_code}): {message}"


def _feast_error(exc: Exception) -> str | None:
    if not _is_a(exc, "feast.errors", "FeastError"):
        return None
    if _is_a(exc, "feast.errors", "FeastObjectNotFoundException"):
        return f"{exc}: register the Feast definitions first (python -m crossfit_mlops feast-apply, or prepare)"
    return f"Feast: {exc}"


def _database_error(exc: Exception) -> str | None:
    """A database that does not answer (Feast's SQL registry, a backend store): SQLAlchemy's."""
    if not _is_a(exc, "sqlalchemy.exc", "OperationalError"):
        return None
    return f"the database does not answer: {str(exc.orig).strip().splitlines()[0]}"


def _error_line(exc: Exception) -> str | None:
    """What to tell the user about ``exc`` (None: an unexpected error, a bug)."""
    found = _mlflow_error(exc) or _feast_error(exc) or _database_error(exc)
    if found:
        return found
    request = getattr(exc, "request", None)  # requests' errors (also OSErrors): name the URL
    if request is not None and getattr(request, "url", None):
        return f"{request.method} {request.url} failed: {type(exc).__name__}; is the stack running? (./start-all.sh)"
    if isinstance(exc, ValueError | RuntimeError | OSError | RawFileError):
        return str(exc) or type(exc).__name__
    return None


def _run(args: argparse.Namespace) -> int:
    """Every command goes through here: a known failure is one line ``error: ...`` and exit 2; an
    unexpected one is one line and exit 1 (``-v`` shows its traceback)."""
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the one place a command's failure becomes its exit status
        line = _error_line(exc)
        if line is not None:
            print(f"error: {line}", file=sys.stderr)
            return 2
        if args.verbose:
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"error: unexpected {type(exc).__name__}: {first} (run with -v for the traceback)", file=sys.stderr)
        return 1
    return 0


def _port(text: str) -> int:
    """An argparse type: a TCP port, 1-65535 (0 would let the OS pick one nobody knows)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1-65535")
    return port


def _positive(kind: type) -> object:
    """An argparse type: a finite ``kind`` (int or float) greater than 0."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value

    return parse


# --- the data half -------------------------------------------------------------------------------
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
    from crossfit_mlops.data.ingest import ingest_snapshot

    _emit(ingest_snapshot(args.snapshot, rows=args.rows, seed=args.seed, season_shift=args.season_shift))


def _cmd_validate(args: argparse.Namespace) -> None:
    from crossfit_mlops.data.validate import validate_and_clean

    _emit(validate_and_clean(args.snapshot, min_valid_share=args.min_valid_share))


def _cmd_features(args: argparse.Namespace) -> None:
    from crossfit_mlops.features.build import build_feature_table

    _emit({v: build_feature_table(args.snapshot, v) for v in args.version})


def _cmd_feast_apply(args: argparse.Namespace) -> None:
    from crossfit_mlops.features.store import apply_definitions

    _emit({"applied": apply_definitions()})


def _cmd_materialize(args: argparse.Namespace) -> None:
    from crossfit_mlops.features.store import materialize_snapshot
    from crossfit_mlops.storage import snapshot_time

    materialize_snapshot(snapshot_time(args.snapshot), versions=tuple(args.version))
    _emit({"materialized": args.version, "snapshot": args.snapshot})


def _cmd_prepare(args: argparse.Namespace) -> None:
    """The whole data half for one snapshot: ingest, validate+clean, features, apply, materialize."""
    from crossfit_mlops.data.ingest import ingest_snapshot
    from crossfit_mlops.data.validate import validate_and_clean
    from crossfit_mlops.features.build import build_feature_table
    from crossfit_mlops.features.store import apply_definitions, get_store, materialize_snapshot
    from crossfit_mlops.settings import get_settings
    from crossfit_mlops.storage import snapshot_time

    raw = ingest_snapshot(args.snapshot, rows=args.rows, seed=args.seed)
    cleaned = validate_and_clean(args.snapshot, min_valid_share=args.min_valid_share)
    tables = {v: build_feature_table(args.snapshot, v) for v in VERSIONS}
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


# --- the local stack and the runs it carries -----------------------------------------------------
def _start_api_if_champion(cfg) -> str:
    """The prediction API needs a champion to serve: start it once one exists."""
    from crossfit_mlops.ops import stack
    from crossfit_mlops.tracking.registry import NoChampion, champion_version

    stack.use_stack_clients(cfg)
    name = cfg.settings.registered_model_name
    if champion_version(cfg.settings.mlflow_tracking_uri, name) is None:
        return f"skipped: {NoChampion.missing(name)}"
    return stack.start_api(cfg)


def _print_up(cfg, status: dict[str, str], api: str) -> None:
    from crossfit_mlops.ops import stack

    secrets = cfg.secrets_path
    auth = f", basic-auth: user admin, password: mlflow_admin_password in {secrets}" if cfg.mlflow_auth else ""
    print(
        f"MLflow  ({status['mlflow']}): {cfg.mlflow_url}{auth}\n"
        f"Airflow ({status['airflow']}): {cfg.airflow_url}  user {stack.ADMIN_USER}, "
        f"password: admin_password in {secrets} (mode 0600)\n"
        f"API     ({api}): {cfg.api_url}/docs\n"
        f"profile {cfg.profile}, executor {cfg.executor}; services supervised by supervisord ({status['supervisor']}): "
        f"python -m crossfit_mlops stack status\n"
        f"logs: {cfg.log_dir}"
    )


def _cmd_stack(args: argparse.Namespace) -> None:
    import os

    from crossfit_mlops.ops import stack

    if args.profile:
        os.environ["CROSSFIT_PROFILE"] = args.profile
    cfg = stack.config_from_env()
    if args.action == "up":
        status = stack.up(cfg)
        _print_up(cfg, status, _start_api_if_champion(cfg))
    elif args.action == "down":
        stopped = stack.down(cfg)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    elif args.action in ("start", "stop"):
        if args.service not in stack.service_names(cfg):
            raise ValueError(f"unknown service {args.service!r}; services of this profile: {stack.service_names(cfg)}")
        if args.action == "start":
            print(f"{args.service}: {stack.start_service(cfg, args.service)}")
        else:
            print(f"{args.service}: {'stopped' if stack.stop_service(cfg, args.service) else 'was not running'}")
    else:
        rows = stack.describe(cfg)
        width = max(len(r["service"]) for r in rows)
        for row in rows:
            print(f"{row['service']:<{width}}  {row['state']:<9} {row['detail']:<32} {row['log']}")


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
    from crossfit_mlops.ops import stack
    from crossfit_mlops.ops.runs import format_summary, require_success, run_and_follow, summarize

    conf = _conf(args, snapshot=args.snapshot or None, rows=args.rows or None, sample_size=args.sample_size)
    cfg = stack.config_from_env()
    _require_server(cfg.airflow_url, "Airflow", AIRFLOW_SETTING)
    stack.use_stack_clients(cfg)  # MLflow's credential when basic-auth is on, bounded retries
    client = stack.airflow_client(cfg)
    stack.set_declared_variables(cfg, client)
    # batch inference is scheduled on the assets the training run updates: unpaused, it follows;
    # monitoring runs only when triggered (schedule None): unpaused, a trigger from the UI just runs
    for dag_id in (BATCH_DAG, MONITORING_DAG):
        client.wait_for_dag(dag_id)
        client.unpause(dag_id)
    run_id, run = run_and_follow(client, conf, timeout=args.timeout)
    require_success(client, TRAINING_DAG, run_id, run, stack.task_log_hint(cfg))
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
    from crossfit_mlops.ops import stack
    from crossfit_mlops.ops.runs import (
        format_monitoring,
        monitoring_outcome,
        require_success,
        run_and_follow,
    )
    from crossfit_mlops.storage import check_snapshot_id
    from crossfit_mlops.tracking import client as mlflow_client

    check_snapshot_id(args.snapshot)
    conf = _conf(args, snapshot=args.snapshot, season_shift=args.season_shift, rows=args.rows or None)
    cfg = stack.config_from_env()
    _require_server(cfg.airflow_url, "Airflow", AIRFLOW_SETTING)
    stack.use_stack_clients(cfg)  # MLflow's credential when basic-auth is on, bounded retries
    client = stack.airflow_client(cfg)
    run_id, run = run_and_follow(client, conf, dag_id=MONITORING_DAG, timeout=args.timeout)
    instances = require_success(client, MONITORING_DAG, run_id, run, stack.task_log_hint(cfg))
    outcome = monitoring_outcome(client, run_id, instances)
    if outcome is None:
        print("no @champion to monitor yet: run the training pipeline first")
        return
    experiment = mlflow_client(cfg.settings.mlflow_tracking_uri).get_experiment_by_name(MONITORING_EXPERIMENT)
    print(format_monitoring(outcome, cfg.mlflow_url, cfg.airflow_url, experiment.experiment_id))


# --- the registry and the API --------------------------------------------------------------------
def _check_registry_target(args: argparse.Namespace) -> None:
    """``card`` and ``lineage`` take a version number, ``uses`` a feature view name."""
    needs = {"card": "a version number", "lineage": "a version number", "uses": "a feature view name"}
    if args.action not in needs:
        return
    example = "athlete_features_v2" if args.action == "uses" else "3"
    if not args.target:
        raise CommandError(f"registry {args.action} needs {needs[args.action]}, e.g. `registry {args.action} {example}`")
    if args.action != "uses" and not (args.target.isdigit() and int(args.target) >= 1):
        raise CommandError(f"registry {args.action}: the version must be a whole number >= 1, got {args.target!r}")


def _cmd_registry(args: argparse.Namespace) -> None:
    from crossfit_mlops.ops import stack

    cfg = stack.config_from_env()  # the tracking URI follows CROSSFIT_MLFLOW_PORT, as the stack's
    stack.use_stack_clients(cfg)  # the stack's MLflow credential, if basic-auth is on
    settings = cfg.settings
    uri, name = settings.mlflow_tracking_uri, settings.registered_model_name
    _check_registry_target(args)
    _require_server(uri, "MLflow", MLFLOW_SETTING)
    if args.action == "rollback":
        from crossfit_mlops.registry.promotion import rollback

        old, new = rollback(uri, name, reason=args.reason or "rolled back by hand")
        print(f"@champion of {name}: v{old} -> v{new}")
    elif args.action == "card":
        from crossfit_mlops.registry.card import read_card

        print(read_card(uri, name, args.target))
    elif args.action == "history":
        from crossfit_mlops.tracking.history import history

        _emit(history(uri, name))
    elif args.action == "lineage":
        from crossfit_mlops.features.store import get_store
        from crossfit_mlops.registry.lineage import lineage

        _emit(lineage(uri, name, args.target, store=get_store(settings)))
    elif args.action == "uses":
        from crossfit_mlops.registry.lineage import versions_using

        _emit({"feature_view": args.target, "versions": versions_using(uri, name, args.target)})
    else:
        from crossfit_mlops.registry.promotion import versions_table

        _emit(versions_table(uri, name))


def _cmd_serve(args: argparse.Namespace) -> None:
    import os

    import uvicorn

    from crossfit_mlops.serving.app import build_app
    from crossfit_mlops.serving.http_guard import GuardedHttpToolsProtocol

    # The registry is polled every few seconds: MLflow's own HTTP retries (7, backing off for
    # about 4 minutes) would only hold up the answer "registry unreachable". The next poll is the
    # retry. Set these variables to override.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    app = build_app(refresh_seconds=args.refresh_seconds, max_batch=args.max_batch)
    # the protocol adds a limit on the request line + headers and deadlines for slow clients
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log,
        http=GuardedHttpToolsProtocol,
    )  # fmt: skip


def _cmd_predict_two_hop(args: argparse.Namespace) -> None:
    from crossfit_mlops.serving.two_hop import TwoHopClient
    from crossfit_mlops.settings import get_settings

    _require_server(get_settings().mlflow_tracking_uri, "MLflow", MLFLOW_SETTING)
    _require_server(args.endpoint, "the model server (mlflow models serve)", "--endpoint")
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


# --- the parser ----------------------------------------------------------------------------------
def _with_snapshot(p: argparse.ArgumentParser) -> None:
    p.add_argument("--snapshot", default=date.today().isoformat(), help="snapshot id (ISO date)")


def _with_size(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=FULL_SIZE, help="rows to generate")
    p.add_argument("--seed", type=int, default=42)


def _with_shift(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--season-shift", type=float, default=0.0,
        help="simulate a later season: lifts this much heavier, body weight half as much (0.1 = +10%%)",
    )


def _data_commands(sub) -> None:
    sub.add_parser("settings", help="print the resolved settings").set_defaults(func=_cmd_settings)

    p = sub.add_parser("generate", help="write a generated athletes.csv to --out")
    p.add_argument("--out", required=True)
    _with_snapshot(p)
    _with_size(p)
    _with_shift(p)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("ingest", help="create the raw snapshot (provided file or generated)")
    _with_snapshot(p)
    _with_size(p)
    _with_shift(p)
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("validate", help="validate + clean a raw snapshot (quarantine, report)")
    _with_snapshot(p)
    p.add_argument("--min-valid-share", type=float, default=None)
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("features", help="engineer feature tables of a cleaned snapshot")
    _with_snapshot(p)
    p.add_argument("--version", nargs="+", default=VERSIONS, choices=VERSIONS)
    p.set_defaults(func=_cmd_features)

    sub.add_parser("feast-apply", help="register the Feast definitions (idempotent)").set_defaults(func=_cmd_feast_apply)

    p = sub.add_parser("materialize", help="load a snapshot's features into the online store")
    _with_snapshot(p)
    p.add_argument("--version", nargs="+", default=VERSIONS, choices=VERSIONS)
    p.set_defaults(func=_cmd_materialize)

    p = sub.add_parser("prepare", help="ingest, validate, clean, engineer, apply and materialize")
    _with_snapshot(p)
    _with_size(p)
    p.add_argument("--min-valid-share", type=float, default=None)
    p.set_defaults(func=_cmd_prepare)


def _run_commands(sub) -> None:
    p = sub.add_parser("stack", help="the local stack's services, supervised by supervisord (no Docker)")
    p.add_argument("action", choices=["up", "down", "status", "start", "stop"])
    p.add_argument("service", nargs="?", help="start/stop: one service (mlflow, airflow-api-server, api, ...)")
    p.add_argument("--profile", choices=["local", "cluster"], default=None, help="default: CROSSFIT_PROFILE, else local")
    p.set_defaults(func=_cmd_stack)

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


def _model_commands(sub) -> None:
    p = sub.add_parser(
        "registry",
        help="the registered model: show, rollback, card VERSION, history, lineage VERSION, uses FEATURE_VIEW",
    )
    p.add_argument("action", choices=["show", "rollback", "card", "history", "lineage", "uses"])
    p.add_argument("target", nargs="?", help="a version (card, lineage) or a feature view (uses)")
    p.add_argument("--reason", default=None, help="rollback: why (recorded in the alias history)")
    p.set_defaults(func=_cmd_registry)

    p = sub.add_parser("serve", help="the prediction API (FastAPI + uvicorn) on @champion and Feast's online store")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument("--refresh-seconds", type=_positive(float), default=None, help="how often @champion is polled")
    p.add_argument("--max-batch", type=_positive(int), default=None, help="athletes per request (413 above)")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m crossfit_mlops", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _data_commands(sub)
    _run_commands(sub)
    _model_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return _run(args)
