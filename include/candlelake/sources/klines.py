"""The exchange's own klines, the yardstick the curated candles are reconciled against.

Two sources give the same `Kline` records:

- Binance REST, spot `GET /api/v3/klines` or USD-M `GET /fapi/v1/klines`
  (`candlelake.sources.binance_rest.BinanceRest.klines`); one kline is a JSON array::

      [1499040000000, "0.01634790", "0.80000000", "0.01575800", "0.01577100", "148976.11427815",
       1499644799999, "2434.19055334", 308, "1756.87402397", "28.46694368", "0"]

- kline files as data.binance.vision publishes them (`<SYMBOL>-<interval>-<YYYY-MM-DD>.zip`, daily,
  or `<SYMBOL>-<interval>-<YYYY-MM>.zip`, monthly; each zip holds one CSV of the same name), or the
  CSV itself, anywhere under a folder. The same 12 columns, no header in spot files, a header line
  (`open_time,open,high,...`) in USD-M files; times are epoch milliseconds, or microseconds in spot
  files from 2025-01-01 on.

Where the files are is a folder (searched recursively), a glob (`/data/**/XRPETH-1m-2019-10-*.zip`) or one
file. Choosing between files and REST for a reconciliation run is candlelake.nightly.kline_sources'.

Columns: open time, open, high, low, close, volume (base asset), close time, quote asset volume,
number of trades, taker buy base volume, taker buy quote volume, ignore. Only the first six are
required (older exports and freqtrade's recordings stop there); the others are None when absent.
Prices and volumes become exact `Decimal`s from their text; a binary float never touches them.
"""

from __future__ import annotations

import csv
import glob
import io
import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from candlelake.util import day_bounds, from_us

# Binance's kline intervals. 1M (a calendar month) has no fixed length; nothing here needs one.
INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M")
_GLOB = re.compile(r"[*?\[]")
# Epoch milliseconds stay below 10**14 until the year 5138; epoch microseconds pass it in 1973.
MICROSECONDS_FROM = 10**14
_REQUIRED = 6


class KlineError(Exception):
    """Klines could not be had; the message says which and why, in one line."""


class KlineFormatError(KlineError, ValueError):
    """A kline record (a file line or a REST array) that is not a kline."""


class KlineFileNotFound(KlineError):
    """No kline file for the asked symbol, interval and day under the folder."""


class KlineSourceUnreachable(KlineError):
    """The kline source gave no answer at all (no connection, unknown host, timeout): nothing to compare with."""


@dataclass(frozen=True, slots=True)
class Kline:
    open_time: datetime  # aware, UTC
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    close_time: datetime | None = None
    quote_volume: Decimal | None = None
    trades: int | None = None  # Binance counts raw trades here, not aggregate trades
    taker_buy_volume: Decimal | None = None
    taker_buy_quote_volume: Decimal | None = None


def epoch_time(value: object, name: str = "time") -> datetime:
    """An epoch time in milliseconds or microseconds (told apart by size) as an aware UTC datetime."""
    number = _integer(value, name)
    return from_us(number if number >= MICROSECONDS_FROM else number * 1000)


def parse_kline(values: Sequence[object]) -> Kline:
    """One kline from its fields in Binance's order (6 to 12 of them); raises `KlineFormatError`."""
    if len(values) < _REQUIRED:
        raise KlineFormatError(f"a kline has at least {_REQUIRED} fields, this one {len(values)}: {list(values)!r}")
    field = list(values) + [None] * (12 - len(values))
    return Kline(
        open_time=epoch_time(field[0], "open time"),
        open=_decimal(field[1], "open"),
        high=_decimal(field[2], "high"),
        low=_decimal(field[3], "low"),
        close=_decimal(field[4], "close"),
        volume=_decimal(field[5], "volume"),
        close_time=None if _blank(field[6]) else epoch_time(field[6], "close time"),
        quote_volume=None if _blank(field[7]) else _decimal(field[7], "quote volume"),
        trades=None if _blank(field[8]) else _integer(field[8], "number of trades"),
        taker_buy_volume=None if _blank(field[9]) else _decimal(field[9], "taker buy base volume"),
        taker_buy_quote_volume=None if _blank(field[10]) else _decimal(field[10], "taker buy quote volume"),
    )


def check_interval(interval: str) -> str:
    if interval not in INTERVALS:
        raise KlineError(f"{interval!r} is not a Binance kline interval; one of {', '.join(INTERVALS)}")
    return interval


