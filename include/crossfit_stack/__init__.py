"""The local stack beside the ML package: MLflow, Airflow and the prediction API as processes of
this machine, supervised by supervisord, and the command line that starts them and follows the
runs they carry (``python -m crossfit_stack``).

It imports :mod:`crossfit_mlops` (its settings, contract and CLI error path); ``crossfit_mlops``
never imports it (tests/unit/test_architecture.py). Modules, bottom up: ``config`` (settings and
profiles), ``hostnames``, ``supervisor`` and ``launch`` (the daemon and its per-service launcher),
``programs`` (each service's command line, environment, health), ``provision`` (secrets,
databases, bucket), ``control`` (up/down/status), ``airflow_rest`` and ``follow`` (Airflow's REST
API, following a run), ``log_server`` and ``preload`` (what runs inside Airflow), ``commands`` (the command line).
"""
