"""Warm imports for Airflow's scheduler in the local stack.

LocalExecutor's workers are forked from the scheduler, and each task process is forked from a
worker. Importing the heavy libraries the tasks use (MLflow, Feast, scikit-learn, LightGBM,
CodeCarbon, pandas, matplotlib) once in the scheduler means every task starts with them already
loaded (shared copy-on-write), instead of spending 3-5 s of CPU importing them again. Only imports:
nothing here starts a thread or opens a connection (forking a process with live threads or an
initialized OpenMP pool is unsafe).

Wired by ``localstack`` through a generated ``$AIRFLOW_HOME/config/airflow_local_settings.py`` that
calls :func:`preload` in the ``airflow scheduler`` process only.
"""

from __future__ import annotations

import importlib
import logging
import time

log = logging.getLogger(__name__)

MODULES: tuple[str, ...] = (
    "pandas",
    "pyarrow.parquet",
    "sklearn.ensemble",
    "lightgbm",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
    "mlflow",
    "mlflow.sklearn",
    "mlflow.pyfunc",
    "mlflow.data.pandas_dataset",
    "codecarbon",
    "feast",
    "crossfit_mlops.training.train",
    "crossfit_mlops.features.store",
    "crossfit_mlops.registry.gate",
)


def preload(modules: tuple[str, ...] = MODULES) -> float:
    """Import ``modules``; return the seconds it took. A failing import is logged, never raised."""
    started = time.perf_counter()
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # a preload must never stop the scheduler
            log.warning("preload of %s failed", name, exc_info=True)
    try:
        # MLflow maps installed packages to modules on the first log_model (about 1.2 s, cached per
        # process); build the map once here. Private API: skipped if it moves.
        from mlflow.utils import requirements_utils

        requirements_utils._init_modules_to_packages_map()
        requirements_utils._init_packages_to_modules_map()
    except Exception:
        log.info("MLflow requirements map not preloaded", exc_info=True)
    return time.perf_counter() - started
