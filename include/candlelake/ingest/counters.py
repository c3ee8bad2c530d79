"""What a producer has done, and what Kafka said about each trade it was handed.

`Counters` is read by the health reporter from another thread, so every change takes its lock.
`DeliveryReports` are the two callbacks a Kafka trade sink is built with: each trade ends in exactly one
of them. A failed delivery is counted and, for a producer that keeps a gap ledger, kept until the
pipeline's maintenance takes it (`take_failures`) to record the id as a gap and backfill it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from candlelake.trade import Trade

log = logging.getLogger(__name__)


@dataclass
class Counters:
    """What the producer has done; read by the health reporter from another thread."""

    received: int = 0
    produced: int = 0
    rejected: int = 0
    duplicates: int = 0
    delivery_failures: int = 0
    gaps: int = 0
    backfilled: int = 0
    reconnects: int = 0
    prices: int = 0
    missing_ids: int = 0
    last_trade_time_us: dict[str, int] = field(default_factory=dict)
    last_price: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_delivered(self, trade: Trade) -> None:
        """Kafka acknowledged `trade`: one more produced, and its market's last trade time."""
        with self.lock:
            self.produced += 1
            previous = self.last_trade_time_us.get(trade.key, 0)
            self.last_trade_time_us[trade.key] = max(previous, trade.trade_time_us)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "received": self.received,
                "produced": self.produced,
                "rejected": self.rejected,
                "duplicates": self.duplicates,
                "delivery_failures": self.delivery_failures,
                "gaps": self.gaps,
                "missing_ids": self.missing_ids,
                "backfilled": self.backfilled,
                "reconnects": self.reconnects,
                "prices": self.prices,
                "last_trade_time": {
                    k: datetime.fromtimestamp(v / 1e6, UTC).isoformat() for k, v in self.last_trade_time_us.items()
                },
                "last_price": dict(self.last_price),
            }


class DeliveryReports:
    """Kafka's verdict on each trade: counted into `counters`; failures kept when `keep_failures`.

    Called on the Kafka client's thread; `take_failures` on the pipeline's maintenance thread.
    """

    def __init__(self, counters: Counters, keep_failures: bool = False) -> None:
        self.counters = counters
        self.keep_failures = keep_failures
        self._failures: deque[tuple[Trade, str]] = deque()

    def delivered(self, trade: Trade) -> None:
        self.counters.count_delivered(trade)

    def failed(self, trade: Trade, error: str) -> None:
        with self.counters.lock:
            self.counters.delivery_failures += 1
        if self.keep_failures:
            log.error("Kafka did not take %s trade %s: %s; recorded as a gap", trade.key, trade.trade_id, error)
            self._failures.append((trade, error))
        else:
            log.error("delivery failed for %s trade %s: %s", trade.key, trade.trade_id, error)

    def take_failures(self) -> list[tuple[Trade, str]]:
        """The failures reported since the last call, oldest first."""
        taken = []
        while self._failures:
            taken.append(self._failures.popleft())
        return taken
