"""The alerts' tables in PostgreSQL: price rules (add, list, remove) and raised alerts (once each).

The scorer's reads live here too: closed candles since a time, and each market's latest price.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from candlelake.alerts.price_rules import DIRECTIONS, PriceRule, parse_direction, parse_level, parse_market
from candlelake.alerts.record import AlertRecord
from candlelake.util import from_us, to_us


class RuleError(ValueError):
    """A price rule that cannot be added or removed; the message says why, in one line."""


def add_rule(cur: Any, market: str, direction: str, level: str, note: str = "", created_by: str = "cli") -> PriceRule:
    """Add the rule "market crosses direction level"; RuleError for bad input or a rule that exists."""
    try:
        exchange, symbol = parse_market(market)
        side = parse_direction(direction)
        price = parse_level(level)
    except ValueError as exc:
        raise RuleError(str(exc)) from None
    cur.execute(
        "INSERT INTO alert_rules (exchange, symbol, direction, level, note, created_by) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (exchange, symbol, direction, level) DO NOTHING RETURNING id",
        (exchange, symbol, side, price, note, created_by),
    )
    row = cur.fetchone()
    if row is None:
        raise RuleError(f"{exchange}:{symbol} {side} {price} exists already")
    return PriceRule(int(row[0]), exchange, symbol, side, price, note)


def list_rules(cur: Any, market: str | None = None) -> list[PriceRule]:
    where, args = "", tuple[str, ...]()
    if market:
        try:
            args = parse_market(market)
        except ValueError as exc:
            raise RuleError(str(exc)) from None
        where = "WHERE exchange = %s AND symbol = %s"
    cur.execute(f"SELECT id, exchange, symbol, direction, level, note FROM alert_rules {where} ORDER BY id", args)
    return [PriceRule(int(i), e, s, d if d in DIRECTIONS else "above", Decimal(lv), n) for i, e, s, d, lv, n in cur]


def remove_rule(cur: Any, rule_id: int) -> PriceRule:
    cur.execute(
        "DELETE FROM alert_rules WHERE id = %s RETURNING id, exchange, symbol, direction, level, note", (rule_id,)
    )
    row = cur.fetchone()
    if row is None:
        raise RuleError(f"no alert rule {rule_id} (`candlelake alerts list` shows them)")
    i, e, s, d, lv, n = row
    return PriceRule(int(i), e, s, d, Decimal(lv), n)


INSERT_ALERT_SQL = """
INSERT INTO alerts (type, exchange, symbol, at, kind, detector, score, price, rule_id, model_version, features,
                    candle_closed_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (type, exchange, symbol, at, detector) DO NOTHING
RETURNING id
"""


def insert_alert(cur: Any, alert: AlertRecord) -> int | None:
    """The new alert's id, or None when it was raised before (a restarted scorer scoring a candle again)."""
    cur.execute(
        INSERT_ALERT_SQL,
        (
            alert.type,
            alert.exchange,
            alert.symbol,
            from_us(alert.at_us),
            alert.kind,
            alert.detector,
            alert.score,
            alert.price,
            alert.rule_id,
            alert.model_version,
            json.dumps(alert.features),
            None if alert.candle_closed_at_us is None else from_us(alert.candle_closed_at_us),
        ),
    )
    row = cur.fetchone()
    return None if row is None else int(row[0])


def set_webhook_status(cur: Any, alert_id: int, status: str) -> None:
    cur.execute("UPDATE alerts SET webhook_status = %s WHERE id = %s", (status[:500], alert_id))


# The outbox: alerts PostgreSQL holds that the `alerts` topic has not acknowledged yet, oldest first.
# Bounded to a day: after a longer Kafka outage the topic's readers are better served by the table.
UNPUBLISHED_SQL = """
SELECT id, type, exchange, symbol, at, kind, detector, score, price, rule_id, model_version, features,
       candle_closed_at
FROM alerts
WHERE published_at IS NULL AND raised_at > now() - interval '1 day'
ORDER BY id
LIMIT %s
"""


def unpublished(cur: Any, limit: int = 1000) -> list[tuple[int, AlertRecord]]:
    """Alerts not yet on the topic (a Kafka outage, a scorer killed between the insert and the send)."""
    cur.execute(UNPUBLISHED_SQL, (limit,))
    return [(int(row[0]), _alert_of(row[1:])) for row in cur.fetchall()]


def _alert_of(row: Sequence[Any]) -> AlertRecord:
    """An `alerts` row's columns, from `type` to `candle_closed_at`, as the record every sink carries."""
    kind_of, exchange, symbol, at, kind, detector, score, price, rule_id, version, features, closed_at = row
    return AlertRecord(
        type=kind_of,
        exchange=exchange,
        symbol=symbol,
        at_us=to_us(at),
        kind=kind,
        detector=detector,
        score=score,
        price=price,
        rule_id=rule_id,
        model_version=version,
        features=dict(features or {}),
        candle_closed_at_us=None if closed_at is None else to_us(closed_at),
    )


def mark_published(cur: Any, alert_ids: Sequence[int]) -> None:
    if alert_ids:
        cur.execute("UPDATE alerts SET published_at = now() WHERE id = ANY(%s)", (list(alert_ids),))


@dataclass(frozen=True, slots=True)
class ClosedCandle:
    exchange: str
    symbol: str
    open_time_us: int
    close: Decimal
    volume: Decimal
    trades: int
    closed_at_us: int  # when it stopped changing: its row's last update

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.symbol}"


CLOSED_SQL = """
SELECT exchange, symbol, open_time, close, volume, trades, updated_at
FROM candles
WHERE state <> 'live' AND updated_at >= %s
ORDER BY exchange, symbol, open_time
"""


def closed_since(cur: Any, since: datetime) -> list[ClosedCandle]:
    """Candles closed (or curated) at or after `since`, per market in time order."""
    cur.execute(CLOSED_SQL, (since,))
    return [ClosedCandle(e, s, to_us(t), c, v, int(n), to_us(u)) for e, s, t, c, v, n, u in cur]


LATEST_PRICES_SQL = """
SELECT DISTINCT ON (exchange, symbol) exchange, symbol, close, open_time
FROM candles
WHERE updated_at >= %s AND exchange || ':' || symbol = ANY(%s)
ORDER BY exchange, symbol, open_time DESC
"""
LATEST_POINTS_SQL = """
SELECT DISTINCT ON (exchange, symbol) exchange, symbol, price, time
FROM price_points
WHERE landed_at >= %s AND exchange || ':' || symbol = ANY(%s)
ORDER BY exchange, symbol, time DESC
"""


def latest_prices(cur: Any, since: datetime, markets: Sequence[str]) -> list[tuple[str, str, Decimal, int]]:
    """Each watched market's newest price changed since `since`: a live candle's close, or a price point."""
    if not markets:
        return []
    found: list[tuple[str, str, Decimal, int]] = []
    for query in (LATEST_PRICES_SQL, LATEST_POINTS_SQL):
        cur.execute(query, (since, list(markets)))
        found += [(e, s, p, to_us(t)) for e, s, p, t in cur]
    return found
