"""Rule-based anomalies of a closed 1m bar: z-scores of its return and volume past a market's thresholds.

A rule fires on the features of one bar (candlelake.analytics.features): its log return against the hour
before it (`return_z`) and its volume against the same hour (`volume_z`). Four kinds, most specific first,
one per bar:

- `pump`: the price jumped (return_z >= return threshold) on unusual volume (volume_z >= volume threshold);
- `dump`: the price fell as far (return_z <= -return threshold) on unusual volume;
- `price_move`: the return alone passed its threshold;
- `volume_spike`: the volume alone passed its threshold.

A bar whose z-scores are unknown (an hour not wholly watched, a flat hour) fires nothing: no rule guesses.
Thresholds are per market, with a default for the rest: `CANDLELAKE_ANOMALY_THRESHOLDS` reads like
`return_z=4,volume_z=5;binance:BTCUSDT=return_z=5,volume_z=6`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from candlelake.analytics.features import Features

Kind = Literal["pump", "dump", "price_move", "volume_spike"]
KINDS: tuple[Kind, ...] = ("pump", "dump", "price_move", "volume_spike")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """How many standard deviations from its hour a bar's return and volume must be to fire."""

    return_z: float = 4.0
    volume_z: float = 4.0

    def __post_init__(self) -> None:
        if not (self.return_z > 0 and self.volume_z > 0):
            raise ValueError(f"thresholds must be positive numbers of standard deviations, not {self}")


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One bar that a detector found unusual: what kind, how unusual (its score) and the features why."""

    exchange: str
    symbol: str
    open_time_us: int
    kind: str
    score: float
    detector: str
    features: dict[str, float | str | None] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.symbol}"


@dataclass(frozen=True)
class Rules:
    """The thresholds of every market: `default`, and those of markets named in `markets` ("exchange:symbol")."""

    default: Thresholds = Thresholds()
    markets: dict[str, Thresholds] = field(default_factory=dict)

    def thresholds(self, exchange: str, symbol: str) -> Thresholds:
        return self.markets.get(f"{exchange}:{symbol}", self.default)

    def check(self, exchange: str, symbol: str, bar: Features) -> Anomaly | None:
        """The anomaly `bar` is, by the market's thresholds, or None."""
        limits = self.thresholds(exchange, symbol)
        move = bar.return_z is not None and abs(bar.return_z) >= limits.return_z
        heavy = bar.volume_z is not None and bar.volume_z >= limits.volume_z
        kind: Kind
        if move and heavy:
            kind = "pump" if (bar.return_z or 0.0) > 0 else "dump"
        elif move:
            kind = "price_move"
        elif heavy:
            kind = "volume_spike"
        else:
            return None
        return Anomaly(
            exchange, symbol, bar.open_time_us, kind, self.score(exchange, symbol, bar) or 0.0, "rules", evidence(bar)
        )

    def score(self, exchange: str, symbol: str, bar: Features) -> float | None:
        """How far past the market's thresholds a bar is: the larger of its |return_z| and volume_z, each in
        its threshold (1.0 = just at it, where `check` starts to fire); None when both are unknown."""
        if bar.return_z is None and bar.volume_z is None:
            return None
        limits = self.thresholds(exchange, symbol)
        return max(abs(bar.return_z or 0.0) / limits.return_z, (bar.volume_z or 0.0) / limits.volume_z)


def evidence(bar: Features) -> dict[str, float | str | None]:
    """The features that say why a bar fired, for the alert's record (decimals as text: exact)."""
    return {
        "close": str(bar.close),
        "return_1m": bar.return_1m,
        "return_z": bar.return_z,
        "volume_z": bar.volume_z,
        "trades_z": bar.trades_z,
        "volatility_15m": bar.volatility_15m,
        "ma_15m": None if bar.ma_15m is None else str(bar.ma_15m),
    }


def parse_rules(text: str) -> Rules:
    """Rules from `CANDLELAKE_ANOMALY_THRESHOLDS`: `;`-separated parts, each `[exchange:symbol=]name=value,...`
    (a part without a market sets the default). ValueError naming the part that cannot be read."""
    default = Thresholds()
    markets: dict[str, Thresholds] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        market, _, values = part.partition("=") if ":" in part.split("=", 1)[0] else ("", "", part)
        try:
            limits = _thresholds(values)
        except ValueError as exc:
            raise ValueError(f"anomaly thresholds {part!r}: {exc}") from None
        if market:
            markets[market.strip()] = limits
        else:
            default = limits
    return Rules(default, markets)


def _thresholds(values: str) -> Thresholds:
    given: dict[str, float] = {}
    for item in (i.strip() for i in values.split(",")):
        name, sep, number = item.partition("=")
        if not sep or name.strip() not in ("return_z", "volume_z"):
            raise ValueError("expected return_z=<number> and/or volume_z=<number>, separated by commas")
        try:
            given[name.strip()] = float(number)
        except ValueError:
            raise ValueError(f"{name.strip()} must be a number, not {number.strip()!r}") from None
    return Thresholds(**given)
