"""The dashboard's Trades page through `streamlit.testing`: PostgreSQL's candles (Binance's own XRP/ETH
klines, tests/support/dashboard_seed.py) beside the lake's trades of the same market (the real trades
behind those klines, laid out by tests/support/lake_seed.py with replays, an uncommitted batch and a
compacted day). What the page prints is checked against the klines and the trades themselves.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from candlelake.config import PROJECT_ROOT, Settings
from tests.support.dashboard_seed import SYMBOL, Seed, seed
from tests.support.lake_seed import build_lake, lake_settings, real_trades
from tests.support.reference_candles import reference_candles

if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

pytestmark = pytest.mark.integration

APP = str(PROJECT_ROOT / "dashboard" / "app.py")
BUSY = datetime(2019, 10, 12, 12, 0, tzinfo=UTC)  # the search for a busy minute starts here


@pytest.fixture(scope="module")
def seeded(services: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Seed, Settings]]:
    rows = seed(services.pg_dsn(), services.reports_dir / "data_docs", with_operations=False)
    lake = lake_settings(services, tmp_path_factory.mktemp("trades-page"))
    build_lake(lake, real_trades(rows.exchange))
    try:
        yield rows, lake
    finally:
        rows.delete()


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    st.cache_data.clear()


@pytest.fixture
def page(seeded: tuple[Seed, Settings], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Seed, Settings]]:
    _, lake = seeded
    for name, path in (("LAKE", lake.lake_dir), ("CURATED", lake.curated_dir), ("CHECKPOINT", lake.checkpoint_dir)):
        monkeypatch.setenv(f"CANDLELAKE_{name}_DIR", str(Path(path)))
    yield seeded


def open_trades(exchange: str, minute: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["trades_market"] = f"{exchange}:{SYMBOL}"
    if minute is not None:
        at.query_params["trades_minute"] = minute
    at.run()
    return at.switch_page("views/trades.py").run()


def metric(at: AppTest, label: str) -> str:
    [found] = [m.value for m in at.metric if m.label == label]
    return found


def test_a_candles_trades_make_exactly_its_candle(page: tuple[Seed, Settings]) -> None:
    rows, _ = page
    reference = reference_candles(real_trades(rows.exchange))
    minute = max(
        (k[2] for k in reference if BUSY <= k[2] < BUSY + timedelta(hours=1)),
        key=lambda m: reference[(rows.exchange, SYMBOL, m)].trades,
    )
    want = reference[(rows.exchange, SYMBOL, minute)]
    at = open_trades(rows.exchange, f"{minute:%Y-%m-%d %H:%M}")
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert metric(at, "trades (trades)") == str(want.trades)
    for name in ("open", "high", "low", "close", "volume"):
        assert Decimal(metric(at, f"{name} (trades)")) == getattr(want, name), name
    assert [f"The {want.trades:,} trades make exactly PostgreSQL's candle (closed)."]
    [trades, tape] = [d.value for d in at.dataframe]
    assert len(trades) == want.trades and set(trades["source"]) == {"rest"}  # each trade once, the first copy
    assert list(trades["trade id"]) == sorted(trades["trade id"])
    # The tape: the market's newest 50 trades, newest first, ending with the fixture's last trade.
    newest = sorted(real_trades(rows.exchange), key=lambda t: (t.trade_time_us, t.trade_id))[-50:]
    assert list(tape["trade id"]) == [t.trade_id for t in reversed(newest)]


def test_a_quiet_minute_and_a_bad_minute_are_explained(page: tuple[Seed, Settings]) -> None:
    rows, _ = page
    quiet = next(c["open_time"] for c in rows.candles if c["trades"] == 0)
    at = open_trades(rows.exchange, f"{quiet:%Y-%m-%d %H:%M}")
    assert not at.exception
    assert any("A quiet minute" in i.value for i in at.info)
    at = open_trades(rows.exchange, "yesterday noon")
    assert not at.exception
    assert [e.value for e in at.error] == ["'yesterday noon' is not a minute: write it as 2019-10-13 11:19"]
