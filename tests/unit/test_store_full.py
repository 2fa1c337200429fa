"""A full store is recognised wherever it is raised, so the task fails at once instead of retrying."""

from __future__ import annotations

import errno

import pytest
import requests

from crossfit_mlops.tracking import store_full


def _http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} Server Error", response=response)


def _raised_from(cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as exc:
            raise RuntimeError("logging the model failed") from exc
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize("cause", [_http_error(507), OSError(errno.ENOSPC, "No space left on device"), OSError(errno.EDQUOT, "Disk quota exceeded")])
def test_a_full_store_is_named_even_when_wrapped(cause):
    message = store_full(_raised_from(cause))
    assert message is not None and ("artifact store is full" in message or "no space left on device" in message)


@pytest.mark.parametrize("cause", [_http_error(500), _http_error(503), OSError(errno.ECONNREFUSED, "Connection refused"), ValueError("bad")])
def test_other_errors_keep_their_retries(cause):
    assert store_full(_raised_from(cause)) is None
