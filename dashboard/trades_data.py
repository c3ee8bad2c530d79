"""What the dashboard reads of the lake: raw trades, through DuckDB (candlelake.serve.lake_trades).

The lake is read where the platform writes it (CANDLELAKE_LAKE_DIR), committed files only, on a
read-only connection opened per read. Cached for two seconds: the tape refreshes about that often, and
every viewer of a market shares one read.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pandas as pd
import streamlit as st

from candlelake.config import load_settings
from candlelake.serve import lake_trades
from candlelake.serve.lake_trades import Table
from dashboard.data import MAX_ENTRIES, DataError


def _frame(table: Table) -> pd.DataFrame:
    return table.frame()


def _read(work: str, read: Callable[[], Table]) -> Table:
    try:
        return read()
    except (OSError, ValueError, RuntimeError) as exc:  # a lake folder gone, a catalog file unreadable
        lake = load_settings().lake_dir
        raise DataError(f"cannot read {work} from the lake at {lake}: {str(exc).splitlines()[0]}") from None


@st.cache_data(ttl=2, show_spinner=False, max_entries=MAX_ENTRIES)
def minute_trades(exchange: str, symbol: str, minute: datetime) -> pd.DataFrame:
    """The trades of the 1m candle opening at `minute`, oldest first, each once."""
    settings = load_settings()
    return _frame(_read("the candle's trades", lambda: lake_trades.minute_trades(settings, exchange, symbol, minute)))


@st.cache_data(ttl=2, show_spinner=False, max_entries=MAX_ENTRIES)
def tape(exchange: str, symbol: str, until: datetime, limit: int) -> pd.DataFrame:
    """The market's newest `limit` trades of the day before `until`, oldest first."""
    settings = load_settings()
    return _frame(
        _read(
            "the newest trades",
            lambda: lake_trades.recent_trades(
                settings, exchange, symbol, limit=limit, lookback=timedelta(hours=24), now=until
            ),
        )
    )


def candle_of(frame: pd.DataFrame) -> lake_trades.TradesCandle | None:
    return lake_trades.candle_of(frame.to_dict("records"))
