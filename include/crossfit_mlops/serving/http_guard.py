"""Limits below the body: the request line and headers, and clients that send them slowly.

uvicorn's httptools protocol (the fast one, kept for latency) buffers a request's head without a
limit and waits for it, and for a body, forever: a 20 MB header got a 200, a 150 MB one kept the
process 120 MB bigger, and a client sending a header line a second held its connection for as long
as it liked. :class:`GuardedHttpToolsProtocol` adds what is missing, in the protocol (the ASGI app
never sees such a request):

- a request line + headers over :data:`MAX_HEAD_BYTES` -> ``431`` and the connection closed,
  counted as the bytes arrive (before httptools has buffered more than one read past the limit);
- a head not complete :data:`HEAD_TIMEOUT_S` after its first byte (or after the connection opened)
  -> ``408``, closed;
- a body not complete :data:`BODY_TIMEOUT_S` after its head -> ``408``, closed.

Idle keep-alive connections are uvicorn's own ``timeout_keep_alive`` (5 s).
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 16 * 1024  # h11's default; a real client's head (a browser's) is well under 8 KiB
HEAD_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0  # a 1 MiB body (the body limit) needs 35 KB/s


def _refusal(status: int, reason: str, error: str, detail: str) -> bytes:
    body = json.dumps({"error": error, "detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head size limit and head / body deadlines."""

    max_head_bytes = MAX_HEAD_BYTES
    head_timeout = HEAD_TIMEOUT_S
    body_timeout = BODY_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._in_head = True
        self._heads_done = 0
        self._parsed_head = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._arm(self.head_timeout, "the request line and headers")

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow, what, seconds)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _refuse(self, payload: bytes) -> None:
        self._disarm()
        if not self.transport.is_closing():
            if self.cycle is None or not self.cycle.response_started:
                self.transport.write(payload)
            self.transport.close()

    def _too_slow(self, what: str, seconds: float) -> None:
        self._deadline = None
        detail = f"{what} did not arrive within {seconds:g} s"
        self._refuse(_refusal(408, "Request Timeout", "request_timeout", detail))

    def data_received(self, data: bytes) -> None:
        in_head, heads_done = self._in_head, self._heads_done
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._heads_done != heads_done:
            self._head_bytes = 0  # a head completed in this read: what follows starts afresh
        elif in_head and self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._too_large()

    def _too_large(self) -> None:
        detail = f"the request line and headers exceed {self.max_head_bytes} bytes"
        self._refuse(_refusal(431, "Request Header Fields Too Large", "headers_too_large", detail))

    def send_400_response(self, msg: str) -> None:
        if not self.transport.is_closing():  # nothing after a 431 or 408 already sent
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        if self.transport.is_closing():
            return
        super().on_message_begin()
        self._in_head = True
        self._parsed_head = 0
        self._arm(self.head_timeout, "the request line and headers")

    def on_url(self, url: bytes) -> None:
        self._parsed_head += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsed_head += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._heads_done += 1
        if self._parsed_head > self.max_head_bytes:  # a whole head over the limit in one read
            self._too_large()
            return
        self._arm(self.body_timeout, "the request body")
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.transport.is_closing():
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head = True
        if not self.transport.is_closing():
            super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
