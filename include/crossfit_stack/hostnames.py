"""Airflow's ``hostname_callable`` for the stack's processes (named in ``AIRFLOW__CORE__HOSTNAME_CALLABLE``
by :mod:`crossfit_stack.programs`). Airflow imports it in every component and task process: it
reads the two variables the stack sets through the typed settings, imported when first called."""

from __future__ import annotations

import socket


def worker_hostname() -> str:
    """Airflow's ``hostname_callable`` for the stack's Celery workers: ``worker1.<fqdn>``, so each
    task instance's ``hostname`` names the worker that ran it even when both workers share a
    machine (Airflow records the machine's name otherwise). Outside a worker: the plain name.
    The api-server reads finished task logs from the shared log folder, so the name need not
    resolve on one machine; workers on several machines keep the default callable."""
    from crossfit_mlops.settings import read_section
    from crossfit_stack.config import ProcessSettings

    name = read_section(ProcessSettings).worker_name
    fqdn = socket.getfqdn()
    return f"{name}.{fqdn}" if name else fqdn


def log_server_hostname() -> str:
    """Airflow's ``hostname_callable`` under the LocalExecutor: the address the task-log server
    listens on (``CROSSFIT_LOG_SERVER_HOST``, the stack's bind host), which the api-server then
    asks for a running task's log. The machine's name may resolve elsewhere (127.0.1.1 on Debian),
    where nothing listens. A wildcard bind host gives the machine's name."""
    from crossfit_mlops.settings import read_section
    from crossfit_stack.config import ProcessSettings

    host = read_section(ProcessSettings).log_server_host
    return host if host not in {"", "0.0.0.0", "::"} else socket.getfqdn()
