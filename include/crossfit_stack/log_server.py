"""The task-log server of the local stack (LocalExecutor), on the stack's interface only.

Airflow's scheduler starts its own (``airflow scheduler`` without ``--skip-serve-logs``), which
binds every interface (``0.0.0.0`` and ``[::]``) whatever the stack's ``CROSSFIT_BIND_HOST``, and
whose failure to bind a taken port goes unnoticed (start-all succeeded; running tasks' logs could
not be served). The stack runs the scheduler with ``--skip-serve-logs`` and this program instead:
Airflow's own log-serving app, bound to ``--host``; supervisord starts it after a port check,
like the other services.

    python -m crossfit_stack.log_server --host 127.0.0.1 --port 8793
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m crossfit_stack.log_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(
        "airflow.utils.serve_logs.log_server:get_app", factory=True, host=args.host, port=args.port,
        log_level="warning", access_log=False,
    )  # fmt: skip


if __name__ == "__main__":
    main()
