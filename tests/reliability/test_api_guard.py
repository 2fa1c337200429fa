"""The API's edge guard (``serving/edge.py``) on a real uvicorn server, around a small ASGI app.

The app is a stand-in for a handler with a bug (it raises) or one that must never be reached (a
refused body): the guard's own behaviour is what is checked.
"""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest
import uvicorn

from crossfit_mlops.serving.edge import Limits, RequestGuard
from tests.support.services import free_port


class _App:
    """Answers 200 with the body's length; raises on /bug. Records what reached it."""

    def __init__(self):
        self.reached: list[str] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        self.reached.append(scope["path"])
        if scope["path"] == "/bug":
            raise RuntimeError("secret internals")
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps({"length": len(body)}).encode()})


@pytest.fixture
def served():
    app = _App()
    port = free_port()
    config = uvicorn.Config(RequestGuard(app, Limits(max_batch=10, max_body_bytes=1000, max_items=50)),
                            host="127.0.0.1", port=port, log_level="critical", lifespan="off")  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield app, port
    server.should_exit = True
    thread.join(timeout=30)


def _post(conn, path: str, body: bytes):
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_an_unhandled_error_is_a_500_in_the_error_shape_and_the_connection_stays(served):
    _, port = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    status, body = _post(conn, "/bug", b"{}")
    assert status == 500 and body["error"] == "internal_error" and "secret" not in json.dumps(body)
    sock = conn.sock
    assert _post(conn, "/ok", b"{}") == (200, {"length": 2})
    assert conn.sock is sock, "the connection was dropped after the 500"
    conn.close()


def test_refused_bodies_never_reach_the_app(served):
    app, port = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    status, body = _post(conn, "/big", b" " * 1001)
    assert status == 413 and body == {"error": "body_too_large", "detail": "the body has 1001 bytes; the limit is 1000",
                                      "limit": 1000}  # fmt: skip
    status, body = _post(conn, "/keys", json.dumps({str(i): 1 for i in range(51)}).encode())
    assert status == 413 and body["error"] == "too_many_items" and body["limit"] == 50
    status, body = _post(conn, "/items", json.dumps(list(range(52))).encode())
    assert status == 413 and body["error"] == "too_many_items"
    assert _post(conn, "/ok", b" " * 1000) == (200, {"length": 1000})  # at the limit: through
    assert app.reached == ["/ok"]
    conn.close()
