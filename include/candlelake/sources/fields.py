"""Boundary validation: raw exchange fields in, a canonical `Trade` or a `Rejection` with a reason out.

Every adapter hands its raw fields to `make_trade`, which is the one place that decides what a valid
trade is. The lake stores prices and quantities as DECIMAL(28,10), so a value with more than 10
fractional or 18 integer digits cannot be stored exactly and is rejected rather than rounded.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from candlelake.exchanges import EXCHANGE_NAMES, EXCHANGES
from candlelake.trade import Trade
from candlelake.util import now_us, to_us

MAX_FRACTION_DIGITS = 10
MAX_INTEGER_DIGITS = 18
# Nothing traded on a crypto exchange before 2009 (the first Bitcoin block); earlier times are unit errors.
EARLIEST_TRADE_US = to_us(datetime(2009, 1, 1, tzinfo=UTC))
MAX_FUTURE_US = 5 * 60 * 1_000_000
# Epoch milliseconds stay below 10**14 until the year 5138; epoch microseconds pass it in 1973.
MICROSECONDS_FROM = 10**14

_BINANCE_SYMBOL = re.compile(r"^[A-Z0-9]{2,40}$")
_COINBASE_PRODUCT = re.compile(r"^[A-Z0-9]{1,20}-[A-Z0-9]{1,20}$")


class InvalidTrade(ValueError):
    """A raw trade that cannot become a `Trade`; `code` groups reasons in summaries, the text explains."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Rejection:
    """A raw message that did not become a trade, kept whole so nothing is lost silently."""

    raw: str
    code: str
    reason: str
    source: str


def require(payload: dict[str, object], name: str) -> object:
    """The field `name` of a raw payload; missing or null fields are rejections."""
    if name not in payload or payload[name] is None:
        raise InvalidTrade("missing-field", f"missing field {name!r}")
    return payload[name]


def require_all(payload: dict[str, object], names: dict[str, str], what: str) -> None:
    """Every field of `names` (field -> what it is) present and not null, else one rejection naming them all.

    For messages whose format says a field is always sent: a frame without one is not trusted, even
    where the value could be guessed.
    """
    missing = [name for name in names if payload.get(name) is None]
    if missing:
        listed = ", ".join(f"{name!r} ({names[name]})" for name in missing)
        plural = "s" if len(missing) > 1 else ""
        raise InvalidTrade("missing-field", f"missing field{plural} {listed} in {what}")


# A plain decimal string within DECIMAL(28,10) on its face: the common case, checked without building
# and normalizing a Decimal twice (replay validates tens of thousands of values a second).
_PLAIN_DECIMAL = re.compile(r"[0-9]{1,18}(?:\.[0-9]{0,10})?")
_WHOLE_NUMBER = re.compile(r"\s*-?\d{1,20}\s*")


def decimal_field(value: object, name: str) -> Decimal:
    """An exact decimal from a string (or an exactly parsed JSON number); never from a binary float."""
    if type(value) is str and _PLAIN_DECIMAL.fullmatch(value):
        return Decimal(value)
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise InvalidTrade("wrong-type", f"{name} must be a decimal string, got {type(value).__name__} {value!r}")
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise InvalidTrade("wrong-type", f"{name} {value!r} is not a decimal number") from None
    if not number.is_finite():
        raise InvalidTrade("not-finite", f"{name} {value!r} is not a finite number")
    _, digits, exponent = number.normalize().as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    if -exponent > MAX_FRACTION_DIGITS:
        raise InvalidTrade(
            "too-many-decimals", f"{name} {value!r} has {-exponent} fractional digits (at most {MAX_FRACTION_DIGITS})"
        )
    integer_digits = len(digits) + exponent
    if integer_digits > MAX_INTEGER_DIGITS:
        raise InvalidTrade(
            "too-many-digits", f"{name} {value!r} has {integer_digits} integer digits (at most {MAX_INTEGER_DIGITS})"
        )
    return number


