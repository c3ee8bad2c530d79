"""A webhook receiver on loopback: records every JSON body POSTed to it; fails the next n on demand, or
holds every request until released (a receiver that is slow to answer)."""

from __future__ import annotations

import functools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class FakeWebhook:
    def __init__(self, port: int = 0) -> None:
        self._lock = threading.Lock()
        self._bodies: list[dict[str, Any]] = []
        self._fail: list[int] = []
        self.attempts = 0
        self.released = threading.Event()
        self.released.set()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        serve = functools.partial(self._server.serve_forever, poll_interval=0.05)
        self._thread = threading.Thread(target=serve, name="FakeWebhook", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks/candlelake"

    @property
    def received(self) -> list[dict[str, Any]]:
        """The bodies answered with 200, oldest first."""
        with self._lock:
            return list(self._bodies)

    def fail_next(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._fail.extend([status] * n)

    def hold(self) -> None:
        """Answer no request until `released.set()`."""
        self.released.clear()

    def _take(self, body: dict[str, Any]) -> int:
        self.released.wait(timeout=30)
        with self._lock:
            self.attempts += 1
            if self._fail:
                return self._fail.pop(0)
            self._bodies.append(body)
            return 200

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler_for(owner: FakeWebhook) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            status = owner._take(json.loads(self.rfile.read(length) or b"{}"))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
