"""The machinery shared by the fake exchange WebSocket servers: a real server, faults, and what it saw.

`FakeExchangeWs` runs a `websockets` server on loopback in a thread with its own event loop, so a test
can drive a client in its own loop (or none) and still change the server's behaviour while it runs.
Each connection receives the replay's frames that happen while it is open, at their pace. Faults are
armed for the next connection the server accepts; everything the server did is recorded per
connection (`connections`) so tests assert on facts, not timings.

Subclasses (`FakeBinanceWs`, `FakeCoinbaseWs`) decide which paths they serve, what a frame looks like
on the wire and how a client subscribes.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from tests.fakes.recording import LiveReplay

log = logging.getLogger(__name__)


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class ServedConnection:
    """What the server did on one connection."""

    number: int  # 1 for the first connection accepted
    path: str
    opened_us: int
    closed_us: int | None = None
    sent: list[int] = field(default_factory=list)  # indices of the recording's frames sent, in order
    injected: int = 0
    pongs: int = 0
    close_code: int | None = None
    closed_by: str = ""  # "client", "server", "abort" (TCP dropped by the server) or "lost"

    @property
    def frames_sent(self) -> int:
        return len(self.sent)


@dataclass
class Faults:
    """Faults armed for one connection; counts are frames of the recording sent on that connection."""

    drop_after: int | None = None
    stall_after: int | None = None
    stall_s: float = 0.0
    notice_after: int | None = None
    refuse_s: float = 0.0  # after the drop, refuse new connections (HTTP 503) for this long


@dataclass(eq=False)
class Session:
    """A connection being served (lives in the server's thread)."""

    conn: ServerConnection
    record: ServedConnection
    faults: Faults
    flowing: asyncio.Event  # cleared while the connection is stalled: nothing is sent, nothing read
    aborted: bool = False
    state: dict[str, Any] = field(default_factory=dict)  # the subclass's per-connection state


class FakeExchangeWs:
    """Base of the fake exchange servers; use as a context manager and connect to `url`."""

    def __init__(
        self,
        replay: LiveReplay,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ping_interval_s: float | None = 20.0,
        ping_timeout_s: float = 60.0,
        lifetime_s: float | None = None,
    ) -> None:
        self.replay = replay
        self.host = host
        self.port = port
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.lifetime_s = lifetime_s  # read when a connection opens: each is closed after it (1001)
        start = replay.start.timestamp()
        self._due = [start + frame.at_s / replay.speed for frame in replay.recording.frames]
        self._lock = threading.Lock()
        self._records: list[ServedConnection] = []
        self._pending = Faults()
        self._refuse_until = 0.0
        self.refused = 0  # connection attempts answered with HTTP 503
        self._sessions: set[Session] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None

    # Lifecycle -------------------------------------------------------------------------------------

    def start(self) -> Self:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=type(self).__name__, daemon=True)
        self._thread.start()
        self._server = self._call(self._start_server(), timeout=5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def close(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._server is not None:
            self._call(self._stop_server(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
        self._loop = self._thread = self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    # Fault knobs (thread-safe; they apply to the next connection accepted) -------------------------

    def drop_next_connection_after(self, n_frames: int, refuse_s: float = 0.0) -> None:
        """Drop the TCP connection (no close frame) after `n_frames` frames, then answer connection
        attempts with HTTP 503 for `refuse_s` seconds (an outage, so the client surely misses trades)."""
        with self._lock:
            self._pending.drop_after, self._pending.refuse_s = n_frames, refuse_s

    def stall_next_connection_after(self, n_frames: int, seconds: float) -> None:
        """After `n_frames` frames, keep the socket open but send (and read) nothing for `seconds`."""
        with self._lock:
            self._pending.stall_after, self._pending.stall_s = n_frames, seconds

    def inject(self, text: str) -> int:
        """Send a raw text frame to every open connection now; returns on how many it was sent."""
        return int(self._call(self._inject(text), timeout=5))

    # What happened ---------------------------------------------------------------------------------

    @property
    def connections(self) -> list[ServedConnection]:
        """A snapshot of every connection accepted so far, oldest first."""
        with self._lock:
            return copy.deepcopy(self._records)

    @property
    def connections_accepted(self) -> int:
        with self._lock:
            return len(self._records)

    @property
    def frames_sent(self) -> list[int]:
        """Frames of the recording sent, per connection."""
        with self._lock:
            return [len(record.sent) for record in self._records]

    @property
    def pongs_received(self) -> int:
        with self._lock:
            return sum(record.pongs for record in self._records)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return sum(record.closed_us is None for record in self._records)

    # For subclasses ----------------------------------------------------------------------------------

    def accepts(self, path: str) -> bool:
        """Whether a request path is served (else HTTP 404)."""
        return True

    async def produce(self, session: Session) -> None:
        """Send what this exchange sends on a connection (runs until done or cancelled)."""
        raise NotImplementedError

    async def on_client_message(self, session: Session, text: str) -> None:
        """A message from the client (subscribe requests)."""

    async def send_notice(self, session: Session) -> None:
        """Announce a shutdown on `session` (exchanges that have such a notice)."""

    def happened(self) -> int:
        """How many frames of the recording have happened by now."""
        return self.replay.happened()

    async def play(self, session: Session, render: Callable[[int], str | None], start: int) -> None:
        """Send frames from `start` on, each when it happens, as `render(index)` (None: not for this client).

        Frames that happen while the connection is stalled are missed, as they would be live.
        """
        frames = len(self._due)
        index = start
        await self._apply_faults(session)
        while index < frames and not session.aborted:
            delay = self._due[index] - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            text = render(index)
            if text is not None:
                await session.conn.send(text)
                with self._lock:
                    session.record.sent.append(index)
                if await self._apply_faults(session):
                    index = max(index, self.happened() - 1)
            index += 1

    async def send(self, session: Session, text: str) -> None:
        """Send a frame unless the connection is stalled (then wait until it is not)."""
        await session.flowing.wait()
        await session.conn.send(text)

    # Internals ----------------------------------------------------------------------------------------

    def _call(self, coroutine: Any, timeout: float) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _start_server(self) -> Server:
        return await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._check_request,
            ping_interval=None,  # the server's pings are sent by `_pinger`, which counts the pongs
            close_timeout=1,
        )

    async def _stop_server(self) -> None:
        assert self._server is not None
        for session in list(self._sessions):
            session.flowing.set()
            session.conn.transport.resume_reading()
        self._server.close()
        await self._server.wait_closed()

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if not self.accepts(request.path):
            return connection.respond(404, f"no stream at {request.path}\n")
        with self._lock:
            if time.time() < self._refuse_until:
                self.refused += 1
                return connection.respond(503, "temporarily unavailable\n")
        return None

    async def _handle(self, conn: ServerConnection) -> None:
        with self._lock:
            record = ServedConnection(len(self._records) + 1, conn.request.path if conn.request else "", now_us())
            self._records.append(record)
            faults, self._pending = self._pending, Faults()
        flowing = asyncio.Event()
        flowing.set()
        session = Session(conn, record, faults, flowing)
        self._sessions.add(session)
        tasks = [asyncio.ensure_future(self._produce(session))]
        if self.ping_interval_s is not None:
            tasks.append(asyncio.ensure_future(self._pinger(session, self.ping_interval_s)))
        if self.lifetime_s is not None:
            tasks.append(asyncio.ensure_future(self._cut_after(session, self.lifetime_s)))
        try:
            async for message in conn:
                await self.on_client_message(session, message if isinstance(message, str) else message.decode())
        except ConnectionClosed:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._sessions.discard(session)
            with self._lock:
                record.closed_us = now_us()
                record.close_code = conn.close_code
                record.closed_by = _closed_by(session)

    async def _produce(self, session: Session) -> None:
        try:
            await self.produce(session)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("fake server: producing for connection %d failed", session.record.number)
            raise

    async def _apply_faults(self, session: Session) -> bool:
        """Apply the faults due after the frames sent so far; True if the connection stalled."""
        sent, faults = len(session.record.sent), session.faults
        if faults.drop_after is not None and sent >= faults.drop_after:
            faults.drop_after = None
            with self._lock:
                self._refuse_until = time.time() + faults.refuse_s
            session.aborted = True
            session.conn.transport.abort()
            return False
        if faults.notice_after is not None and sent >= faults.notice_after:
            faults.notice_after = None
            await self.send_notice(session)
        if faults.stall_after is not None and sent >= faults.stall_after:
            faults.stall_after = None
            session.flowing.clear()
            session.conn.transport.pause_reading()  # pings unanswered too: the connection is silent
            try:
                await asyncio.sleep(faults.stall_s)
            finally:
                session.conn.transport.resume_reading()
                session.flowing.set()
            return True
        return False

    async def _pinger(self, session: Session, interval_s: float) -> None:
        """Ping like Binance and drop a connection whose pong does not come in time."""
        while True:
            await asyncio.sleep(interval_s)
            await session.flowing.wait()
            try:
                pong = await session.conn.ping()
                await asyncio.wait_for(pong, self.ping_timeout_s)
            except ConnectionClosed:
                return
            except TimeoutError:
                if session.flowing.is_set():
                    await session.conn.close(CloseCode.POLICY_VIOLATION, "pong timeout")
                    return
                continue
            with self._lock:
                session.record.pongs += 1

    async def _cut_after(self, session: Session, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await session.conn.close(CloseCode.GOING_AWAY, "connection lifetime reached")

    async def _inject(self, text: str) -> int:
        count = 0
        for session in list(self._sessions):
            if session.aborted or not session.flowing.is_set():
                continue
            try:
                await session.conn.send(text)
            except ConnectionClosed:
                continue
            with self._lock:
                session.record.injected += 1
            count += 1
        return count


def _closed_by(session: Session) -> str:
    if session.aborted:
        return "abort"
    protocol = session.conn.protocol
    if protocol.close_rcvd is not None and (protocol.close_sent is None or protocol.close_rcvd_then_sent):
        return "client"
    if protocol.close_sent is not None:
        return "server"
    return "lost"
