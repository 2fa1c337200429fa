"""Feast's web UI over the stack's own feature registry, on the stack's interface only.

``feast ui`` reads ``feature_store.yaml`` from the current folder, whose committed paths point at
the project's default state directory: a stack with its own ``CROSSFIT_STATE_DIR`` (a test's) or
the cluster profile's SQL registry would show another registry, or none. This program builds the
store the way the pipeline does (:func:`crossfit_mlops.features.feast_repo.get_store`: the same
yaml with the settings' registry and online store) and serves Feast's own UI app on it (the React
UI, and the registry's REST API under ``/api/v1``). supervisord starts it after a port check, like
the other services; off unless ``CROSSFIT_FEAST_UI=1``.

Feast's UI app builds its REST API on Feast's gRPC registry server, which imports the packages of
Feast's ``grpcio`` extra (:data:`UI_PACKAGES`); without them it cannot start, and this program says
so in its log and exits 2 instead of a traceback.

    python -m crossfit_stack.feast_ui --host 127.0.0.1 --port 8888
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

# module -> the PyPI package of Feast's `grpcio` extra that holds it
UI_PACKAGES = {"grpc_health": "grpcio-health-checking", "grpc_reflection": "grpcio-reflection"}


def missing_packages() -> list[str]:
    """The packages Feast's UI needs that this environment lacks (PyPI names)."""
    return [package for module, package in UI_PACKAGES.items() if importlib.util.find_spec(module) is None]


def main(argv: list[str] | None = None) -> None:
    missing = missing_packages()
    if missing:
        sys.stderr.write(f"feast_ui: Feast's UI needs {', '.join(missing)} (feast[grpcio]), not installed here\n")
        sys.exit(2)
    import uvicorn
    from feast.ui_server import get_app

    from crossfit_mlops.features.feast_repo import get_store

    parser = argparse.ArgumentParser(prog="python -m crossfit_stack.feast_ui", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    store = get_store()
    # no CORS origins: the UI calls its API on its own origin (Feast's default since CVE-2024-11602)
    app = get_app(store, store.project)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
