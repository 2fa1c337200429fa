"""The API's edge: limits checked before a body is parsed, strict JSON, one error shape.

Every request passes :class:`RequestGuard` (pure ASGI, in front of FastAPI's routing):

- a declared ``Content-Length`` above ``max_body_bytes`` is refused (413 ``body_too_large``) before
  a byte of the body is read; a body without one is read only up to the limit;
- a body with more ``:`` or ``,`` than ``max_items`` is refused (413 ``too_many_items``) without
  being parsed: every object key needs a ``:`` and every further array item a ``,``, so this bounds
  the keys and items (a valid request has no strings that could hold either). What a request can
  cost is then bounded by the limits, not by what a client sends;
- an exception that no handler turned into an answer becomes a 500 ``internal_error`` (traceback
  in the log, never in the body) and the connection stays usable.

Bodies are decoded by :func:`loads`: an integer too long for int64 becomes a float (so it fails
the range checks where it stands instead of Python's 4,300-digit int limit), nesting too deep or
bytes that are not UTF-8 are a JSON error (422), never a 400 in another shape.

Errors all have one shape, ``{"error": <code>, "detail": <message or list>, ...}``; the 422 keeps
FastAPI's ``detail`` list of ``{loc, msg, type}``, capped at :data:`MAX_ERRORS` entries, and an
input is echoed only when it is a short, finite scalar (never NaN, Infinity, a huge string or a
whole body: JSON cannot even encode the first two).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger(__name__)

MAX_ERRORS = 20  # entries of a 422's detail list; the total is given when more were found
_SHORT = 80  # characters of a string echoed in an error (loc entries, inputs)
_INT_DIGITS = 20  # longest integer literal parsed as an int: int64 has 19 digits, plus a sign


def error_body(error: str, detail: Any, **extra: Any) -> dict[str, Any]:
    """The one error shape."""
    return {"error": error, "detail": detail, **extra}


def error_response(status: int, error: str, detail: Any, headers: Mapping[str, str] | None = None, **extra: Any):
    return JSONResponse(error_body(error, detail, **extra), status_code=status, headers=headers)


# --- limits ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    """What one request may be: athletes or rows, body bytes, JSON keys and items."""

    max_batch: int
    max_body_bytes: int
    max_items: int


def largest_valid_request(max_batch: int, feature_names: list[list[str]]) -> tuple[int, int]:
    """(bytes, ``:``/``,`` count) of the largest valid request: ``max_batch`` instances of the widest
    feature set, each value written as the longest float JSON can hold."""
    widest = max(feature_names, key=lambda names: len(json.dumps(dict.fromkeys(names, 0))))
    row = dict.fromkeys(widest, -1.2345678901234567e-100)
    body = json.dumps({"instances": [row] * max_batch}).encode()
    return len(body), max(body.count(b":"), body.count(b","))


def _at_least(value: int | None, default: int, minimum: int, variable: str, why: str) -> int:
    if value is None:
        return default
    if value < minimum:
        raise ValueError(f"{variable}={value} is below {minimum}: {why}")
    return value


def request_limits(max_batch: int, feature_names: list[list[str]], max_body_bytes: int | None = None,
                   max_items: int | None = None) -> Limits:  # fmt: skip
    """The limits for ``max_batch`` athletes a request, with ``CROSSFIT_SERVING_MAX_BODY_BYTES`` and
    ``CROSSFIT_SERVING_MAX_ITEMS`` when they are set (the typed settings read them).

    Defaults: 1 MiB and 10,000, or twice the largest valid request if that is more (a larger
    ``CROSSFIT_SERVING_MAX_BATCH``). A value below the largest valid request would refuse valid
    requests: that is a configuration error, raised with the numbers.
    """
    if max_batch < 1:
        raise ValueError(f"CROSSFIT_SERVING_MAX_BATCH={max_batch}: at least one athlete per request")
    size, items = largest_valid_request(max_batch, feature_names)
    why = f"the largest valid request ({max_batch} instances, CROSSFIT_SERVING_MAX_BATCH) needs"
    return Limits(
        max_batch=max_batch,
        max_body_bytes=_at_least(max_body_bytes, max(2**20, 2 * size), size, "CROSSFIT_SERVING_MAX_BODY_BYTES", f"{why} {size} bytes"),
        max_items=_at_least(max_items, max(10_000, 2 * items), items, "CROSSFIT_SERVING_MAX_ITEMS", f"{why} {items} keys"),
    )


class _Refused(Exception):
    def __init__(self, response: Response):
        self.response = response


class RequestGuard:
    """Pure ASGI middleware: the limits before any parsing, and a last-resort 500 that keeps the
    connection (Starlette's own re-raises, and uvicorn then drops the keep-alive connection)."""

    def __init__(self, app, limits: Limits):
        self.app = app
        self.limits = limits

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self._check_declared_length(scope)
            body = await self._read_body(receive)
            if body is None:  # the client left before sending its body
                return
            self._check_items(body)
        except _Refused as refused:
            await refused.response(scope, receive, send)
            return
        await self._call_app(scope, _replay(body, receive), send)

    def _too_large(self, size: str) -> _Refused:
        limit = self.limits.max_body_bytes
        return _Refused(error_response(413, "body_too_large", f"the body has {size} bytes; the limit is {limit}", limit=limit))

    def _check_declared_length(self, scope) -> None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    raise _Refused(error_response(400, "bad_request", "Content-Length is not a number"))
                if int(value) > self.limits.max_body_bytes:
                    raise self._too_large(value.decode())

    async def _read_body(self, receive) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limits.max_body_bytes:
                raise self._too_large(f"more than {self.limits.max_body_bytes}")
            if not message.get("more_body", False):
                return chunk if not chunks else b"".join([*chunks, chunk])
            chunks.append(chunk)

    def _check_items(self, body: bytes) -> None:
        found = max(body.count(b":"), body.count(b","))
        if found > self.limits.max_items:
            limit = self.limits.max_items
            raise _Refused(error_response(
                413, "too_many_items",
                f"the body has {found} ':' or ',' separators (object keys, array items); the limit is {limit}",
                limit=limit,
            ))  # fmt: skip

    async def _call_app(self, scope, receive, send) -> None:
        started = False

        async def watched_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception:  # noqa: BLE001 - the last-resort guard: logged with its traceback, never hidden
            # the client gets one 500 in the API's error shape (no internals) and keeps its
            # connection; once a response has started there is nothing safe to send, so re-raise
            log.exception("unhandled error answering %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await error_response(500, "internal_error", "unexpected server error: the server log has the details")(
                scope, receive, send
            )


def _replay(body: bytes, receive):
    """A ``receive`` that hands the app the body already read, then waits for the disconnect."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# --- strict JSON -----------------------------------------------------------------------------------
def _parse_int(text: str) -> int | float:
    return int(text) if len(text) <= _INT_DIGITS else float(text)


def loads(body: bytes | str) -> Any:
    """JSON as FastAPI would parse it, with long integers as floats and every failure a JSON error."""
    try:
        return json.loads(body, parse_int=_parse_int)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", "", 0) from None
    except ValueError as exc:  # bytes that are not UTF-8 (or UTF-16/32) text
        raise json.JSONDecodeError(f"not JSON text: {str(exc)[:_SHORT]}", "", 0) from None


class _StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class EdgeRoute(APIRoute):
    """FastAPI's route, decoding JSON bodies with :func:`loads` (FastAPI's documented way to
    customise request parsing: a route class with its own Request)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_StrictJSONRequest(request.scope, request.receive))

        return strict


