"""The common part of the fake REST exchanges: a real HTTP server on loopback, faults on demand, a log.

A fake subclasses `FakeRestServer` and answers `route(path, params)`; this base runs a
`ThreadingHTTPServer` on 127.0.0.1 (an ephemeral port) in a background thread, and before routing a
request it consumes the next queued fault, if any: `rate_limit_next` (429), `ban_next` (418, Binance's IP
ban), `fail_next` (503). Every request is logged with its monotonic receive time, so a test can check
that a client waited as long as `Retry-After` said.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class Reply:
    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    """Compact JSON, as the exchanges send it."""
    return Reply(status, json.dumps(payload, separators=(",", ":")), headers or {})


@dataclass(frozen=True)
class LoggedRequest:
    at: float  # time.monotonic() when the request arrived
    path: str
    params: dict[str, str]
    status: int


class FakeRestServer:
    """Base of the fake exchanges: a context manager serving `route` at `.url` until closed."""

    def __init__(self, port: int = 0) -> None:
        """Serve on 127.0.0.1:`port` (0: any free port, the usual; a fixed one when a URL is configured ahead)."""
        self._lock = threading.Lock()
        self._faults: deque[Reply] = deque()
        self._log: list[LoggedRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        # A short poll interval: `close` waits up to one interval for the serving loop to notice.
        serve = functools.partial(self._server.serve_forever, poll_interval=0.05)
        self._thread = threading.Thread(target=serve, name=type(self).__name__, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def route(self, path: str, params: dict[str, str]) -> Reply:
        raise NotImplementedError

    # Exchange-specific fault bodies; the status and Retry-After are what clients act on.
    def rate_limit_body(self) -> Any:
        return {"message": "Too many requests"}

    def ban_body(self) -> Any:
        return {"message": "IP banned"}

    def fail_body(self) -> Any:
        return {"message": "Service Unavailable"}

    def rate_limit_next(self, n: int = 1, retry_after_s: float | None = 1) -> None:
        """The next `n` requests get 429 (with `Retry-After: retry_after_s` unless None)."""
        self._queue(n, json_reply(self.rate_limit_body(), 429, _retry_after(retry_after_s)))

    def ban_next(self, n: int = 1, retry_after_s: float | None = 1) -> None:
        """The next `n` requests get 418 (Binance's ban for not backing off), with `Retry-After`."""
        self._queue(n, json_reply(self.ban_body(), 418, _retry_after(retry_after_s)))

    def fail_next(self, n: int = 1, status: int = 503) -> None:
        """The next `n` requests get a server error."""
        self._queue(n, json_reply(self.fail_body(), status))

    def clear_faults(self) -> None:
        """Drop the faults queued and not used up yet: the exchange is healthy again."""
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[LoggedRequest]:
        """Every request so far, oldest first."""
        with self._lock:
            return list(self._log)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _queue(self, n: int, reply: Reply) -> None:
        with self._lock:
            self._faults.extend([reply] * n)

    def _answer(self, target: str) -> Reply:
        at = time.monotonic()
        parts = urlsplit(target)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
        try:
            reply = fault or self.route(parts.path, params)
        except Exception as error:  # a bug in a fake should show as a 500 in the test, not a hang
            reply = json_reply({"message": f"fake server error: {error!r}"}, 500)
        with self._lock:
            self._log.append(LoggedRequest(at, parts.path, params, reply.status))
        return reply


def _retry_after(seconds: float | None) -> dict[str, str]:
    return {} if seconds is None else {"Retry-After": f"{seconds:g}"}


def _handler_for(owner: FakeRestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real APIs; every reply has a Content-Length

        def do_GET(self) -> None:
            reply = owner._answer(self.path)
            body = reply.body.encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the request log is `owner.requests`

    return Handler
