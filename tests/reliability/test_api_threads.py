"""A LightGBM champion predicts small batches on the calling thread: no OpenMP thread pool.

On a busy machine a one-row prediction that starts every OpenMP thread waits for cores (measured
p50 7.5 ms / p99 90 ms against 0.08 / 0.45 ms single-threaded: ``benchmarks/bench_serving.py``).
The behaviour checked here is the cause: serving predictions start no thread. A fresh process per
check (an OpenMP pool, once started, stays), a real LightGBM model trained like the project's.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_CHECK = r"""
import os
import numpy as np
import lightgbm as lgb
from crossfit_mlops.serving.champion import fast_predictor

def threads():
    return len(os.listdir("/proc/self/task"))

rng = np.random.default_rng(0)
X = rng.random((3000, 6))
model = lgb.LGBMRegressor(n_estimators=50, n_jobs=1, verbose=-1).fit(X, X.sum(axis=1))
before = threads()
predict = fast_predictor(model, tuple(model.booster_.feature_name()))
assert predict is not None
for rows in (1, 2, 100):  # what the API sends (at most CROSSFIT_SERVING_MAX_BATCH rows)
    assert np.allclose(predict(X[:rows]), model.predict(X[:rows]))
print(before, threads())
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: OpenMP would start no thread anyway")
def test_small_batches_predict_without_starting_threads():
    env = {k: v for k, v in os.environ.items() if k not in {"OMP_NUM_THREADS", "OMP_THREAD_LIMIT"}}
    done = subprocess.run([sys.executable, "-c", _CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    before, after = map(int, done.stdout.split())
    assert after == before, f"predictions started {after - before} thread(s)"
