"""Recorded trades, read through the same parsing and validation as the live producer.

Formats, detected from the content (and the file name where it helps), plain, gzip or inside a .zip:

- data.binance.vision CSV, `trades` (``id,price,qty,quote_qty,time,is_buyer_maker[,is_best_match]``) or
  `aggTrades` (``agg_id,price,qty,first_id,last_id,time,is_buyer_maker[,is_best_match]``), with or without
  a header row. Times are milliseconds, or microseconds in spot files from 2025 on (told apart by
  magnitude). The symbol comes from the file name (``BTCUSDT-aggTrades-2025-01-01.zip``) or --symbol; the
  market from --exchange or the columns (only spot files have `is_best_match`).
- Raw WebSocket captures: one JSON message per line, combined-stream wrapper ``{"stream":…,"data":…}``
  or bare, optionally preceded by a receive timestamp and a space. Binance `aggTrade`/`trade` events and
  Coinbase `match`/`last_match` are trades; every other message (klines, tickers, subscription replies,
  heartbeats) is skipped and counted.
- A JSON array (e.g. gzip), each item a REST trade record or a dict whose `info` is one (as ccxt stores
  Binance aggTrades). This one format is read whole; the others stream, so memory stays flat.

`open_recording` detects a file's format; `read` yields `Trade | Rejection` in file order; `SeenIds`
remembers the ids a replay has sent. Sending is candlelake.runs.replay's (and the files backfill's).
"""

from __future__ import annotations

import bisect
import csv
import gzip
import io
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import IO

from candlelake.exchanges import EXCHANGE_NAMES
from candlelake.sources import binance, coinbase
from candlelake.sources.fields import InvalidTrade, Rejection
from candlelake.trade import Trade

CSV_FORMATS = {binance.AGG_TRADES: "aggTrades-csv", binance.TRADES: "trades-csv"}
CAPTURE = "ws-capture"
JSON_ARRAY = "json-array"
_FILE_SYMBOL = re.compile(r"^([A-Za-z0-9]+)-(aggTrades|trades)-", re.IGNORECASE)
_BOOL = ("true", "false")


class ReplayError(ValueError):
    """A file that cannot be replayed at all (missing, unreadable, unknown format); the text says why."""


@dataclass
class Recording:
    """A recorded file, its detected format and, after or while `read` runs, what it held."""

    path: Path
    format: str
    exchange: str | None = None
    symbol: str | None = None
    has_header: bool = False
    lines: int = 0
    skipped: int = 0

    @property
    def source(self) -> str:
        return f"replay:{self.format}"


def open_recording(path: str | Path, exchange: str | None = None, symbol: str | None = None) -> Recording:
    """Check that `path` exists and holds a known format; raise `ReplayError` with one clear line if not."""
    file = Path(path)
    if exchange is not None and exchange not in EXCHANGE_NAMES:
        raise ReplayError(f"--exchange {exchange}: choose one of {', '.join(EXCHANGE_NAMES)}")
    if not file.exists():
        raise ReplayError(f"{file}: no such file")
    if not file.is_file():
        raise ReplayError(f"{file}: not a file")
    first = _first_line(file)
    if first is None:
        raise ReplayError(f"{file}: the file is empty")
    stripped = first.lstrip("\ufeff").strip()
    if stripped.startswith("["):
        return Recording(file, JSON_ARRAY, exchange, symbol.strip() if symbol else None)
    if "{" in stripped:
        return Recording(file, CAPTURE, exchange, symbol.strip() if symbol else None)
    if "," in stripped:
        return _csv_recording(file, next(csv.reader([stripped])), exchange, symbol)
    raise ReplayError(
        f"{file}: not a known format (data.binance.vision trades/aggTrades CSV, a capture with one JSON "
        "message per line, or a JSON array of trades)"
    )


def read(recording: Recording) -> Iterator[Trade | Rejection]:
    """Every trade or rejection in the file, in file order; skipped messages only count."""
    with ExitStack() as stack:
        for stream in _text_streams(recording.path, stack):
            try:
                if recording.format == CAPTURE:
                    yield from _read_capture(recording, stream)
                elif recording.format == JSON_ARRAY:
                    yield from _read_json_array(recording, stream)
                else:
                    yield from _read_csv(recording, stream)
            except (zipfile.BadZipFile, gzip.BadGzipFile, EOFError, OSError) as exc:
                # A truncated or corrupt archive shows only when its content is read.
                raise ReplayError(f"{recording.path}: cannot be read after line {recording.lines} ({exc})") from None


# --- file access -------------------------------------------------------------------------------------


