"""A real webhook receiver for the alert tests: ``http.server`` on 127.0.0.1 (a free port) in a
thread, recording every JSON POST; it can answer slowly or with an error status."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)  # the JSON bodies, in arrival order
    headers: list[dict[str, str]] = field(default_factory=list)
    status: int = 200
    delay_s: float = 0.0

    def events(self, event: str, **match: Any) -> list[dict[str, Any]]:
        """The posts of ``event`` whose top-level fields equal ``match``."""
        return [p for p in list(self.posts) if p.get("event") == event and all(p.get(k) == v for k, v in match.items())]

    def wait_for(self, event: str, timeout: float = 60.0, **match: Any) -> dict[str, Any]:
        """The first post of ``event`` matching ``match``; fails after ``timeout`` with what arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(event, **match)
            if found:
                return found[0]
            time.sleep(0.2)
        raise AssertionError(f"no {event} alert matching {match} within {timeout}s; received: {self.posts}")


@contextmanager
def webhook_receiver(status: int = 200, delay_s: float = 0.0) -> Iterator[Receiver]:
    """A receiver at ``http://127.0.0.1:<free port>/alerts``, stopped afterwards."""
    receiver = Receiver(url="", status=status, delay_s=delay_s)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            receiver.headers.append(dict(self.headers))
            receiver.posts.append(json.loads(body))
            time.sleep(receiver.delay_s)
            self.send_response(receiver.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