# --- kline files (data.binance.vision) -------------------------------------------------------------


def read_kline_file(path: Path) -> list[Kline]:
    """Every kline of one CSV, or of the CSVs inside one zip, in file order."""
    try:
        if path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as archive:
                members = [m for m in archive.namelist() if m.lower().endswith(".csv")]
                if not members:
                    raise KlineFormatError(f"{path}: the zip holds no CSV file")
                klines: list[Kline] = []
                for member in sorted(members):
                    text = archive.read(member).decode("utf-8-sig")
                    klines.extend(_parse_csv(text, f"{path}!{member}"))
                return klines
        return _parse_csv(path.read_text(encoding="utf-8-sig"), str(path))
    except zipfile.BadZipFile as error:
        raise KlineFormatError(f"{path}: not a readable zip file ({error})") from None
    except UnicodeDecodeError:
        raise KlineFormatError(f"{path}: not a text CSV file") from None
    except OSError as error:
        raise KlineError(f"{path}: cannot be read ({error.strerror or error})") from None


def kline_file_names(symbol: str, interval: str, day: date) -> tuple[str, ...]:
    """The names, daily first, under which data.binance.vision publishes `symbol`'s klines of `day`."""
    daily = f"{symbol}-{interval}-{day.isoformat()}"
    monthly = f"{symbol}-{interval}-{day:%Y-%m}"
    return (f"{daily}.zip", f"{daily}.csv", f"{monthly}.zip", f"{monthly}.csv")


def is_glob(location: str | Path) -> bool:
    return bool(_GLOB.search(str(location)))


def find_kline_file(location: str | Path, symbol: str, interval: str, day: date) -> Path:
    """The file holding `symbol`'s klines of `day`: a daily file, else a monthly one.

    `location` is a folder (searched recursively), a glob pattern (`**` crosses folders) or one file;
    only files named as data.binance.vision names them count.
    """
    names = kline_file_names(symbol, interval, day)
    if is_glob(location):
        candidates = [Path(p) for p in glob.glob(str(location), recursive=True)]
        where = f"matching {location}"
    else:
        path = Path(location)
        if path.is_file():
            candidates, where = [path], f"in {path}"
        elif path.is_dir():
            candidates, where = list(path.rglob(f"{symbol}-{interval}-*")), f"under {path}"
        else:
            raise KlineFileNotFound(f"kline folder {path} does not exist")
    found: dict[str, list[Path]] = {}
    for candidate in candidates:
        if candidate.name in names and candidate.is_file():
            found.setdefault(candidate.name, []).append(candidate)
    for name in names:
        if name in found:
            return sorted(found[name])[0]
    raise KlineFileNotFound(
        f"no {interval} kline file for {symbol} on {day.isoformat()} {where}: expected one of {', '.join(names)}"
    )


def file_klines(location: str | Path, symbol: str, day: date, interval: str = "1m") -> list[Kline]:
    """`symbol`'s klines of the UTC `day` from the data.binance.vision files at `location` (see `find_kline_file`)."""
    path = find_kline_file(location, symbol, check_interval(interval), day)
    start, end = day_bounds(day)
    return sorted((k for k in read_kline_file(path) if start <= k.open_time < end), key=lambda k: k.open_time)


# --- parsing helpers ---------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?[0-9]")


def _parse_csv(text: str, where: str) -> list[Kline]:
    klines = []
    for number, row in _rows(text):
        if number == 1 and row and not _NUMBER.match(row[0].strip()):
            continue  # a header line (USD-M files have one)
        try:
            klines.append(parse_kline([cell.strip() for cell in row]))
        except KlineFormatError as error:
            raise KlineFormatError(f"{where} line {number}: {error}") from None
    return klines


def _rows(text: str) -> Iterator[tuple[int, list[str]]]:
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if row and any(cell.strip() for cell in row):
            yield number, row


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _decimal(value: object, name: str) -> Decimal:
    # JSON numbers arrive as Decimal (the REST client parses fractions so); a float would already be inexact.
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise KlineFormatError(f"{name} must be a decimal string, not {type(value).__name__} {value!r}")
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise KlineFormatError(f"{name} {value!r} is not a decimal number") from None
    if not number.is_finite() or number < 0:
        raise KlineFormatError(f"{name} {value!r} is not a finite, non-negative number")
    return number


def _integer(value: object, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    raise KlineFormatError(f"{name} must be a whole number, not {value!r}")
