"""A slow challenger, for real: a fitted model whose ``predict`` first sleeps.

Logged with the scikit-learn flavour and registered like any version, so the API loads it through
the registry and scores with it on its shadow thread; the sleep is real time spent in ``predict``
(tests/integration/test_live_serving.py). The API process needs this repository on ``PYTHONPATH``
to unpickle it.
"""

from __future__ import annotations

import time
from typing import Any


class SlowRegressor:
    def __init__(self, model: Any, delay_s: float):
        self.model = model
        self.delay_s = delay_s

    def predict(self, frame):
        time.sleep(self.delay_s)
        return self.model.predict(frame)
