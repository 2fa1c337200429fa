"""The scheduler's preload is a warm-up: a failure is logged as a warning with its traceback and
never raised (the tasks import what they need themselves)."""

from __future__ import annotations

import logging

from crossfit_stack.preload import preload


def test_a_failing_preload_is_a_warning_not_an_error(caplog):
    with caplog.at_level(logging.WARNING, logger="crossfit_stack.preload"):
        seconds = preload(("crossfit_mlops_no_such_module",))
    assert seconds >= 0
    failed = [r for r in caplog.records if "crossfit_mlops_no_such_module" in r.getMessage()]
    assert failed and failed[0].levelno == logging.WARNING and failed[0].exc_info is not None