def _text_streams(path: Path, stack: ExitStack) -> Iterator[IO[str]]:
    """Each text stream in the file: the file itself, its gunzipped content, or each member of a zip."""
    try:
        if zipfile.is_zipfile(path):
            archive = stack.enter_context(zipfile.ZipFile(path))
            members = [m for m in archive.infolist() if not m.is_dir()]
            if not members:
                raise ReplayError(f"{path}: the zip archive holds no file")
            for member in members:
                binary = stack.enter_context(archive.open(member))
                yield io.TextIOWrapper(binary, encoding="utf-8", errors="replace", newline="")
        elif _is_gzip(path):
            # The stack closes it: the stream must outlive this generator's frame.
            yield stack.enter_context(gzip.open(path, "rt", encoding="utf-8", errors="replace", newline=""))  # noqa: SIM115
        elif path.suffix.lower() == ".zip":
            raise ReplayError(f"{path}: not a readable zip archive")
        else:
            yield stack.enter_context(path.open(encoding="utf-8", errors="replace", newline=""))
    except (zipfile.BadZipFile, gzip.BadGzipFile, EOFError, OSError) as exc:
        raise ReplayError(f"{path}: cannot be read ({exc})") from None


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _first_line(path: Path) -> str | None:
    with ExitStack() as stack:
        for stream in _text_streams(path, stack):
            try:
                for line in stream:
                    if line.strip():
                        return line[:65536]
            except (zipfile.BadZipFile, gzip.BadGzipFile, EOFError, OSError) as exc:
                raise ReplayError(f"{path}: cannot be read ({exc})") from None
    return None


# --- data.binance.vision CSV -------------------------------------------------------------------------


def _csv_recording(path: Path, first: list[str], exchange: str | None, symbol: str | None) -> Recording:
    if exchange == "coinbase":
        raise ReplayError(f"{path}: a data.binance.vision CSV is Binance data; use --exchange binance or binance-usdm")
    has_header = not first[0].strip().isdigit()
    names = path.name + " " + _member_names(path)
    if "aggtrades" in names.lower():
        kind = binance.AGG_TRADES
    elif "-trades-" in names.lower():
        kind = binance.TRADES
    elif has_header:
        kind = binance.AGG_TRADES if any("first" in c.lower() for c in first) else binance.TRADES
    elif len(first) == 7:  # spot trades (bool at 5) or futures aggTrades (bool at 6)
        kind = binance.TRADES if first[5].strip().lower() in _BOOL else binance.AGG_TRADES
    elif len(first) in (6, 8):
        kind = binance.TRADES if len(first) == 6 else binance.AGG_TRADES
    else:
        raise ReplayError(f"{path}: a CSV with {len(first)} columns is neither a Binance trades nor aggTrades file")
    columns = len(first)
    base = 6 if kind == binance.TRADES else 7
    if columns not in (base, base + 1):
        raise ReplayError(f"{path}: a Binance {kind} CSV has {base} or {base + 1} columns, this one {columns}")
    market = exchange or ("binance" if columns == base + 1 else "binance-usdm")
    if symbol:
        chosen = binance.normalize_symbol(symbol)
    else:
        match = _FILE_SYMBOL.match(path.name) or next(
            (m for m in map(_FILE_SYMBOL.match, _member_names(path).split()) if m), None
        )
        if match is None:
            raise ReplayError(f"{path}: the file name does not say the symbol; pass --symbol (e.g. --symbol BTCUSDT)")
        chosen = match.group(1).upper()
    return Recording(path, CSV_FORMATS[kind], market, chosen, has_header)


