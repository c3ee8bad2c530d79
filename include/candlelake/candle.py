"""The candle vocabulary every stage shares: its fields, in the exchange's kline order, and one record.

A 1m candle is the exchange's ten kline values (docs/candles.md) plus what candlelake adds: the vwap,
the trade ids it spans, and its coverage. The stream's upsert, the nightly load, the rollups, the
export, the reconciliation and the dashboard all name the fields from here, so a new field is added
in one place and every column list stays in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

KEY: tuple[str, ...] = ("exchange", "symbol", "open_time")
"""One candle per market and interval start: the primary key of `candles`."""

PRICES: tuple[str, ...] = ("open", "high", "low", "close")
VOLUMES: tuple[str, ...] = ("volume", "quote_volume")
TAKER_VOLUMES: tuple[str, ...] = ("taker_buy_volume", "taker_buy_quote_volume")
QUOTE_VOLUMES: tuple[str, ...] = ("quote_volume", "taker_buy_quote_volume")
"""Sums of price * qty: exact to the last digit, where the exchange's own figure may be rounded."""

KLINE_VALUES: tuple[str, ...] = (*PRICES, *VOLUMES, "trades", *TAKER_VOLUMES)
"""The exchange's own kline values after its open time, in its column order."""

DECIMALS: tuple[str, ...] = (*PRICES, *VOLUMES, *TAKER_VOLUMES, "vwap")
"""The candle's NUMERIC columns: never a binary float between the trade and the table."""

NON_NEGATIVE: tuple[str, ...] = (*VOLUMES, *TAKER_VOLUMES, "trades")

TRADE_IDS: tuple[str, ...] = ("first_trade_id", "last_trade_id")

COLUMNS: tuple[str, ...] = (*KEY, "close_time", *KLINE_VALUES, "vwap", *TRADE_IDS)
"""A candle row in the table `candles`' column order (less its state and updated_at): what the stream
upserts, the Spark schema holds and the nightly batch stages."""

CURATED_COLUMNS: tuple[str, ...] = (*COLUMNS, "coverage")
"""A curated candle: the row and what coverage made of it (candlelake.coverage)."""

COVERAGE_STATES: tuple[str, ...] = ("complete", "partial")
"""A candle's `coverage`: its whole interval was observed, or only part of it (docs/coverage.md)."""


@dataclass(frozen=True)
class Candle:
    """One 1m candle's values as the exchange's kline has them, with candlelake's coverage."""

    open_time: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trades: int
    taker_buy_volume: Decimal
    taker_buy_quote_volume: Decimal
    coverage: str = "complete"

    @property
    def partial(self) -> bool:
        """The interval was not fully observed: its values are a lower bound, not the exchange's."""
        return self.coverage == "partial"
