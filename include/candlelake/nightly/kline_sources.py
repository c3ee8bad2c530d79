"""Where a reconciliation run gets the exchange's klines: kline files, the REST API, or files first.

The files are given by the setting CANDLELAKE_KLINE_FILES or a DAG run's form (`kline_source`). A run's
`Klines` takes a market's day from its file when there is one (source 'auto', the default) and from REST
otherwise; a REST API that cannot be reached at all (no HTTP answer: refused, unknown host, timed out, as
on a machine without internet) is `KlineSourceUnreachable`, which reconciliation reports as skipped, not
as a failure. The records and the file reading are candlelake.sources.klines'.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import date
from pathlib import Path

from candlelake.config import Settings
from candlelake.exchanges import EXCHANGES, KLINE_EXCHANGES
from candlelake.sources.binance_rest import BinanceRest
from candlelake.sources.klines import (
    Kline,
    KlineError,
    KlineFileNotFound,
    KlineSourceUnreachable,
    check_interval,
    file_klines,
    find_kline_file,
)
from candlelake.util import day_bounds

# auto: a market's kline file when one is given and has its day, else the REST API.
SOURCES = ("auto", "rest", "files")
# How long the check "does the REST API answer at all" waits, after its requests have failed.
PROBE_TIMEOUT_S = 5.0


class RestKlines:
    """An exchange's klines over its REST API (the base URL from the settings)."""

    name = "rest"

    def __init__(
        self,
        settings: Settings,
        exchange: str,
        interval: str = "1m",
        client: BinanceRest | None = None,
        probe: Callable[[str], bool] | None = None,
    ) -> None:
        self.interval = check_interval(interval)
        self.exchange = exchange
        self.url = EXCHANGES[exchange].rest_base(settings)
        self._rest = client or BinanceRest(exchange, self.url)
        self._probe = probe or answers

    def day_klines(self, symbol: str, day: date) -> list[Kline]:
        """The day's klines; `KlineSourceUnreachable` when the API gave no answer at all, else `ExchangeError`."""
        from candlelake.sources.http import ExchangeUnavailable

        start, end = day_bounds(day)
        try:
            return list(self._rest.klines(symbol, self.interval, start, end))
        except ExchangeUnavailable as error:
            # The client's retries are spent. Down and answering 5xx, rate limiting, or sending garbage is a
            # failure worth a red task; not reachable at all (offline, no route, no such host) means there
            # is no kline source here, which is no verdict on our candles.
            if self._probe(self.url):
                raise
            raise KlineSourceUnreachable(f"{self.exchange} REST API at {self.url} cannot be reached: {error}") from None

    def close(self) -> None:
        self._rest.close()


def answers(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether anything answers HTTP at `url` (any status counts); False on no connection or no answer in time."""
    import httpx

    try:
        httpx.get(url, timeout=timeout_s)
    except httpx.TransportError:  # connect errors, timeouts, unknown hosts and unsupported URLs alike
        return False
    return True


class FileKlines:
    """Klines from data.binance.vision files at a location: a folder, a glob pattern or one file."""

    name = "files"

    def __init__(self, location: str | Path, interval: str = "1m") -> None:
        self.location = location
        self.interval = check_interval(interval)

    def has(self, symbol: str, day: date) -> bool:
        """Whether a kline file for `symbol`'s `day` is there."""
        try:
            find_kline_file(self.location, symbol, self.interval, day)
        except KlineFileNotFound:
            return False
        return True

    def day_klines(self, symbol: str, day: date) -> list[Kline]:
        return file_klines(self.location, symbol, day, self.interval)

    def close(self) -> None:
        pass


KlineSource = RestKlines | FileKlines


class Klines:
    """One run's klines of an exchange: from `files` where they have the market's day, else from `rest`.

    Either may be None (source 'rest' or 'files'). Once the REST API has been found unreachable it is
    not asked again in this run: every later market is unreachable too, at once.
    """

    def __init__(self, files: FileKlines | None, rest: RestKlines | None) -> None:
        if files is None and rest is None:
            raise ValueError("give kline files, a REST source or both")
        self.files = files
        self.rest = rest
        self.unreachable: KlineSourceUnreachable | None = None

    def day_klines(self, symbol: str, day: date) -> tuple[str, list[Kline]]:
        """('files' or 'rest': where they came from, `symbol`'s klines of `day`).

        Raises `KlineSourceUnreachable`, another `KlineError` or an `ExchangeError`.
        """
        if self.files is not None and (self.rest is None or self.files.has(symbol, day)):
            return FileKlines.name, self.files.day_klines(symbol, day)
        assert self.rest is not None
        if self.unreachable is not None:
            raise self.unreachable
        try:
            return RestKlines.name, self.rest.day_klines(symbol, day)
        except KlineSourceUnreachable as error:
            self.unreachable = error
            raise

    def close(self) -> None:
        for source in (self.files, self.rest):
            if source is not None:
                source.close()


def has_klines(exchange: str) -> bool:
    return exchange in KLINE_EXCHANGES


def kline_source(
    settings: Settings,
    exchange: str,
    source: str,
    files: str | Path | None = None,
    interval: str = "1m",
) -> Klines | None:
    """The klines of `exchange` by `source` ('auto', 'rest' or 'files'), or None when the exchange has none.

    `files` (a folder, glob or file; relative to the project) defaults to the setting CANDLELAKE_KLINE_FILES.
    'auto' takes a market's day from the files when they have it and from the REST API otherwise; 'files'
    needs files, 'rest' ignores them.
    """
    if source not in SOURCES:
        raise KlineError(f"kline source must be one of {', '.join(SOURCES)}, not {source!r}")
    if not has_klines(exchange):
        return None
    location = str(files).strip() if files not in (None, "") else settings.kline_files.strip()
    if source == "files" and not location:
        raise KlineError(
            "kline source 'files' needs the folder of the kline files (a folder, glob or file: the form's "
            "files_dir or CANDLELAKE_KLINE_FILES)"
        )
    found = FileKlines(_resolve(location, settings.project_root), interval) if location and source != "rest" else None
    rest = RestKlines(settings, exchange, interval) if source != "files" else None
    return Klines(found, rest)


def _resolve(location: str, root: Path) -> str:
    expanded = os.path.expanduser(location)
    return expanded if os.path.isabs(expanded) else str(root / expanded)
