"""One alert as every sink carries it: the `alerts` row, the `alerts` topic's JSON, the webhook's body.

The JSON is the row's columns, times as ISO-8601 UTC and decimals as text (exact), plus `id` once
PostgreSQL gave it one; the topic's key is "exchange:symbol", so a market's alerts stay in order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from candlelake.alerts.price_rules import Crossing
from candlelake.analytics.rules import Anomaly
from candlelake.util import from_us

AlertType = Literal["anomaly", "price"]


@dataclass(frozen=True, slots=True)
class AlertRecord:
    type: AlertType
    exchange: str
    symbol: str
    at_us: int
    kind: str
    detector: str
    score: float | None = None
    price: Decimal | None = None
    rule_id: int | None = None
    model_version: str | None = None
    features: dict[str, Any] = field(default_factory=dict)
    candle_closed_at_us: int | None = None

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.symbol}"

    def headline(self) -> str:
        """One line a person reads in a chat channel."""
        when = from_us(self.at_us).strftime("%Y-%m-%d %H:%M UTC")
        if self.type == "price":
            return f"{self.key} crossed {self.kind} {self.features.get('level')} at {when}: {self.price}"
        return f"{self.key} {self.kind} at {when} ({self.detector}, score {self.score:.2f})"

    def as_json(self, alert_id: int | None = None) -> dict[str, Any]:
        return {
            "id": alert_id,
            "type": self.type,
            "exchange": self.exchange,
            "symbol": self.symbol,
            "at": from_us(self.at_us).isoformat().replace("+00:00", "Z"),
            "kind": self.kind,
            "detector": self.detector,
            "score": self.score,
            "price": None if self.price is None else str(self.price),
            "rule_id": self.rule_id,
            "model_version": self.model_version,
            "features": self.features,
            "candle_closed_at": None
            if self.candle_closed_at_us is None
            else from_us(self.candle_closed_at_us).isoformat().replace("+00:00", "Z"),
            "headline": self.headline(),
        }

    def to_json_bytes(self, alert_id: int | None = None) -> bytes:
        return json.dumps(self.as_json(alert_id), separators=(",", ":")).encode()


def from_anomaly(anomaly: Anomaly, model_version: str | None = None, closed_at_us: int | None = None) -> AlertRecord:
    return AlertRecord(
        type="anomaly",
        exchange=anomaly.exchange,
        symbol=anomaly.symbol,
        at_us=anomaly.open_time_us,
        kind=anomaly.kind,
        detector=anomaly.detector,
        score=anomaly.score,
        model_version=model_version,
        features=dict(anomaly.features),
        candle_closed_at_us=closed_at_us,
    )


def from_crossing(crossing: Crossing) -> AlertRecord:
    rule = crossing.rule
    return AlertRecord(
        type="price",
        exchange=rule.exchange,
        symbol=rule.symbol,
        at_us=crossing.at_us,
        kind=rule.direction,
        detector=f"rule:{rule.id}",
        price=crossing.price,
        rule_id=rule.id,
        features={"level": str(rule.level), "note": rule.note},
    )
