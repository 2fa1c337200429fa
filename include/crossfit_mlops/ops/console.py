"""How a command of either command line (``python -m crossfit_mlops``, the stack's
``python -m crossfit_stack``) meets the console: its result as JSON on stdout (:func:`emit`), and
its one error path (:func:`run_command`): a known failure is one line ``error: ...`` and exit 2,
an unexpected one is one line and exit 1 (``-v`` shows its traceback), never a silent fallback.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from typing import Any
from urllib.parse import urlsplit

from crossfit_mlops.data.schema import RawFileError


def emit(result: object) -> None:
    """A command's result as JSON on stdout (logs go to stderr)."""
    if is_dataclass(result):
        result = asdict(result)
    print(json.dumps(result, indent=2, default=str))


class CommandError(RuntimeError):
    """A bad argument or a missing precondition of a command; the message says what and where."""


def require_server(url: str, what: str, setting: str, timeout: float = 2.0) -> None:
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


def error_line(exc: Exception) -> str | None:
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


def run_command(args: argparse.Namespace) -> int:
    """Every command goes through here: a known failure is one line ``error: ...`` and exit 2; an
    unexpected one is one line and exit 1 (``-v`` shows its traceback)."""
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the one place a command's failure becomes its exit status
        line = error_line(exc)
        if line is not None:
            print(f"error: {line}", file=sys.stderr)
            return 2
        if args.verbose:
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"error: unexpected {type(exc).__name__}: {first} (run with -v for the traceback)", file=sys.stderr)
        return 1
    return 0


def command_line(prog: str, description: str | None, *groups: Callable[[Any], None]) -> argparse.ArgumentParser:
    """A CLI's parser: ``-v`` (debug logging) and one required subcommand, added by ``groups``
    (each gets the subparsers object); :func:`main_of` reads ``-v`` and runs the command."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in groups:
        add(sub)
    return parser


def main_of(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse ``argv`` with ``parser`` (whose commands set ``func``), log to stderr, run the command."""
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return run_command(args)
