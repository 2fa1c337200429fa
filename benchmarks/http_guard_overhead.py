"""What the HTTP guard (serving/http_guard.py) costs a request: uvicorn's plain httptools protocol
against the guarded one, each serving a tiny echo app in its own process, measured over one
keep-alive connection each, interleaved in blocks of 1,000 requests (5,000 each).

    python benchmarks/http_guard_overhead.py
"""

from __future__ import annotations

import multiprocessing
import socket
import statistics
import threading
import time

PORTS = {"httptools (before)": 18771, "guarded (after)": 18772}
REQUEST = (
    b"POST /predict HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\ncontent-length: 19\r\n\r\n"
    b'{"athlete_id": 254}'
)


async def _echo(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _serve(guarded: bool, port: int) -> None:
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from crossfit_mlops.serving.http_guard import GuardedHttpToolsProtocol

    protocol = GuardedHttpToolsProtocol if guarded else HttpToolsProtocol
    config = uvicorn.Config(_echo, host="127.0.0.1", port=port, http=protocol, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    time.sleep(3600)


def _measure(port: int, n: int) -> list[float]:
    milliseconds = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for _ in range(n):
            started = time.perf_counter()
            sock.sendall(REQUEST)
            answer = b""
            while not answer.endswith(b"ok"):
                answer += sock.recv(4096)
            milliseconds.append((time.perf_counter() - started) * 1000)
    return milliseconds


def main() -> None:
    servers = [
        multiprocessing.Process(target=_serve, args=(guarded, port), daemon=True)
        for guarded, port in zip((False, True), PORTS.values(), strict=True)
    ]
    for process in servers:
        process.start()
    time.sleep(4)
    results: dict[str, list[float]] = {name: [] for name in PORTS}
    for _ in range(5):
        for name, port in PORTS.items():
            results[name] += _measure(port, 1000)
    for name, values in results.items():
        q = statistics.quantiles(values, n=100)
        print(f"{name}: n={len(values)} p50={q[49]:.3f} ms p99={q[98]:.3f} ms")  # noqa: T201
    for process in servers:
        process.terminate()


if __name__ == "__main__":
    main()
