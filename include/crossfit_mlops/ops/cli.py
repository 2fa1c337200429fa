"""``python -m crossfit_mlops <command>``: every stage of the data half, the registry and the API,
from the shell. The local stack and the runs it carries have their own command line
(``python -m crossfit_stack``, which imports this package, never the other way round).

Each data command prints a JSON result on stdout; logs go to stderr. Every command fails through
:mod:`crossfit_mlops.ops.console`: one line ``error: ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import date
from pathlib import Path

from crossfit_mlops.data.vocabulary import FULL_SIZE, MAX_ATHLETE_ID
from crossfit_mlops.features.specs import FEATURE_SETS
from crossfit_mlops.ops.console import CommandError, command_line, emit, main_of, require_server

MLFLOW_SETTING = "MLFLOW_TRACKING_URI or CROSSFIT_MLFLOW_PORT"
VERSIONS = list(FEATURE_SETS)
GIL_SWITCH_INTERVAL_S = 0.0001  # serve: see _cmd_serve


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

    emit(get_settings().describe())


def _cmd_generate(args: argparse.Namespace) -> None:
    from crossfit_mlops.data.generate import write_snapshot

    emit(
        write_snapshot(
            Path(args.out), rows=args.rows, seed=args.seed, snapshot_id=args.snapshot, season_shift=args.season_shift,
            max_athlete_id=args.max_athlete_id,
        )  # fmt: skip
    )


def _cmd_ingest(args: argparse.Namespace) -> None:
    from crossfit_mlops.data.ingest import ingest_snapshot

    emit(ingest_snapshot(args.snapshot, rows=args.rows, seed=args.seed, season_shift=args.season_shift))


def _cmd_validate(args: argparse.Namespace) -> None:
    from crossfit_mlops.data.validate import validate_and_clean

    emit(validate_and_clean(args.snapshot, min_valid_share=args.min_valid_share))


def _cmd_features(args: argparse.Namespace) -> None:
    from crossfit_mlops.features.build import build_feature_table

    emit({v: build_feature_table(args.snapshot, v) for v in args.version})


def _cmd_feast_apply(args: argparse.Namespace) -> None:
    from crossfit_mlops.features.feast_repo import apply_definitions

    emit({"applied": apply_definitions()})


def _cmd_materialize(args: argparse.Namespace) -> None:
    from crossfit_mlops.features.feast_repo import materialize_snapshot
    from crossfit_mlops.storage import snapshot_time

    materialize_snapshot(snapshot_time(args.snapshot), versions=tuple(args.version))
    emit({"materialized": args.version, "snapshot": args.snapshot})


def _cmd_prepare(args: argparse.Namespace) -> None:
    """The whole data half for one snapshot: ingest, validate+clean, features, apply, materialize."""
    from crossfit_mlops.data.ingest import ingest_snapshot
    from crossfit_mlops.data.validate import validate_and_clean
    from crossfit_mlops.features.build import build_feature_table
    from crossfit_mlops.features.feast_repo import (
        apply_definitions,
        get_store,
        materialize_snapshot,
    )
    from crossfit_mlops.settings import get_settings
    from crossfit_mlops.storage import location, snapshot_time

    raw = ingest_snapshot(args.snapshot, rows=args.rows, seed=args.seed)
    cleaned = validate_and_clean(args.snapshot, min_valid_share=args.min_valid_share)
    tables = {v: build_feature_table(args.snapshot, v) for v in VERSIONS}
    store = get_store()
    apply_definitions(store=store)
    materialize_snapshot(snapshot_time(args.snapshot), store=store)
    emit({"raw": asdict(raw), "cleaned": asdict(cleaned), "features": tables})
    settings = get_settings()
    report = json.loads(location(cleaned.report_path, settings).read_text())
    print(
        f"\nsnapshot {args.snapshot}: {report['rows_in']} raw rows, {report['rows_quarantined']} "
        f"quarantined, {report['rows_out']} clean ({report['share_out']:.1%}); report: {cleaned.directory}\n"
        f"Feast registry: {settings.feast_registry_path}\nonline store:   {settings.feast_online_store_path}"
    )


# --- commands that moved to the stack's command line ----------------------------------------------
MOVED = {"stack": "python -m crossfit_stack", "pipeline": "python -m crossfit_stack pipeline",
         "monitor": "python -m crossfit_stack monitor"}  # fmt: skip


def _cmd_moved(args: argparse.Namespace) -> None:
    """``stack``, ``pipeline`` and ``monitor`` run from the stack's command line now: say so, run nothing."""
    old = " ".join(["python -m crossfit_mlops", args.command, *args.rest])
    new = " ".join([MOVED[args.command], *args.rest])  # `stack up` -> `python -m crossfit_stack up`
    raise CommandError(f"`{old}` moved to the stack's command line: run `{new}`")


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


