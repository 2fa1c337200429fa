"""Below the body: an oversized request line or header is refused (431), a client that sends its
head or body too slowly is dropped (408), and a boolean is not an athlete id (422).

The prediction API runs on :class:`GuardedHttpToolsProtocol` (``serve`` passes it to uvicorn);
here it serves a small echo app with short deadlines, over raw sockets, in this process.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from crossfit_mlops.serving.http_guard import GuardedHttpToolsProtocol
from tests.support.services import free_port


class QuickDeadlines(GuardedHttpToolsProtocol):
    head_timeout = 1.0
    body_timeout = 1.5


async def echo(scope, receive, send):
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(size).encode()})


@pytest.fixture(scope="module")
def server():
    import uvicorn

    port = free_port()
    config = uvicorn.Config(echo, host="127.0.0.1", port=port, http=QuickDeadlines, log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield port
    srv.should_exit = True
    thread.join(10)


def _read_all(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def test_a_normal_request_and_keep_alive_still_work(server):
    with _connect(server) as sock:
        for _ in range(3):
            sock.sendall(b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello")
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n1\r\n5\r\n0\r\n\r\n"), answer


def test_a_header_over_the_limit_is_431_and_the_connection_closed(server):
    with _connect(server) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nhost: a\r\nx-big: ")
        try:
            for _ in range(2000):  # up to 20 MB, as the probe sent; refused long before
                sock.sendall(b"a" * 10_000)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"headers_too_large" in answer


def test_a_long_request_line_is_431(server):
    with _connect(server) as sock:
        sock.sendall(b"GET /" + b"a" * 40_000 + b" HTTP/1.1\r\nhost: a\r\n\r\n")
        assert _read_all(sock).startswith(b"HTTP/1.1 431")


def test_a_head_sent_a_line_at_a_time_is_dropped_at_its_deadline(server):
    start = time.monotonic()
    with _connect(server) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\n")
        answer = b""
        for n in range(30):
            time.sleep(0.25)
            try:
                sock.sendall(f"x-line-{n}: 1\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request line and headers" in answer
    assert time.monotonic() - start < 5


def test_a_connection_that_sends_nothing_is_dropped(server):
    with _connect(server) as sock:
        start = time.monotonic()
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - start < 5


def test_a_body_at_one_byte_a_second_is_dropped_at_its_deadline(server):
    start = time.monotonic()
    with _connect(server) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 30\r\n\r\n")
        for _ in range(30):
            time.sleep(0.25)
            try:
                sock.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = _read_all(sock)
    assert b"408" in answer.split(b"\r\n", 1)[0] or answer == b"", answer[:200]
    assert time.monotonic() - start < 6


def test_a_boolean_is_not_an_athlete_id():
    from pydantic import ValidationError

    from crossfit_mlops.serving.schemas import PredictRequest

    for body in ({"athlete_id": True}, {"athlete_ids": [1, False]}):
        with pytest.raises(ValidationError, match="not a boolean"):
            PredictRequest.model_validate(body)
    assert PredictRequest.model_validate({"athlete_id": 1}).athlete_id == 1
