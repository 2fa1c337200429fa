"""Warm imports for Airflow's scheduler in the local stack.

LocalExecutor's workers are forked from the scheduler, and each task process is forked from a
worker. Importing the heavy libraries the tasks use (MLflow, Feast, scikit-learn, LightGBM,
CodeCarbon, pandas, matplotlib) once in the scheduler means every task starts with them already
loaded (shared copy-on-write), instead of importing them again. It also runs CodeCarbon's hardware
probe once (cpuinfo, TDP lookup), whose result CodeCarbon caches per process, and draws one figure
(fonts, glyph caches). Nothing here leaves a thread running or a connection open (forking a process
with live threads or an initialized OpenMP pool is unsafe); :func:`preload` checks that and says
so. What each of these saves a task: docs/decisions/0102-scheduler-preload.md.

A Celery worker's pool processes are forked from the ``airflow celery worker`` process, and each
task process from a pool process: the same preload there spares every Celery task the imports.

Wired through ``$AIRFLOW_HOME/config/airflow_local_settings.py`` (:data:`LOCAL_SETTINGS`), which
calls :func:`preload` in the ``airflow scheduler`` and ``airflow celery worker`` processes only: the local stack writes it, and
the Astro image's Dockerfile writes the same file.
"""

from __future__ import annotations

import importlib
import logging
import tempfile
import threading
import time

log = logging.getLogger(__name__)

LOCAL_SETTINGS = """\
# Generated from crossfit_stack.preload: warm the task imports in the processes whose forks run
# the tasks: the scheduler (LocalExecutor) and a Celery worker (its prefork pool). Other Airflow
# processes are left alone, and so is a scheduler whose environment names the CeleryExecutor (it
# runs no task: the image's file is the same in workers mode, where the preload only delayed it).
import os
import sys

_celery = "CeleryExecutor" in os.environ.get("AIRFLOW__CORE__EXECUTOR", "")
if (sys.argv[1:2] == ["scheduler"] and not _celery) or sys.argv[1:3] == ["celery", "worker"]:
    from crossfit_stack.preload import preload

    preload()
"""

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
    # imported lazily by a training run's first MLflow calls: start_run's git
    # context (GitPython), log_model's pyfunc load (tracing, OpenTelemetry), dataset handling
    "git",
    "mlflow.tracing.processor.base_mlflow",
    "narwhals",
    "crossfit_mlops.training.train",
    "crossfit_mlops.features.feast_repo",
    "crossfit_mlops.registry.promotion",
)


def preload(modules: tuple[str, ...] = MODULES) -> float:
    """Import ``modules``; return the seconds it took. A failing import is logged, never raised."""
    started = time.perf_counter()
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a preload must never stop the scheduler; tasks import it themselves
            log.warning("preload of %s failed (each task imports it itself: slower, same result)", name, exc_info=True)
    try:
        # MLflow maps installed packages to modules on the first log_model (cached per process);
        # build the map once here. Private API: skipped if it moves.
        from mlflow.utils import requirements_utils

        requirements_utils._init_modules_to_packages_map()
        requirements_utils._init_packages_to_modules_map()
    except Exception:  # noqa: BLE001 - private API: a change in it must not stop the scheduler
        log.warning("MLflow requirements map not preloaded (each task's first log_model builds it)", exc_info=True)
    warm_codecarbon()
    warm_matplotlib()
    extra = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if extra:
        log.warning("preload left threads running before fork: %s", extra)
    return time.perf_counter() - started


def warm_codecarbon() -> bool:
    """Fill CodeCarbon's per-process hardware cache with the probe a training run would do.

    The tracker is built by the same factory as the training runs, so the cache key (tracking mode,
    forced powers, GPU ids) matches; it is never started, so no sampling thread exists. Uses a
    private method of CodeCarbon 3.3: if it moves, tasks simply probe for themselves.
    """
    try:
        from crossfit_mlops.training.train import emissions_tracker

        with tempfile.TemporaryDirectory() as tmp:
            tracker = emissions_tracker("preload", "USA", tmp, "preload.csv")
            tracker._ensure_hardware_ready()
        return True
    except Exception:  # noqa: BLE001 - a warm-up only: the task's own tracker probes again and fails loudly
        log.warning("CodeCarbon hardware probe not preloaded (each task probes itself)", exc_info=True)
        return False


def warm_matplotlib() -> bool:
    """Draw each kind of per-run plot once, small: loads the fonts, glyph caches and layout code each
    task would load on its first plots."""
    try:
        import io

        from crossfit_mlops.training.plots import (
            feature_importance,
            predicted_vs_actual,
            residuals,
        )

        for fig in (
            predicted_vs_actual([1.0, 2.0], [1.0, 2.5], "preload\nwarm"),
            residuals([1.0, 2.0, 3.0], [1.5, 2.0, 2.5], "preload"),
            feature_importance(["a", "b"], [0.3, 0.7], "preload"),
        ):
            fig.savefig(io.BytesIO(), format="png")
        return True
    except Exception:  # noqa: BLE001 - a warm-up only: the task's own plots fail loudly if matplotlib does
        log.warning("matplotlib not warmed (each task loads its fonts itself)", exc_info=True)
        return False