def registry_command(args: argparse.Namespace, settings=None) -> None:
    """``registry ACTION [TARGET]`` on ``settings`` (default: from the environment; the tracking
    URI follows ``CROSSFIT_MLFLOW_PORT``). MLflow's credential, if its server asks for one, comes
    from ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``; ``python -m crossfit_stack registry`` runs this
    with the stack's settings and credential."""
    from crossfit_mlops.settings import get_settings

    settings = settings or get_settings()
    uri, name = settings.mlflow_tracking_uri, settings.registered_model_name
    _check_registry_target(args)
    require_server(uri, "MLflow", MLFLOW_SETTING)
    if args.action == "rollback":
        from crossfit_mlops.registry.promotion import rollback

        old, new = rollback(uri, name, reason=args.reason or "rolled back by hand")
        print(f"@champion of {name}: v{old} -> v{new}")
    elif args.action == "card":
        from crossfit_mlops.registry.card import read_card

        print(read_card(uri, name, args.target))
    elif args.action == "history":
        from crossfit_mlops.tracking.history import history

        emit(history(uri, name))
    elif args.action == "lineage":
        from crossfit_mlops.features.feast_repo import get_store
        from crossfit_mlops.registry.lineage import lineage

        emit(lineage(uri, name, args.target, store=get_store(settings)))
    elif args.action == "uses":
        from crossfit_mlops.registry.lineage import versions_using

        emit({"feature_view": args.target, "versions": versions_using(uri, name, args.target)})
    else:
        from crossfit_mlops.registry.promotion import versions_table

        emit(versions_table(uri, name))


def _cmd_catalog(args: argparse.Namespace) -> None:
    """The feature catalog as Markdown (to ``--out`` or stdout); with ``--tracking-uri``, plus the
    registered versions trained on each feature (their lineage tags)."""
    from crossfit_mlops.features.catalog import render_catalog
    from crossfit_mlops.storage import check_output_file, publishing

    if args.out is not None:
        check_output_file(args.out, "--out")  # refused before the registry is asked anything
    usage = None
    if args.tracking_uri:
        from crossfit_mlops.registry.lineage import versions_using
        from crossfit_mlops.settings import get_settings

        require_server(args.tracking_uri, "MLflow", "--tracking-uri")
        name = args.model or get_settings().registered_model_name
        views = [fs.view_name for fs in FEATURE_SETS.values()]
        usage = {view: versions_using(args.tracking_uri, name, view) for view in views}
    page = render_catalog(usage, registry=args.tracking_uri or "")
    if args.out is None:
        print(page, end="")
        return
    with publishing(args.out, directory=False) as tmp:  # never a half-written page
        tmp.write_text(page)
    emit({"catalog": str(args.out), "model_versions": usage is not None})


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
    # The prediction log's writer and the shadow challenger run Python on background threads. The
    # event loop, back from waiting on its sockets, waits for the GIL up to the switch interval
    # (5 ms by default) while one of them computes, and again at each socket or SQLite call of the
    # answer: that was the p99 at c=1 (1.2 -> 6-13 ms with both on). 0.1 ms bounds each wait.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    app = build_app(refresh_seconds=args.refresh_seconds, max_batch=args.max_batch)
    # the protocol adds a limit on the request line + headers and deadlines for slow clients
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log,
        http=GuardedHttpToolsProtocol,
    )  # fmt: skip


def _cmd_predict_two_hop(args: argparse.Namespace) -> None:
    from crossfit_mlops.serving.two_hop import TwoHopClient
    from crossfit_mlops.settings import get_settings

    require_server(get_settings().mlflow_tracking_uri, "MLflow", MLFLOW_SETTING)
    require_server(args.endpoint, "the model server (mlflow models serve)", "--endpoint")
    client = TwoHopClient(args.endpoint)
    predictions = client.predict(args.athlete_id)
    emit(
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
    p.add_argument(
        "--max-athlete-id", type=int, default=MAX_ATHLETE_ID,
        help=f"unique ids are drawn from 1..N (default {MAX_ATHLETE_ID}, the real file's range, so at most that many "
        "--rows); larger for a scale run: ids beyond the real data",
    )  # fmt: skip
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


def _moved_commands(sub) -> None:
    for name, new in MOVED.items():
        # every word after the command is kept as given, options included: no word is an option
        # of this parser, whose only option prefix is a character none of them starts with
        p = sub.add_parser(name, help=f"moved: {new} ...", add_help=False, prefix_chars="\0")
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=_cmd_moved)


def add_registry_command(sub) -> argparse.ArgumentParser:
    """The ``registry`` subcommand (also on the stack's command line, with the stack's credential)."""
    p = sub.add_parser(
        "registry",
        help="the registered model: show, rollback, card VERSION, history, lineage VERSION, uses FEATURE_VIEW",
    )
    p.add_argument("action", choices=["show", "rollback", "card", "history", "lineage", "uses"])
    p.add_argument("target", nargs="?", help="a version (card, lineage) or a feature view (uses)")
    p.add_argument("--reason", default=None, help="rollback: why (recorded in the alias history)")
    p.set_defaults(func=registry_command)
    return p


def _model_commands(sub) -> None:
    add_registry_command(sub)

    p = sub.add_parser("catalog", help="the feature catalog (Markdown): every feature, its bounds, views, services")
    p.add_argument("--out", type=Path, default=None, help="write it here (default: stdout), e.g. docs/feature-catalog.md")
    p.add_argument("--tracking-uri", default=None, help="add the registered model versions trained on each feature")
    p.add_argument("--model", default=None, help="the registered model (default: CROSSFIT_REGISTERED_MODEL_NAME's)")
    p.set_defaults(func=_cmd_catalog)

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
    return command_line("python -m crossfit_mlops", __doc__, _data_commands, _moved_commands, _model_commands)


def main(argv: list[str] | None = None) -> int:
    return main_of(build_parser(), argv)
