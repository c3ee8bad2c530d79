"""Price-threshold rules ("tell me when binance:BTCUSDT crosses above 100000") and when one fires.

A rule fires when the price *crosses* its level: the previous price was on the near side and the new one
reaches the level or beyond (above: previous < level <= price; below: previous > level >= price). The
first price the scorer sees of a market only arms its rules, so a rule created while the price is already
beyond its level waits for the next crossing, and a restart does not fire every rule again. Prices are
exact decimals, compared as such.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

Direction = Literal["above", "below"]
DIRECTIONS: tuple[Direction, ...] = ("above", "below")


@dataclass(frozen=True, slots=True)
class PriceRule:
    id: int
    exchange: str
    symbol: str
    direction: Direction
    level: Decimal
    note: str = ""

    @property
    def market(self) -> str:
        return f"{self.exchange}:{self.symbol}"

    def describe(self) -> str:
        return f"{self.market} {self.direction} {self.level}"


def parse_market(text: str) -> tuple[str, str]:
    """ "binance:BTCUSDT" -> ("binance", "BTCUSDT"); ValueError saying the expected form."""
    exchange, sep, symbol = text.strip().partition(":")
    if not sep or not exchange or not symbol:
        raise ValueError(f"market {text!r}: write it as exchange:SYMBOL, e.g. binance:BTCUSDT")
    return exchange.strip().lower(), symbol.strip().upper()


def parse_direction(text: str) -> Direction:
    value = text.strip().lower()
    if value == "above":
        return "above"
    if value == "below":
        return "below"
    raise ValueError(f"direction {text!r}: above or below")


def parse_level(text: str) -> Decimal:
    """A positive price as an exact decimal; ValueError saying what is wrong."""
    try:
        level = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        raise ValueError(f"level {text!r} is not a number") from None
    if not level.is_finite() or level <= 0:
        raise ValueError(f"level {text!r}: a price above zero")
    return level


def crossed(rule: PriceRule, previous: Decimal, price: Decimal) -> bool:
    if rule.direction == "above":
        return previous < rule.level <= price
    return previous > rule.level >= price


@dataclass(frozen=True, slots=True)
class Crossing:
    rule: PriceRule
    price: Decimal
    at_us: int


class PriceWatch:
    """The last price of each market; `observe` a new one and get the rules it crossed."""

    def __init__(self, rules: Iterable[PriceRule] = ()) -> None:
        self._last: dict[str, Decimal] = {}
        self._rules: dict[str, list[PriceRule]] = {}
        self.replace_rules(rules)

    def replace_rules(self, rules: Iterable[PriceRule]) -> None:
        """The rules to watch from now on (rules added since are armed by the next price, as any rule)."""
        by_market: dict[str, list[PriceRule]] = {}
        for rule in rules:
            by_market.setdefault(rule.market, []).append(rule)
        self._rules = by_market

    @property
    def markets(self) -> Sequence[str]:
        return sorted(self._rules)

    def observe(self, exchange: str, symbol: str, price: Decimal, at_us: int) -> list[Crossing]:
        market = f"{exchange}:{symbol}"
        previous = self._last.get(market)
        self._last[market] = price
        if previous is None or previous == price:
            return []
        return [Crossing(r, price, at_us) for r in self._rules.get(market, ()) if crossed(r, previous, price)]