# --- errors ----------------------------------------------------------------------------------------
def _short(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _SHORT:
        return value[:_SHORT] + "..."
    return value


def _echoable(value: Any) -> bool:
    """A short, finite JSON scalar, safe to send back."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) < 10**18
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= _SHORT


def safe_error(error: Mapping[str, Any]) -> dict[str, Any]:
    """One validation error without anything unsafe or huge to send back."""
    out: dict[str, Any] = {
        "loc": [_short(part) for part in error.get("loc", ())],
        "msg": str(error.get("msg", ""))[:300],
        "type": str(error.get("type", "value_error")),
    }
    if "input" in error and _echoable(error["input"]):
        out["input"] = error["input"]
    ctx = error.get("ctx")
    if isinstance(ctx, Mapping):
        out["ctx"] = {str(k): v if _echoable(v) else _short(str(v)) for k, v in ctx.items()}
    return out


def validation_response(errors: list[Mapping[str, Any]]) -> JSONResponse:
    """422 ``invalid_input`` with the first :data:`MAX_ERRORS` errors."""
    extra = {"errors_total": len(errors)} if len(errors) > MAX_ERRORS else {}
    return error_response(422, "invalid_input", [safe_error(e) for e in errors[:MAX_ERRORS]], **extra)


_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def add_edge_handlers(app: FastAPI) -> None:
    """Validation and HTTP errors (FastAPI's and Starlette's own included) in the one shape."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(list(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(exc.status_code, code, _short(str(exc.detail)), headers=exc.headers)
