"""One exchange WebSocket feed kept alive forever: reconnects, a watchdog, keepalive pings, planned rotation.

Exchange-agnostic: a connector (`binance_ws`, `coinbase_ws`) gives the URL, a message handler and an
optional `on_open` coroutine that sends subscribe messages; this module owns the connections' lives and
reports them as events:

- `Reconnected` on every successful connect (`first` for the feed's first one);
- `Disconnect` for every interval without a working connection, from the moment the old one failed or
  went quiet to the moment the new one is open, with the cause in words. The trades of that interval
  were missed: the pipeline backfills them over REST.

A planned rotation (a connection's `lifetime_s` is up, or the exchange announced a shutdown) opens the
new connection first and lets both deliver for `overlap_s`, so nothing is missed; the trades of the
overlap arrive twice and the pipeline drops the duplicates by trade id.

The library's own reconnecting iterator (`async for ws in websockets.connect(...)`) is not used: its
backoff is set only through environment variables, it cannot overlap two connections, and it does not
say how long the feed was blind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import CLOSE_CODE_EXPLANATIONS, CloseCode

from candlelake.sources.events import Disconnect, Emit, Reconnected
from candlelake.util import now_us

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, int], str | None]
"""`(message text, receive time in epoch µs)`; emits the connector's events itself. Returns None, or the
reason to replace the connection now (an exchange's shutdown notice), which starts a planned rotation."""

OnOpen = Callable[[ClientConnection], Awaitable[None]]
"""Runs on each new connection before any message is read: send the subscribe messages here."""

# Status codes with which exchanges refuse connections from an address that connects too often.
_RATE_LIMITED = (418, 429)


@dataclass(frozen=True, slots=True)
class FeedSettings:
    """How a feed's connections are watched and replaced; the defaults suit a live exchange."""

    watchdog_s: float = 30.0
    """No message for this long: the connection is dead even if TCP and pings say otherwise."""
    ping_interval_s: float | None = 20.0
    """Client keepalive pings (None: off); a ping unanswered for `ping_timeout_s` closes the connection."""
    ping_timeout_s: float | None = 20.0
    backoff_initial_s: float = 1.0
    """Reconnect delays are random in [0, min(max, initial·2ⁿ)] after n failures in a row (full jitter)."""
    backoff_max_s: float = 60.0
    backoff_reset_after_s: float = 60.0
    """A connection that lived this long counts as a success: the next failure starts the backoff over."""
    lifetime_s: float | None = 23.5 * 3600
    """Replace each connection after this long (Binance cuts them at 24 h); None: keep it."""
    overlap_s: float = 10.0
    """How long the old and the new connection both deliver during a planned rotation."""
    open_timeout_s: float = 10.0
    close_timeout_s: float = 0.5
    """How long a closing handshake may take before the TCP connection is dropped."""

    def __post_init__(self) -> None:
        positive = {
            "watchdog_s": self.watchdog_s,
            "backoff_max_s": self.backoff_max_s,
            "open_timeout_s": self.open_timeout_s,
            "close_timeout_s": self.close_timeout_s,
        }
        if self.lifetime_s is not None:
            positive["lifetime_s"] = self.lifetime_s
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be above zero, got {value}")
        if self.backoff_initial_s < 0 or self.overlap_s < 0:
            raise ValueError("backoff_initial_s and overlap_s must not be negative")


class Backoff:
    """Exponential backoff with full jitter: the n-th delay in a row is uniform in [0, min(max, initial·2ⁿ)].

    Full jitter spreads the reconnects of many clients after an exchange-wide outage, so they do not
    all come back in the same second and get rate-limited together.
    """

    def __init__(self, initial_s: float, max_s: float, rng: Callable[[], float] = random.random) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.failures = 0
        self._rng = rng

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        ceiling = min(self.max_s, self.initial_s * 2 ** min(self.failures, 62))
        self.failures += 1
        return self._rng() * ceiling

    def reset(self) -> None:
        self.failures = 0


def describe_close(exc: ConnectionClosed) -> str:
    """Why a connection ended, in words for the gap ledger (`server closed the connection (code 1006 ...)`)."""
    if exc.rcvd is not None:
        code = exc.rcvd.code
        reason = f": {exc.rcvd.reason}" if exc.rcvd.reason else ""
        return f"server closed the connection (code {code} {CLOSE_CODE_EXPLANATIONS.get(code, 'unknown')}{reason})"
    if exc.sent is not None:
        if exc.sent.code == CloseCode.INTERNAL_ERROR and "keepalive" in exc.sent.reason:
            return "no pong to our keepalive ping (code 1011 keepalive ping timeout)"
        return f"we closed the connection (code {exc.sent.code} {exc.sent.reason or 'no reason'})"
    return "server closed the connection (code 1006 abnormal closure: no close frame)"


@dataclass(frozen=True, slots=True)
class _Ended:
    at_us: int  # when the connection stopped delivering
    cause: str


@dataclass(frozen=True, slots=True)
class _Refused:
    reason: str
    retry_after_s: float = 0.0


@dataclass(eq=False)
class _Link:
    """One open connection and the task reading it."""

    ws: ClientConnection
    opened: float  # event-loop time
    last_message_us: int
    rotate: asyncio.Event = field(default_factory=asyncio.Event)
    rotate_cause: str = ""
    started: asyncio.Event = field(default_factory=asyncio.Event)  # set once the connection is announced
    reader: asyncio.Task[_Ended] = field(init=False)


class WebSocketFeed:
    """Keeps one WebSocket subscription alive until told to stop; see the module docstring."""

    def __init__(
        self,
        *,
        exchange: str,
        symbols: Sequence[str],
        url: str,
        on_message: MessageHandler,
        on_open: OnOpen | None = None,
        settings: FeedSettings | None = None,
    ) -> None:
        self.exchange = exchange
        self.symbols = tuple(symbols)
        self.url = url
        self.settings = settings or FeedSettings()
        self._on_message = on_message
        self._on_open = on_open
        self._closing: set[asyncio.Task[None]] = set()

    async def run(self, emit: Emit, stop: asyncio.Event) -> None:
        """Deliver messages to the handler until `stop` is set, then close every connection and return."""
        settings = self.settings
        loop = asyncio.get_running_loop()
        backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        current: _Link | None = None
        gap: _Ended | None = None  # the connection loss not yet followed by a new connection
        first = True
        rotate_at = float("inf")
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                if current is None:
                    opened = await self._open(stopping)
                    if opened is None:
                        break
                    if isinstance(opened, _Refused):
                        delay = max(backoff.next_delay(), opened.retry_after_s)
                        log.warning(
                            "%s: cannot connect to %s: %s; retrying in %.1f s", self, self.url, opened.reason, delay
                        )
                        await _sleep_unless(stop, delay)
                        continue
                    current = opened
                    self._announce(emit, current, first=first, gap=gap)
                    first, gap = False, None
                    rotate_at = self._rotation_due(current)

                rotate_wait = asyncio.ensure_future(current.rotate.wait())
                timeout = None if rotate_at == float("inf") else max(0.0, rotate_at - loop.time())
                await asyncio.wait(
                    {current.reader, rotate_wait, stopping}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                rotate_wait.cancel()
                if stop.is_set():
                    break

                if current.reader.done():
                    gap = self._outcome(current)
                    if loop.time() - current.opened >= settings.backoff_reset_after_s:
                        backoff.reset()
                    self._retire(current)
                    current = None
                    delay = backoff.next_delay()
                    log.warning("%s: %s; reconnecting in %.1f s", self, gap.cause, delay)
                    await _sleep_unless(stop, delay)
                    continue

                # Rotation: the connection's lifetime is up, or the exchange announced a shutdown.
                cause = current.rotate_cause or "planned rotation"
                replacement = await self._open(stopping)
                if replacement is None:
                    break
                if isinstance(replacement, _Refused):
                    delay = max(backoff.next_delay(), replacement.retry_after_s)
                    log.warning(
                        "%s: rotation (%s) cannot connect: %s; retrying in %.1f s",
                        self,
                        cause,
                        replacement.reason,
                        delay,
                    )
                    rotate_at = loop.time() + delay
                    current.rotate.clear()
                    continue
                if current.reader.done():
                    # The old connection died while the new one was opening: an ordinary gap after all.
                    gap = self._outcome(current)
                    log.warning("%s: %s during a rotation", self, gap.cause)
                    self._retire(current)
                    current = replacement
                    self._announce(emit, current, first=False, gap=gap)
                    gap = None
                    rotate_at = self._rotation_due(current)
                    continue
                log.info("%s: rotating the connection (%s), %g s overlap", self, cause, settings.overlap_s)
                ended = now_us()
                emit(Disconnect(self.exchange, self.symbols, ended, ended, cause))
                self._announce(emit, replacement, first=False, gap=None)
                await asyncio.wait(
                    {stopping, replacement.reader}, timeout=settings.overlap_s, return_when=asyncio.FIRST_COMPLETED
                )
                if replacement.reader.done() and not current.reader.done():
                    # The new connection died during the overlap: keep the old one, try again later.
                    self._retire(replacement)
                    rotate_at = loop.time() + backoff.next_delay()
                    current.rotate.clear()
                    continue
                self._retire(current)
                current = replacement
                rotate_at = self._rotation_due(current)
        finally:
            stopping.cancel()
            if current is not None:
                self._retire(current)
            if gap is not None:
                # Stopped while reconnecting: the interval up to now was missed all the same.
                emit(
                    Disconnect(
                        self.exchange, self.symbols, gap.at_us, now_us(), f"{gap.cause}; stopped before reconnecting"
                    )
                )
            if self._closing:
                await asyncio.gather(*self._closing, return_exceptions=True)

    def __str__(self) -> str:
        return f"{self.exchange} feed ({len(self.symbols)} symbols)"

    async def _open(self, stopping: asyncio.Future[Any]) -> _Link | _Refused | None:
        """A new connection with its reader not yet started, why it failed, or None when stopping."""
        attempt = asyncio.ensure_future(self._connect())
        await asyncio.wait({attempt, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not attempt.done():
            attempt.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await attempt
            return None
        return attempt.result()

    async def _connect(self) -> _Link | _Refused:
        settings = self.settings
        try:
            ws = await connect(
                self.url,
                open_timeout=settings.open_timeout_s,
                ping_interval=settings.ping_interval_s,
                ping_timeout=settings.ping_timeout_s,
                close_timeout=settings.close_timeout_s,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            retry_after = exc.response.headers.get("Retry-After", "")
            wait = float(retry_after) if status in _RATE_LIMITED and retry_after.isdigit() else 0.0
            return _Refused(f"HTTP {status} {exc.response.reason_phrase}", wait)
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            return _Refused(f"{type(exc).__name__}: {exc}")
        link = _Link(ws, asyncio.get_running_loop().time(), now_us())
        link.reader = asyncio.ensure_future(self._read(link))
        if self._on_open is not None:
            try:
                await self._on_open(ws)
            except ConnectionClosed as exc:
                self._retire(link)
                return _Refused(f"closed while subscribing: {describe_close(exc)}")
        return link

    def _announce(self, emit: Emit, link: _Link, *, first: bool, gap: _Ended | None) -> None:
        """Report the new connection (and the gap it ends), then start reading it."""
        log.info("%s: connected to %s", self, self.url)
        if gap is not None:
            emit(Disconnect(self.exchange, self.symbols, gap.at_us, now_us(), gap.cause))
        emit(Reconnected(self.exchange, self.url, first, self.symbols))
        link.last_message_us = now_us()
        link.started.set()

    def _outcome(self, link: _Link) -> _Ended:
        """How a finished reader ended; a reader that crashed (a bug) counts as a lost connection."""
        failure = None if link.reader.cancelled() else link.reader.exception()
        if failure is None and not link.reader.cancelled():
            return link.reader.result()
        log.error("%s: reading the connection failed", self, exc_info=failure)
        return _Ended(now_us(), f"reading the connection failed: {failure!r}")

    def _rotation_due(self, link: _Link) -> float:
        lifetime = self.settings.lifetime_s
        return float("inf") if lifetime is None else link.opened + lifetime

    async def _read(self, link: _Link) -> _Ended:
        """Hand each message to the handler until the connection ends or goes quiet; say how it ended."""
        watchdog_s = self.settings.watchdog_s
        await link.started.wait()
        while True:
            try:
                # Cancelling recv() loses nothing (websockets guarantees it), so a timeout is safe here.
                async with asyncio.timeout(watchdog_s):
                    message = await link.ws.recv()
            except TimeoutError:
                return _Ended(link.last_message_us, f"no message for {watchdog_s:g} s (watchdog)")
            except ConnectionClosed as exc:
                return _Ended(now_us(), describe_close(exc))
            received = now_us()
            link.last_message_us = received
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            try:
                cause = self._on_message(text, received)
            except Exception:
                # A connector bug must not blind the feed: log it loudly and keep reading.
                log.exception("%s: the message handler failed on %.300s", self, text)
                continue
            if cause and not link.rotate.is_set():
                link.rotate_cause = cause
                link.rotate.set()

    def _retire(self, link: _Link) -> None:
        """Stop reading a connection and close it in the background, so a slow close delays nothing."""
        link.reader.cancel()
        task = asyncio.ensure_future(link.ws.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake up as soon as `stop` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
