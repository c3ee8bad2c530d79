"""One gap fill: a gap's ids fetched from the exchange's REST history, sent, and the time they cover.

The running producer (candlelake.ingest.pipeline) and `candlelake backfill` (candlelake.runs.backfill)
both fill gaps with `GapFill`; they differ only in what "send" means (the producer skips ids its stream
delivered meanwhile) and in where the coverage goes.

The gap is fetched with one id more on each side: those two trades say when the hole began and ended,
so a gap the exchange returned whole covers from the trade before it to the trade after it
(candlelake.coverage.gap_fill_span). A gap with ids the exchange no longer has covers nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from candlelake import coverage
from candlelake.ingest.gaps import Gap
from candlelake.sources.fields import Rejection
from candlelake.trade import Trade


class TradeHistory(Protocol):
    """An exchange's REST trade history (candlelake.sources.binance_rest / coinbase_rest)."""

    def trades_between(self, symbol: str, first_id: int, last_id: int) -> Iterator[Trade | Rejection]: ...


@dataclass
class GapFill:
    """What filling `gap` has done so far: counts stay right when the exchange fails halfway."""

    gap: Gap
    sent: int = 0
    rejected: int = 0
    returned: set[int] = field(default_factory=set)
    times: list[int] = field(default_factory=list)
    around: dict[int, int] = field(default_factory=dict)  # id -> time of the trades just outside the gap

    def run(self, history: TradeHistory, send: Callable[[Trade], bool], reject: Callable[[Rejection], None]) -> None:
        """Fetch the gap and hand each of its trades, once, to `send` (True when it sent the trade).

        Raises what the history raises (ExchangeError); what was done until then stays counted.
        """
        gap = self.gap
        for item in history.trades_between(gap.symbol, max(gap.first_id - 1, 0), gap.last_id + 1):
            if isinstance(item, Rejection):
                self.rejected += 1
                reject(item)
            elif not gap.first_id <= item.trade_id <= gap.last_id:
                self.around[item.trade_id] = item.trade_time_us
            elif item.trade_id not in self.returned:
                self.returned.add(item.trade_id)
                self.times.append(item.trade_time_us)
                if send(item):
                    self.sent += 1

    @property
    def not_found(self) -> int:
        """Ids of the gap the exchange did not return: they will never come."""
        return self.gap.size - len(self.returned)

    def covered(self, source: str, kind: str = "backfill") -> coverage.Interval | None:
        """The time the filled gap proves observed, or None when some of its ids are gone."""
        if self.not_found:
            return None
        before = self.around.get(self.gap.first_id - 1)
        after = self.around.get(self.gap.last_id + 1)
        span = coverage.gap_fill_span(before, self.times, after)
        if span is None:
            return None
        return coverage.Interval(self.gap.exchange, self.gap.symbol, source, kind, *span)
