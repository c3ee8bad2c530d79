"""Recorded exchange frames, ready to replay with their time fields moved to the present.

A capture file holds one exchange JSON message per line (optionally preceded by a receive timestamp
and a space). `Recording.load` keeps each message's pace (seconds after the first) and the parsed
payload; `binance_shifted`/`coinbase_shifted` return the payload with its exchange times moved by a
fixed amount, so a fake server can serve 2021 trades as if they were happening now while every other
field (ids, prices, quantities, key order, string-typed numbers) stays exactly as recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "exchanges"
BINANCE_SPOT = FIXTURES / "binance-spot-aggtrade.jsonl"
BINANCE_USDM = FIXTURES / "binance-usdm-aggtrade.jsonl"
COINBASE = FIXTURES / "coinbase-matches-and-ticker.jsonl"


@dataclass(frozen=True)
class Frame:
    at_s: float  # seconds after the recording's first message (its exchange time)
    payload: dict[str, Any]


@dataclass(frozen=True)
class Recording:
    frames: tuple[Frame, ...]
    first_time_us: int  # exchange time of the first timed message

    @classmethod
    def load(cls, path: Path) -> Recording:
        payloads = []
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            if not line.startswith("{"):
                line = line.split(" ", 1)[1]
            payloads.append(json.loads(line))
        times = [message_time_us(p) for p in payloads]
        # Pace from the first timed message; an older time later on (Coinbase's `last_match` carries the
        # time of a trade long past) keeps the previous pace rather than jumping back.
        first = next(t for t in times if t is not None)
        frames, previous = [], 0.0
        for payload, t in zip(payloads, times, strict=True):
            at = previous if t is None else max(previous, (t - first) / 1e6)
            frames.append(Frame(at, payload))
            previous = at
        return cls(tuple(frames), first)

    def shift_to(self, start: datetime) -> int:
        """Microseconds to add to recorded times so that the first message happens at `start`."""
        return int(start.timestamp() * 1e6) - self.first_time_us


def message_time_us(payload: dict[str, Any]) -> int | None:
    """The exchange time of a message (Binance `data.T` or `E`, Coinbase `time`), or None."""
    data = payload.get("data", payload)
    if isinstance(data, dict):
        if "T" in data:
            return int(data["T"]) * 1000
        if "E" in data:
            return int(data["E"]) * 1000
        if isinstance(data.get("time"), str):
            return _iso_us(data["time"])
    return None


def binance_shifted(payload: dict[str, Any], shift_us: int) -> dict[str, Any]:
    """A Binance message (combined-stream wrapper or bare) with `E` and `T` moved by `shift_us`."""
    shift_ms = shift_us // 1000
    if "data" in payload:
        return {**payload, "data": binance_shifted(payload["data"], shift_us)}
    return {k: (v + shift_ms if k in ("E", "T") and isinstance(v, int) else v) for k, v in payload.items()}


def coinbase_shifted(payload: dict[str, Any], shift_us: int) -> dict[str, Any]:
    """A Coinbase message with `time` moved by `shift_us`, written as Coinbase writes it."""
    if not isinstance(payload.get("time"), str):
        return dict(payload)
    moved = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=_iso_us(payload["time"]) + shift_us)
    return {**payload, "time": moved.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}


def dumps(payload: dict[str, Any]) -> str:
    """Compact JSON, as both exchanges send it."""
    return json.dumps(payload, separators=(",", ":"))


def _iso_us(text: str) -> int:
    moment = datetime.fromisoformat(text)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


class LiveReplay:
    """One recording played as a live market: frame i happens at `start + at_s / speed`.

    The fake WebSocket and REST servers of one exchange share an instance, so they agree on what has
    happened: a WebSocket connection receives the frames that happen while it is open (a client that
    was disconnected misses the frames in between, as on a real exchange), and the REST server serves
    the trades that have happened so far, for the backfill to find. Times in served messages are the
    recorded ones moved by `shift_us`, so the first frame's exchange time is `start`.
    """

    def __init__(self, recording: Recording, start: datetime | None = None, speed: float = 1.0) -> None:
        self.recording = recording
        self.start = start or datetime.now(UTC)
        self.speed = speed
        self.shift_us = recording.shift_to(self.start)

    def due_at(self, index: int) -> datetime:
        """When frame `index` happens (wall clock)."""
        return self.start + timedelta(seconds=self.recording.frames[index].at_s / self.speed)

    def happened(self, now: datetime | None = None) -> int:
        """How many frames have happened by `now`."""
        moment = now or datetime.now(UTC)
        elapsed = (moment - self.start).total_seconds() * self.speed
        count = 0
        for frame in self.recording.frames:  # small files: a scan is fine
            if frame.at_s > elapsed:
                break
            count += 1
        return count

    @property
    def end(self) -> datetime:
        return self.due_at(len(self.recording.frames) - 1)