def _member_names(path: Path) -> str:
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return " ".join(Path(n).name for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        pass
    return ""


def _read_csv(recording: Recording, stream: IO[str]) -> Iterator[Trade | Rejection]:
    kind = binance.AGG_TRADES if recording.format == CSV_FORMATS[binance.AGG_TRADES] else binance.TRADES
    assert recording.exchange is not None and recording.symbol is not None
    for row in csv.reader(stream):
        recording.lines += 1
        if not row or not "".join(row).strip():
            continue
        if recording.lines == 1:
            row[0] = row[0].lstrip("\ufeff")  # a byte-order mark is not part of the first id
        if recording.has_header and not row[0].strip().isdigit() and recording.lines == 1:
            continue  # the header row
        try:
            yield binance.parse_csv_row(
                row, kind=kind, exchange=recording.exchange, symbol=recording.symbol, source=recording.source
            )
        except InvalidTrade as exc:
            yield Rejection(",".join(row), exc.code, str(exc), recording.source)


# --- JSON captures and arrays ------------------------------------------------------------------------


def _json(text: str) -> object:
    # Numbers parse as exact decimals, and NaN/Infinity as Decimal so validation names them.
    return json.loads(text, parse_float=Decimal, parse_constant=Decimal)


def _read_capture(recording: Recording, stream: IO[str]) -> Iterator[Trade | Rejection]:
    for line in stream:
        recording.lines += 1
        text = line.strip().lstrip("\ufeff")
        if not text:
            continue
        if not text.startswith("{"):
            _, _, rest = text.partition(" ")  # a receive timestamp before the message
            rest = rest.strip()
            if not rest.startswith("{"):
                yield Rejection(text, "malformed", "not a JSON message", recording.source)
                continue
            text = rest
        try:
            message = _json(text)
        except ValueError as exc:
            yield Rejection(text, "malformed", f"not valid JSON ({exc})", recording.source)
            continue
        outcome = _message(recording, message, partial(str, text), None)
        if outcome is None:
            recording.skipped += 1
        else:
            yield outcome


def _read_json_array(recording: Recording, stream: IO[str]) -> Iterator[Trade | Rejection]:
    try:
        items = _json(stream.read())
    except ValueError as exc:
        raise ReplayError(f"{recording.path}: not a valid JSON array ({exc})") from None
    if not isinstance(items, list):
        raise ReplayError(f"{recording.path}: expected a JSON array of trades")
    for item in items:
        recording.lines += 1
        raw = partial(_dump, item)  # serialized only for a rejection: most items are trades
        if isinstance(item, dict) and isinstance(item.get("info"), dict):
            carried = item.get("symbol")
            outcome = _message(recording, item["info"], raw, carried if isinstance(carried, str) else None)
        else:
            outcome = _message(recording, item, raw, None)
        if outcome is None:
            recording.skipped += 1
        else:
            yield outcome


def _dump(item: object) -> str:
    return json.dumps(item, default=str, separators=(",", ":"))


def _message(
    recording: Recording, message: object, raw: Callable[[], str], carried_symbol: str | None
) -> Trade | Rejection | None:
    """One decoded message as a trade, a rejection, or None when it is not a trade (skipped)."""
    if not isinstance(message, dict):
        return Rejection(raw(), "malformed", "a message must be a JSON object", recording.source)
    data = message.get("data") if isinstance(message.get("data"), dict) and "stream" in message else message
    assert isinstance(data, dict)
    try:
        if coinbase.is_trade(data):
            source = "replay:coinbase-ws"
            if recording.exchange not in (None, "coinbase"):
                raise InvalidTrade("wrong-exchange", f"a Coinbase message in a {recording.exchange} replay")
            trade = coinbase.parse_match(data, source=source)
            if recording.symbol is not None and trade.symbol != recording.symbol.upper():
                return None  # --symbol picks one product out of a capture
            return trade
        elif "type" not in data and binance.is_trade(data):
            source = "replay:binance-ws" if "e" in data else "replay:binance-rest"
            if recording.exchange == "coinbase":
                raise InvalidTrade("wrong-exchange", "a Binance message in a coinbase replay")
            wanted = binance.normalize_symbol(recording.symbol) if recording.symbol else None
            trade = binance.parse_trade(
                data,
                exchange=recording.exchange or binance.market_of(data),
                source=source,
                symbol=carried_symbol if carried_symbol is not None else wanted,
            )
            if wanted is not None and trade.symbol != wanted:
                return None  # --symbol picks one market out of a capture
            return trade
        else:
            return None
    except InvalidTrade as exc:
        return Rejection(raw(), exc.code, str(exc), source)


class SeenIds:
    """Trade ids seen per market, kept as merged ranges: a file in id order costs one range per market."""

    def __init__(self) -> None:
        self._ranges: dict[str, tuple[list[int], list[int]]] = {}

    def add(self, market: str, trade_id: int) -> bool:
        """Record `trade_id`; False when it was already seen."""
        starts, ends = self._ranges.setdefault(market, ([], []))
        i = bisect.bisect_right(starts, trade_id) - 1
        if i >= 0 and ends[i] >= trade_id:
            return False
        joins_left = i >= 0 and ends[i] == trade_id - 1
        joins_right = i + 1 < len(starts) and starts[i + 1] == trade_id + 1
        if joins_left and joins_right:
            ends[i] = ends[i + 1]
            del starts[i + 1], ends[i + 1]
        elif joins_left:
            ends[i] = trade_id
        elif joins_right:
            starts[i + 1] = trade_id
        else:
            starts.insert(i + 1, trade_id)
            ends.insert(i + 1, trade_id)
        return True

    def ranges(self, market: str) -> int:
        return len(self._ranges.get(market, ([], []))[0])