def integer_field(value: object, name: str) -> int:
    """A whole number from an int or a string of digits."""
    if isinstance(value, bool):
        raise InvalidTrade("wrong-type", f"{name} must be a whole number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _WHOLE_NUMBER.fullmatch(value):
        return int(value)
    raise InvalidTrade("wrong-type", f"{name} must be a whole number, got {type(value).__name__} {value!r}")


def bool_field(value: object, name: str) -> bool:
    """A JSON boolean or the text true/false (any case), as data.binance.vision writes it."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InvalidTrade("wrong-type", f"{name} must be true or false, got {type(value).__name__} {value!r}")


def text_field(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidTrade("wrong-type", f"{name} must be text, got {type(value).__name__} {value!r}")
    return value


def epoch_us(value: object, name: str) -> int:
    """Epoch milliseconds or microseconds (told apart by magnitude) as epoch microseconds."""
    number = integer_field(value, name)
    return number if number >= MICROSECONDS_FROM else number * 1000


def iso_us(value: object, name: str) -> int:
    """An ISO 8601 time (Coinbase: `2021-04-17T16:43:30.244075Z`) as epoch microseconds, exactly."""
    text = text_field(value, name)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidTrade("wrong-type", f"{name} {text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise InvalidTrade("wrong-type", f"{name} {text!r} has no time zone")
    return to_us(moment)


@functools.lru_cache(maxsize=4096)
def check_symbol(exchange: str, symbol: str) -> str:
    """The symbol, when it has the exchange's shape (cached: a feed repeats a handful of symbols)."""
    pattern = _COINBASE_PRODUCT if exchange == "coinbase" else _BINANCE_SYMBOL
    if not pattern.match(symbol):
        shape = "a product id like BTC-USD" if exchange == "coinbase" else "upper-case letters and digits, like BTCUSDT"
        raise InvalidTrade("bad-symbol", f"symbol {symbol!r} is not {shape}")
    return symbol


def make_trade(
    *,
    exchange: str,
    symbol: object,
    trade_id: object,
    price: object,
    qty: object,
    trade_time_us: int,
    is_buyer_maker: bool,
    source: str,
    ingest_time_us: int | None = None,
) -> Trade:
    """The one gate every raw trade passes; raises `InvalidTrade` with a reason a person can read."""
    if exchange not in EXCHANGES:
        raise InvalidTrade("bad-exchange", f"exchange {exchange!r} is not one of {', '.join(EXCHANGE_NAMES)}")
    checked_symbol = check_symbol(exchange, text_field(symbol, "symbol"))
    checked_id = integer_field(trade_id, "trade_id")
    if checked_id < 0:
        raise InvalidTrade("wrong-type", f"trade_id {checked_id} is negative")
    checked_price = decimal_field(price, "price")
    if checked_price <= 0:
        raise InvalidTrade("non-positive-price", f"price {price!r} is not above zero")
    checked_qty = decimal_field(qty, "qty")
    if checked_qty < 0:
        raise InvalidTrade("negative-qty", f"qty {qty!r} is negative")
    now = now_us()
    ingest = now if ingest_time_us is None else ingest_time_us
    if trade_time_us < EARLIEST_TRADE_US:
        raise InvalidTrade("time-too-early", f"trade time {_iso(trade_time_us)} is before 2009")
    if trade_time_us > now + MAX_FUTURE_US:
        raise InvalidTrade("time-in-future", f"trade time {_iso(trade_time_us)} is more than 5 minutes in the future")
    return Trade(
        exchange=exchange,
        symbol=checked_symbol,
        trade_id=checked_id,
        price=checked_price,
        qty=checked_qty,
        trade_time_us=trade_time_us,
        is_buyer_maker=is_buyer_maker,
        ingest_time_us=ingest,
        source=source,
    )


def _iso(us: int) -> str:
    try:
        return datetime.fromtimestamp(us / 1e6, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return f"{us} µs since 1970"
