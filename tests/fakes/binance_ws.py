"""A fake Binance market-stream server: recorded real `aggTrade` frames, replayed live on loopback.

Serves `/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade` (combined: `{"stream":..,"data":..}`) and
`/ws/btcusdt@aggTrade` (bare events), like `stream.binance.com` and `fstream.binance.com`. A connection
receives the frames of its streams that happen while it is open, with times shifted to the present;
`SUBSCRIBE` requests are answered `{"result":null,"id":..}` and add streams. Like Binance, the server
pings (every 20 s by default) and closes a connection that does not answer, and can announce a shutdown
with `{"event":{"e":"serverShutdown","E":..}}`, closing the connection `shutdown_grace_s` later.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import parse_qs, urlsplit

from websockets.frames import CloseCode

from tests.fakes.recording import LiveReplay, binance_shifted, dumps
from tests.fakes.ws_server import FakeExchangeWs, Session


def requested_streams(path: str) -> tuple[set[str], bool] | None:
    """The stream names a path asks for (lower case) and whether the events come bare; None: not served."""
    parts = urlsplit(path)
    if parts.path == "/stream":
        names = parse_qs(parts.query).get("streams", [""])[0]
        return {name.lower() for name in names.split("/") if name}, False
    if parts.path.startswith("/ws/"):
        return {name.lower() for name in parts.path[len("/ws/") :].split("/") if name}, True
    return None


class FakeBinanceWs(FakeExchangeWs):
    """See the module docstring; the fault knobs and counters are `FakeExchangeWs`'s."""

    def __init__(
        self,
        replay: LiveReplay,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ping_interval_s: float | None = 20.0,
        ping_timeout_s: float = 60.0,
        lifetime_s: float | None = None,
        shutdown_grace_s: float = 5.0,
        shutdown_notice: str | None = None,
    ) -> None:
        super().__init__(
            replay, host, port, ping_interval_s=ping_interval_s, ping_timeout_s=ping_timeout_s, lifetime_s=lifetime_s
        )
        self.shutdown_grace_s = shutdown_grace_s
        self.shutdown_notice = shutdown_notice  # the notice's text; default: the WebSocket API's form
        frames = replay.recording.frames
        self._streams = [str(frame.payload.get("stream", "")).lower() for frame in frames]
        self._combined = [dumps(binance_shifted(frame.payload, replay.shift_us)) for frame in frames]
        self._bare = [
            dumps(binance_shifted(frame.payload.get("data", frame.payload), replay.shift_us)) for frame in frames
        ]

    def send_shutdown_notice_after(self, n_frames: int) -> None:
        """Announce a shutdown on the next connection after `n_frames` frames (thread-safe)."""
        with self._lock:
            self._pending.notice_after = n_frames

    def accepts(self, path: str) -> bool:
        return requested_streams(path) is not None

    async def produce(self, session: Session) -> None:
        wanted = requested_streams(session.record.path)
        assert wanted is not None  # checked by `accepts`
        names, bare = wanted
        streams: set[str] = session.state.setdefault("streams", set())
        streams.update(names)
        texts = self._bare if bare else self._combined
        await self.play(session, lambda i: texts[i] if self._streams[i] in streams else None, self.happened())
        await asyncio.Future()  # the recording is over: stay connected, quiet, until closed

    async def on_client_message(self, session: Session, text: str) -> None:
        try:
            request = json.loads(text)
        except ValueError:
            return
        if not isinstance(request, dict) or "method" not in request:
            return
        if request["method"] == "SUBSCRIBE" and isinstance(request.get("params"), list):
            session.state.setdefault("streams", set()).update(str(name).lower() for name in request["params"])
        await self.send(session, dumps({"result": None, "id": request.get("id")}))

    async def send_notice(self, session: Session) -> None:
        notice = self.shutdown_notice or dumps({"event": {"e": "serverShutdown", "E": time.time_ns() // 1_000_000}})
        await session.conn.send(notice)
        asyncio.get_running_loop().call_later(
            self.shutdown_grace_s,
            lambda: asyncio.ensure_future(session.conn.close(CloseCode.GOING_AWAY, "server shutdown")),
        )
