"""Every dashboard page through `streamlit.testing` against the platform's real PostgreSQL.

The pages read rows seeded by tests/support/dashboard_seed.py: Binance's own XRP/ETH 1m klines stored as
candles (under an exchange name unique to the run), an open trade-id gap, validations, a correction, dead
letters, health checks and streaming progress. What a page draws is checked against numbers computed
here from the klines themselves, never against the dashboard's own code. The coverage tests seed a market
of their own (`covered`): candles and the `coverage` rows that say which of their time was seen.
"""

from __future__ import annotations

import base64
import json
import struct
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pandas as pd
import psycopg2
import psycopg2.errors
import pytest
import streamlit as st
from psycopg2.extras import execute_values
from streamlit.testing.v1 import AppTest

from candlelake import coverage
from candlelake.config import PROJECT_ROOT, Settings
from candlelake.serve import rollups
from candlelake.util import from_us, to_us
from tests.support.dashboard_seed import LONG_SYMBOL, RECENT_SYMBOL, SYMBOL, Seed, klines, seed

# The app adds the project root itself under `streamlit run`; this process imports `dashboard` directly.
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from dashboard import charts, data, quality_data

pytestmark = pytest.mark.integration

APP = str(PROJECT_ROOT / "dashboard" / "app.py")
NEWEST = datetime(2019, 10, 13, 11, 19, tzinfo=UTC)  # the fixture's last kline


@pytest.fixture(scope="module")
def seeded(services: Settings) -> Iterator[Seed]:
    rows = seed(services.pg_dsn(), services.reports_dir / "data_docs")
    try:
        yield rows
    finally:
        rows.delete()


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    # st.cache_data is process-wide; an earlier test's cached rows must not leak into this one.
    st.cache_data.clear()


def open_app(**params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def _trace_values(values: Any) -> list[Any]:
    """A Plotly trace array: a JSON list, or plotly's typed-array form {dtype, bdata}."""
    if isinstance(values, list):
        return values
    if isinstance(values, dict) and "bdata" in values:
        raw = base64.b64decode(values["bdata"])
        fmt = {"f8": "d", "f4": "f", "i4": "i", "i2": "h", "i1": "b", "u1": "B", "u2": "H", "u4": "I"}[values["dtype"]]
        return list(struct.unpack(f"<{len(raw) // struct.calcsize(fmt)}{fmt}", raw))
    raise AssertionError(f"unexpected trace array {values!r}")


def figure(at: AppTest) -> dict[str, Any]:
    charts = at.get("plotly_chart")
    assert len(charts) == 1, f"expected one chart, got {len(charts)}"
    return json.loads(charts[0].proto.spec)


def traces(at: AppTest) -> dict[str, dict[str, Any]]:
    return {t.get("name", t["type"]): t for t in figure(at)["data"]}


def drawn(at: AppTest) -> tuple[int, int]:
    """(candles with trades, complete or partial, candles without) on the chart."""
    t = traces(at)
    with_trades = len(_trace_values(t["price"]["x"])) + len(_trace_values(t["partial"]["x"]))
    return with_trades, len(_trace_values(t["no trades"]["x"]))


def partial_drawn(at: AppTest) -> int:
    return len(_trace_values(traces(at)["partial"]["x"]))


def partial_buckets(bucket_s: int, start: datetime, end: datetime, rows: list[Any], covered: list[Any]) -> int:
    """Buckets of `rows` (with trades) opening in [start, end) that the `covered` intervals do not hold whole."""
    merged = coverage.merge((i.started_us, i.ended_us) for i in covered)
    epoch = lambda t: int(t.timestamp())  # noqa: E731
    opens = {epoch(r.open_time) // bucket_s * bucket_s for r in rows if r.trades}
    opens = {b for b in opens if epoch(start) <= b < epoch(end)}
    return sum(1 for b in opens if coverage.state_of(merged, b * 1_000_000, bucket_s * 1_000_000) == coverage.PARTIAL)


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(label))


def expected_buckets(
    bucket_s: int, start: datetime, end: datetime, rows: list[Any] | None = None
) -> tuple[int, int, list[Any]]:
    """From the rows alone (the klines unless given: anything with open_time and trades): buckets opening
    in [start, end) with and without trades (from the market's first trade on), and the rows inside them."""
    rows = klines() if rows is None else rows
    first_trade = min(k.open_time for k in rows if k.trades)
    epoch = lambda t: int(t.timestamp())  # noqa: E731
    buckets: dict[int, int] = {}
    inside = []
    for k in rows:
        b = epoch(k.open_time) // bucket_s * bucket_s
        if b >= epoch(start) and b < epoch(end) and k.open_time >= first_trade.replace(second=0):
            buckets[b] = buckets.get(b, 0) + k.trades
            inside.append(k)
    with_trades = sum(1 for n in buckets.values() if n)
    return with_trades, len(buckets) - with_trades, inside


def choose(at: AppTest, exchange: str, symbol: str = SYMBOL, lookback: str | None = None, bucket: str | None = None):
    """Pick the view with the widgets, as a user clicks through them."""
    at.selectbox(key="exchange").set_value(exchange).run()
    at.selectbox(key="symbol").set_value(symbol).run()
    if lookback:
        at.segmented_control(key="lookback").set_value(lookback).run()
    if bucket:
        at.selectbox(key="bucket").set_value(bucket).run()
    return at


def view(exchange: str, symbol: str = SYMBOL, lookback: str = "1h", bucket: str = "1m", **more: str) -> AppTest:
    """Open the page on a link carrying the view (any bucket can be typed, so links carry any text)."""
    return open_app(exchange=exchange, symbol=symbol, lookback=lookback, bucket=bucket, **more)


def table(at: AppTest, column: str) -> pd.DataFrame:
    """The page's dataframe that has `column`."""
    frames = [d.value for d in at.dataframe if column in d.value.columns]
    assert frames, f"no table with a {column!r} column"
    return frames[0]


# ---- Markets ----------------------------------------------------------------------------------------


def test_markets_draws_every_candle_of_the_window_with_the_exchanges_figures(seeded: Seed) -> None:
    at = choose(open_app(), seeded.exchange, lookback="24h", bucket="5m")
    assert_clean(at)
    # A preset window ends at the newest base candle: 24 h up to 2019-10-13 11:20.
    end = NEWEST + timedelta(minutes=1)
    with_trades, quiet, inside = expected_buckets(300, end - timedelta(hours=24), end)
    assert drawn(at) == (with_trades, quiet)
    assert with_trades + quiet == 288 and quiet > 0
    traded = [k for k in inside if k.trades]
    assert Decimal(metric(at, "Last price").replace(",", "")) == inside[-1].close
    assert Decimal(metric(at, "High (24h)").replace(",", "")) == max(k.high for k in traded)
    assert Decimal(metric(at, "Low (24h)").replace(",", "")) == min(k.low for k in traded)
    assert metric(at, "Trades (24h)") == f"{sum(k.trades for k in inside):,}"
    vwap = sum(k.quote_volume for k in inside) / sum(k.volume for k in inside)
    assert Decimal(metric(at, "VWAP").replace(",", "")) == vwap.quantize(Decimal("0.00000001"))
    # Hover labels carry exact decimals: the last traded candle's close, digit for digit.
    last_text = traces(at)["price"]["text"][-1]
    last_bucket = int(traded[-1].open_time.timestamp()) // 300 * 300
    last_close = [k for k in traded if int(k.open_time.timestamp()) // 300 * 300 == last_bucket][-1].close
    assert f"C {format(last_close, 'f').rstrip('0')}" in last_text


def test_a_bucket_too_small_for_the_data_is_raised_with_a_message(seeded: Seed) -> None:
    # LONGUSDT has 8 days of minutes: 7 days of them at 1m are 10,080 candles, more than a view draws.
    at = choose(open_app(), seeded.exchange, symbol=LONG_SYMBOL, lookback="7d", bucket="1m")
    assert_clean(at)
    [info] = [i.value for i in at.info if "would be" in i.value]
    assert "10,080 candles" in info and "showing 3m candles" in info and "5,000" in info
    end = NEWEST + timedelta(minutes=1)
    rows = [SimpleNamespace(**r) for r in seeded.long]
    with_trades, quiet, _ = expected_buckets(180, end - timedelta(days=7), end, rows)
    assert drawn(at) == (with_trades, quiet) == (3360, 0)
    # The market is covered to the end of its last minute, 11:20: the 3m bucket 11:18-11:21 is partial.
    ours = [i for i in seeded.coverage if i.symbol == LONG_SYMBOL]
    assert partial_drawn(at) == partial_buckets(180, end - timedelta(days=7), end, rows, ours) == 1


def test_the_bucket_is_sized_by_the_data_in_the_window_not_the_window(seeded: Seed) -> None:
    # XRPETH holds 3,560 minutes: over "30d" they all fit at 1m, and ALTUSDT's 10 minutes stay 10 candles.
    at = choose(open_app(), seeded.exchange, lookback="30d", bucket="1m")
    assert_clean(at)
    assert not [i.value for i in at.info if "would be" in i.value]
    end = NEWEST + timedelta(minutes=1)
    assert drawn(at) == expected_buckets(60, end - timedelta(days=30), end)[:2]
    at = choose(at, seeded.exchange, symbol=RECENT_SYMBOL, lookback="1y", bucket="1m")
    assert_clean(at)
    assert drawn(at) == (len(seeded.recent), 0)


def test_a_non_divisor_bucket_over_a_custom_range(seeded: Seed) -> None:
    at = view(seeded.exchange, lookback="Custom", bucket="45m")
    start, end = datetime(2019, 10, 12, 1, 0), datetime(2019, 10, 12, 9, 0)  # typed in UTC, the default zone
    at.datetime_input(key="start").set_value(start).run()
    at.datetime_input(key="end").set_value(end).run()
    assert_clean(at)
    with_trades, quiet, _ = expected_buckets(2700, start.replace(tzinfo=UTC), end.replace(tzinfo=UTC))
    assert drawn(at) == (with_trades, quiet)
    assert with_trades + quiet == 10  # 45m buckets opening 01:30 .. 08:15 on the epoch's grid


def test_a_range_without_data_and_a_reversed_range_are_explained(seeded: Seed) -> None:
    at = choose(open_app(), seeded.exchange, lookback="Custom", bucket="1m")
    # Eight years at 1m without a candle: told that there is no data, not that it is too much of it.
    for start, end in ((datetime(2018, 1, 1), datetime(2018, 1, 2)), (datetime(2010, 1, 1), datetime(2018, 1, 1))):
        at.datetime_input(key="start").set_value(start).run()
        at.datetime_input(key="end").set_value(end).run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        [info] = [i.value for i in at.info if "No candles for" in i.value]
        assert "its data runs from 2019-10-11 00:00 UTC to 2019-10-13 11:19 UTC" in info
        assert not at.get("plotly_chart")
    at.datetime_input(key="end").set_value(datetime(2009, 6, 1)).run()  # before the start (2010)
    assert any("must end after it starts" in e.value for e in at.error)


def test_quiet_minutes_and_a_gap_are_drawn_differently(seeded: Seed) -> None:
    assert seeded.gap_minute is not None
    at = choose(open_app(), seeded.exchange, lookback="Custom", bucket="1m")
    start = seeded.gap_minute.replace(tzinfo=None) - timedelta(minutes=30)
    at.datetime_input(key="start").set_value(start).run()
    at.datetime_input(key="end").set_value(start + timedelta(hours=1)).run()
    assert_clean(at)
    window = [
        k for k in klines() if start.replace(tzinfo=UTC) <= k.open_time < start.replace(tzinfo=UTC) + timedelta(hours=1)
    ]
    assert drawn(at) == (sum(1 for k in window if k.trades), sum(1 for k in window if not k.trades))
    # The open trade-id gap is a shaded band over exactly its minute, labelled with its ledger id.
    layout = figure(at)["layout"]
    gap_minute = seeded.gap_minute.strftime("%Y-%m-%dT%H:%M")
    rects = [s for s in layout.get("shapes", []) if s.get("type") == "rect"]
    assert any(str(r["x0"]).startswith(gap_minute) for r in rects), [(r["x0"], r["x1"]) for r in rects]
    assert any(f"gap #{seeded.gap_id} (open)" in a.get("text", "") for a in layout.get("annotations", []))
    assert any("1 gap-ledger interval" in c.value for c in at.caption)


def test_display_time_zone_moves_the_axis_not_the_data(seeded: Seed) -> None:
    at = view(seeded.exchange, tz="Asia/Tokyo")
    assert_clean(at)
    layout = figure(at)["layout"]
    assert layout["xaxis2"]["title"]["text"] == "open time (Asia/Tokyo)"
    first_x = _trace_values(traces(at)["volume"]["x"])[0]
    assert str(first_x).startswith("2019-10-13T19:20")  # 10:20 UTC is 19:20 in Tokyo
    assert any("Newest base candle opened 2019-10-13 20:19 JST" in c.value for c in at.caption)


def test_overlays_and_price_alerts(services: Settings, seeded: Seed) -> None:
    at = choose(open_app(), seeded.exchange, lookback="6h", bucket="1m")
    at.multiselect(key="overlays").set_value(["MA 20", "Bollinger 20, 2σ"]).run()
    assert_clean(at)
    names = [t.get("name") for t in figure(at)["data"]]
    assert "MA 20" in names and names.count("Bollinger 20, 2σ") == 2
    window = [k for k in klines() if k.open_time > NEWEST - timedelta(hours=6)]
    top = max(k.high for k in window if k.trades)
    last = window[-1].close
    # Above the window's high: not reached. Below the last price: crossed, with the time the run began.
    levels = ((top + Decimal("0.00000001"), "above"), (last - Decimal("0.00000010"), "above"))
    for level, direction in levels:
        at.text_input(key="alert_level").set_value(str(level))
        at.segmented_control(key="alert_direction").set_value(direction)
        at.button(key="FormSubmitter:add_alert-Add alert").click().run()
    assert not at.exception, at.exception
    assert any("not reached in this window" in c.value for c in at.caption)
    # The crossed alert is shown plainly, as an error box naming the level and the last price.
    [crossed] = [e.value for e in at.error]
    assert f"crossed above {last - Decimal('0.00000010')}" in crossed and f"last price {last}" in crossed
    lines = [s for s in figure(at)["layout"].get("shapes", []) if s.get("type") == "line"]
    assert len(lines) == 2
    # The rules are the platform's now: in alert_rules, written by the dashboard's alert editor role.
    saved = _rules(services, seeded.exchange)
    assert [(r[1], r[2]) for r in saved] == [(d, lv) for lv, d in levels]
    assert {r[3] for r in saved} == {"dashboard"}
    # A level that is not a price is refused with a message, and nothing is added.
    at.text_input(key="alert_level").set_value("1; DROP TABLE candles")
    at.button(key="FormSubmitter:add_alert-Add alert").click().run()
    assert any("is not a number" in e.value for e in at.error)
    assert len(_rules(services, seeded.exchange)) == 2
    # Removing one from the page deletes the rule; then the other, so that later tests see none.
    at.button(key=f"remove_alert_{saved[0][0]}").click().run()
    assert [r[0] for r in _rules(services, seeded.exchange)] == [saved[1][0]]
    at.button(key=f"remove_alert_{saved[1][0]}").click().run()
    assert _rules(services, seeded.exchange) == []


def _rules(settings: Settings, exchange: str) -> list[tuple[Any, ...]]:
    with psycopg2.connect(settings.pg_dsn(), connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT id, direction, level, created_by FROM alert_rules WHERE exchange = %s ORDER BY id", (exchange,)
        )
        found = cur.fetchall()
    conn.close()
    return found


def test_the_chart_marks_the_platforms_anomalies_and_the_alerts_page_lists_them(seeded: Seed) -> None:
    from tests.support.dashboard_seed import ANOMALY_AT

    at = choose(open_app(), seeded.exchange, lookback="6h", bucket="5m")
    assert_clean(at)
    [markers] = [t for t in figure(at)["data"] if t.get("name") == charts.ANOMALY_TRACE]
    # The 5m bucket holding the anomaly's 1m candle, above its high.
    assert [pd.Timestamp(x).tz_localize(None) for x in _trace_values(markers["x"])] == [
        pd.Timestamp(ANOMALY_AT.replace(minute=45)).tz_localize(None)
    ]
    assert "pump (rules, score 1.75)" in markers["text"][0]

    page = open_app()
    page.switch_page("views/alerts.py").run()
    assert_clean(page)
    frames = [d.value for d in page.dataframe]
    [listed] = [f for f in frames if "detector" in f.columns]
    ours = listed[listed["market"] == f"{seeded.exchange}:XRPETH"]
    assert set(ours["id"]) == {seeded.extra["anomaly_id"], seeded.extra["price_alert_id"]}
    pump = ours[ours["kind"] == "pump"].iloc[0]
    assert (pump["detector"], pump["value"], pump["delay_s"], pump["webhook_status"]) == (
        "rules",
        "score 1.75",
        2.0,
        "delivered",
    )
    price_row = ours[ours["type"] == "price"].iloc[0]
    assert price_row["value"] == "0.00155 (level 0.0015)"
    page.segmented_control(key="alerts_type").set_value("anomalies").run()
    [listed] = [d.value for d in page.dataframe if "detector" in d.value.columns]
    assert set(listed["type"]) == {"anomaly"}


# ---- bad input and injection ----------------------------------------------------------------------------

PAYLOADS = ("x'; DROP TABLE candles; --", "' OR '1'='1", "1m); DELETE FROM candles; --")


def _fingerprint(settings: Settings, exchange: str) -> tuple[Any, ...]:
    """Our market's candles and gaps, and that every table the pages read still exists (a live platform
    may be writing other markets meanwhile, so totals are not compared)."""
    with psycopg2.connect(settings.pg_dsn(), connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*), sum(trades), sum(close), (SELECT count(*) FROM trade_gaps WHERE exchange = %(e)s), "
            "(SELECT count(*) FROM pg_tables WHERE schemaname = 'public') FROM candles WHERE exchange = %(e)s",
            {"e": exchange},
        )
        row = cur.fetchone()
    conn.close()
    return tuple(row)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_injection_through_every_parameter_changes_nothing_and_is_named(
    services: Settings, seeded: Seed, payload
) -> None:
    before = _fingerprint(services, seeded.exchange)
    for key, what in (("exchange", "exchange"), ("symbol", "symbol"), ("lookback", "lookback"), ("tz", "time zone")):
        at = open_app(**{key: payload, **({"exchange": seeded.exchange} if key == "symbol" else {})})
        assert not at.exception, (key, at.exception)
        warnings = [w.value for w in at.warning] + [w.value for w in at.sidebar.warning]
        assert any(f"Unknown {what}" in w and payload in w for w in warnings), (key, warnings)
    # A typed bucket is accepted as text by the widget, then refused by the parser.
    at = view(seeded.exchange, bucket=payload)
    assert not at.exception
    assert any("is not a bucket" in e.value for e in at.error)
    at = open_app()
    at.query_params["period"] = payload
    at.switch_page("views/quality.py").run()
    assert not at.exception
    assert any("Unknown period" in w.value and payload in w.value for w in at.warning)
    assert _fingerprint(services, seeded.exchange) == before


def test_unknown_bucket_units_and_seconds_over_a_minute_base_are_explained(seeded: Seed) -> None:
    for bucket, message in (
        ("7x", "is not a bucket"),
        ("0m", "is empty"),
        ("1s", "not a whole number of base candles"),
    ):
        at = view(seeded.exchange, bucket=bucket)
        assert not at.exception
        assert any(message in e.value for e in at.error), (bucket, [e.value for e in at.error])


def test_data_connection_is_read_only(services: Settings, seeded: Seed) -> None:
    conn = data.connection()
    with conn.cursor() as cur:
        cur.execute("SELECT current_user, current_setting('transaction_read_only')")
        assert cur.fetchone() == (services.pg_reader_user, "on")
    probe = {**seeded.recent[0], "open_time": seeded.recent[0]["open_time"] - timedelta(days=1)}
    insert = "INSERT INTO candles (exchange, symbol, open_time, close_time, open, high, low, close, volume, "
    insert += "quote_volume, trades, taker_buy_volume, taker_buy_quote_volume, state) VALUES (%(exchange)s, "
    insert += "%(symbol)s, %(open_time)s, %(close_time)s, %(open)s, %(high)s, %(low)s, %(close)s, %(volume)s, "
    insert += "%(quote_volume)s, %(trades)s, %(taker_buy_volume)s, %(taker_buy_quote_volume)s, 'live')"
    with pytest.raises(psycopg2.Error) as raised, conn.cursor() as cur:
        cur.execute(insert, probe)
    assert isinstance(raised.value, psycopg2.errors.ReadOnlySqlTransaction | psycopg2.errors.InsufficientPrivilege)
    with pytest.raises(data.DataError, match=r"read-only transaction|permission denied"):
        data.query(insert + " RETURNING 1", probe)
    with conn.cursor() as cur:  # still usable afterwards
        cur.execute(
            "SELECT count(*) FROM candles WHERE exchange = %s AND symbol = %s", (seeded.exchange, RECENT_SYMBOL)
        )
        assert cur.fetchone() == (len(seeded.recent),)


def test_no_candles_gets_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "list_markets", lambda: pd.DataFrame(columns=["exchange", "symbol"]))
    at = open_app()
    assert not at.exception, at.exception
    assert any("No candles yet" in info.value for info in at.info)
    assert not at.get("plotly_chart")


def test_unreachable_database_gets_a_clear_error_without_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLELAKE_PG_PORT", "1")  # nothing listens on port 1
    monkeypatch.setenv("CANDLELAKE_PG_READER_PASSWORD", "s3cret-not-shown")
    for page in (None, "views/quality.py", "views/pipeline.py"):
        at = open_app()
        if page:
            at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert at.error, page
        for error in at.error:
            assert "PostgreSQL at" in error.value and ":1/" in error.value, error.value
            assert "s3cret-not-shown" not in error.value


# ---- Quality and Pipeline ------------------------------------------------------------------------------


def test_quality_page_shows_validations_gaps_corrections_dead_letters_and_states(
    services: Settings, seeded: Seed
) -> None:
    at = open_app()
    at.switch_page("views/quality.py").run()
    assert not at.exception, at.exception
    failed = [e.value for e in at.error if seeded.exchange in e.value]
    assert failed and "`candles` failed" in failed[0] and "open <= high: 1 of 1440 rows" in failed[0]
    validations = table(at, "data_docs")
    ours = validations[validations["exchange"] == seeded.exchange].set_index("suite")
    assert ours.loc["candles", "result"] == "FAILED" and ours.loc["trades", "result"] == "passed"
    assert ours.loc["candles", "data_docs"] == f"{services.data_docs_url}/validations/{seeded.tag}/candles.html"
    gaps = table(at, "gap_id")
    row = gaps[gaps["gap_id"] == seeded.gap_id].iloc[0]
    assert (row["status"], row["missing_ids"]) == ("open", 3)
    assert pd.isna(row["started_at"])  # a trade-id gap has no times: an empty cell, not "None"
    fixes = table(at, "change")
    ours_fix = fixes[fixes["exchange"] == seeded.exchange].iloc[0]
    assert ours_fix["change"] == "close 0.00141 -> 0.00142, trades 3 -> 4"
    letters = table(at, "dead_letters").set_index("reason")
    assert letters.loc["not-finite", "dead_letters"] >= 7 and seeded.tag in letters.loc["not-finite", "sources"]
    states = table(at, "without_trades")
    recent = states[(states["exchange"] == seeded.exchange) & (states["symbol"] == RECENT_SYMBOL)].iloc[0]
    assert (recent["live"], recent["closed"], recent["curated"]) == (1, len(seeded.recent) - 1, 0)


def test_pipeline_page_shows_each_part_the_producer_and_the_streams_lag(seeded: Seed) -> None:
    at = open_app()
    at.switch_page("views/pipeline.py").run()
    assert not at.exception, at.exception
    tiles = [m.value for m in at.markdown]
    assert any("**kafka** :red-badge[down]" in t for t in tiles), tiles
    assert any("**producer** :orange-badge[stuck]" in t for t in tiles)
    checks = table(at, "checked by")
    assert any(seeded.tag in d for d in checks["detail"])
    assert any(f"**{seeded.tag}** :green-badge[reporting] (simulator, pid 4242)" in t for t in tiles), tiles
    assert metric(at, "Produced") == "990"
    assert metric(at, "Throughput") == "9.9/s"  # 990 trades in the 100 s between start and heartbeat
    lag = next(m for m in at.metric if m.label == "Lag" and m.value == "1,234 records")
    assert lag is not None
    assert any(m.label == "Batch took" and m.value == "123 ms" for m in at.metric)


# ---- Coverage ------------------------------------------------------------------------------------------

COVERED_SYMBOL = "COVUSDT"  # an hour of minutes with trades, parts of it not covered
DAILY_SYMBOL = "COVDAY"  # candles and coverage on recent days, for the Quality page
QUIET_SYMBOL = "QUIETUSDT"  # a covered minute with trades, then stored minutes without, none covered
HOUR = datetime(2019, 10, 14, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
INSERT_CANDLES = (
    "INSERT INTO candles (exchange, symbol, open_time, close_time, open, high, low, close, volume, quote_volume, "
    "trades, taker_buy_volume, taker_buy_quote_volume, vwap, state, coverage) VALUES %s"
)
CANDLE_TEMPLATE = (
    "(%(exchange)s, %(symbol)s, %(open_time)s, %(close_time)s, %(open)s, %(high)s, %(low)s, %(close)s, "
    "%(volume)s, %(quote_volume)s, %(trades)s, %(volume)s, %(quote_volume)s, %(close)s, %(state)s, %(coverage)s)"
)


def _candle(exchange: str, symbol: str, open_time: datetime, state: str, stored: str | None, i: int) -> dict[str, Any]:
    close = Decimal("2.5") + Decimal(i) / 100
    return {
        "exchange": exchange,
        "symbol": symbol,
        "open_time": open_time,
        "close_time": open_time + MINUTE - timedelta(milliseconds=1),
        "open": close - Decimal("0.01"),
        "high": close + Decimal("0.02"),
        "low": close - Decimal("0.03"),
        "close": close,
        "volume": Decimal(2),
        "quote_volume": close * 2,
        "trades": 2,
        "state": state,
        "coverage": stored,
    }


def _merged(spans: list[tuple[str, str, datetime, datetime]], start: datetime, end: datetime) -> list[coverage.Span]:
    """The union of the seeded coverage rows inside [start, end), in microseconds: the truth the page must show."""
    return coverage.merge((to_us(max(a, start)), to_us(min(b, end))) for _, _, a, b in spans if b > start and a < end)


def _gaps_in(merged: list[coverage.Span], start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The parts of [start, end) that `merged` does not hold."""
    out, at = [], to_us(start)
    for a, b in merged:
        if a > at:
            out.append((at, a))
        at = max(at, b)
    if at < to_us(end):
        out.append((at, to_us(end)))
    return [(from_us(a), from_us(b)) for a, b in out]


@pytest.fixture(scope="module")
def covered(services: Settings) -> Iterator[SimpleNamespace]:
    """A market of an hour of 1m candles, covered by a replay, then not for 15 minutes, then by a live feed
    that lost its connection for 20 s and stopped 30 s before the hour's end; and a market with candles
    over two recent days, one of them covered 00:00-06:00 and 12:00-15:00 (a backfill overlapping the feed),
    the other not at all. Candles are stored as the batch would: curated ones with their coverage."""
    exchange = f"test-coverage-{uuid.uuid4().hex[:8]}"
    hour = [
        ("replay", "file-a.csv", HOUR, HOUR + 30 * MINUTE),
        ("live", "feed-b", HOUR + 45 * MINUTE, HOUR + 50 * MINUTE),
        ("live", "feed-b", HOUR + 50 * MINUTE + timedelta(seconds=20), HOUR + 59 * MINUTE + timedelta(seconds=30)),
    ]
    hour_merged = _merged(hour, HOUR, HOUR + 60 * MINUTE)
    hour_candles = []
    for i in range(60):
        t = HOUR + i * MINUTE
        state = coverage.state_of(hour_merged, to_us(t), 60_000_000)
        hour_candles.append(_candle(exchange, COVERED_SYMBOL, t, "curated", state, i))
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    before = day - timedelta(days=1)
    daily = [
        ("replay", "dump-d.zip", day, day + timedelta(hours=6)),
        ("live", "feed-d", day + timedelta(hours=12), day + timedelta(hours=15)),
        ("backfill", "rest-d", day + timedelta(hours=14), day + timedelta(hours=15)),
    ]
    # Closed candles carry no coverage; a curated one carries what the batch stored when it curated it, here
    # 'partial' inside time covered since (a backfill, say): drawn complete, and counted as curated partial.
    daily_candles = [
        _candle(exchange, DAILY_SYMBOL, before + timedelta(hours=8), "closed", None, 0),
        _candle(exchange, DAILY_SYMBOL, day + timedelta(hours=5, minutes=59), "closed", None, 1),
        _candle(exchange, DAILY_SYMBOL, day + timedelta(hours=6), "closed", None, 2),
        _candle(exchange, DAILY_SYMBOL, day + timedelta(hours=13), "curated", "partial", 3),
        _candle(exchange, DAILY_SYMBOL, day + timedelta(hours=14), "closed", None, 4),
    ]
    traded = _candle(exchange, QUIET_SYMBOL, HOUR, "closed", None, 0)
    quiet_candles = [traded] + [
        {
            **traded,
            "open_time": HOUR + i * MINUTE,
            "close_time": HOUR + (i + 1) * MINUTE - timedelta(milliseconds=1),
            **dict.fromkeys(("open", "high", "low"), traded["close"]),
            "volume": Decimal(0),
            "quote_volume": Decimal(0),
            "trades": 0,
        }
        for i in range(1, 11)
    ]
    quiet = [("replay", "file-q.csv", HOUR, HOUR + MINUTE)]
    with psycopg2.connect(services.pg_dsn(), connect_timeout=5) as conn, conn.cursor() as cur:
        for rows in (hour_candles, daily_candles, quiet_candles):
            execute_values(cur, INSERT_CANDLES, rows, template=CANDLE_TEMPLATE, page_size=len(rows))
        for symbol, spans in ((COVERED_SYMBOL, hour), (DAILY_SYMBOL, daily), (QUIET_SYMBOL, quiet)):
            for kind, source, a, b in spans:
                cur.execute(
                    "INSERT INTO coverage (exchange, symbol, source, kind, started_at, ended_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    (exchange, symbol, source, kind, a, b),
                )
    conn.close()
    try:
        yield SimpleNamespace(
            exchange=exchange,
            hour=hour,
            hour_merged=hour_merged,
            hour_candles=hour_candles,
            day=day,
            before=before,
            daily=daily,
            daily_candles=daily_candles,
        )
    finally:
        with psycopg2.connect(services.pg_dsn(), connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM candles WHERE exchange = %s", (exchange,))
            cur.execute("DELETE FROM coverage WHERE exchange = %s", (exchange,))
        conn.close()


def test_time_no_coverage_holds_is_shaded_unknown(covered: SimpleNamespace) -> None:
    at = view(covered.exchange, symbol=COVERED_SYMBOL, lookback="1h", bucket="1m")
    assert_clean(at)
    expected = _gaps_in(covered.hour_merged, HOUR, HOUR + 60 * MINUTE)
    assert len(expected) == 3  # 10:30-10:45, 20 s at 10:50, the last 30 s
    layout = figure(at)["layout"]
    unknown = [s for s in layout.get("shapes", []) if s.get("name") == charts.UNKNOWN_LABEL]
    drawn_bands = sorted({(pd.Timestamp(s["x0"]), pd.Timestamp(s["x1"])) for s in unknown})
    assert drawn_bands == [(pd.Timestamp(a).tz_localize(None), pd.Timestamp(b).tz_localize(None)) for a, b in expected]
    assert len(unknown) == 2 * len(expected)  # over the price and the volume panel
    # One legend entry names them all; only the band wide enough for it carries the label itself.
    assert [s["name"] for s in unknown if s.get("showlegend")] == [charts.UNKNOWN_LABEL]
    assert layout["showlegend"] is True
    labelled = [pd.Timestamp(a["x"]) for a in layout.get("annotations", []) if a.get("text") == charts.UNKNOWN_LABEL]
    widest = max(expected, key=lambda span: span[1] - span[0])
    assert labelled == [pd.Timestamp(widest[0]).tz_localize(None)]
    assert any("not covered (grey: unknown)" in c.value for c in at.caption), [c.value for c in at.caption]


@pytest.mark.skipif("coverage" not in rollups.COLUMNS, reason="the rollups do not return candle coverage yet")
def test_partial_candles_are_drawn_in_their_own_trace_and_named_in_the_tiles(covered: SimpleNamespace) -> None:
    at = view(covered.exchange, symbol=COVERED_SYMBOL, lookback="1h", bucket="1m")
    assert_clean(at)
    partial = [
        c["open_time"]
        for c in covered.hour_candles
        if coverage.state_of(covered.hour_merged, to_us(c["open_time"]), 60_000_000) == coverage.PARTIAL
    ]
    complete = [c["open_time"] for c in covered.hour_candles if c["open_time"] not in partial]
    naive = lambda times: [pd.Timestamp(t).tz_localize(None) for t in times]  # noqa: E731
    t = traces(at)
    assert [pd.Timestamp(x) for x in _trace_values(t["partial"]["x"])] == naive(partial)
    assert [pd.Timestamp(x) for x in _trace_values(t["price"]["x"])] == naive(complete)
    assert _trace_values(t["no trades"]["x"]) == []
    assert partial[-1] == HOUR + 59 * MINUTE  # the newest candle is partial: the tile says so
    assert Decimal(metric(at, "Last price (partial candle)")) == covered.hour_candles[-1]["close"]
    assert any(f"{len(partial)} partial (hollow" in c.value for c in at.caption), [c.value for c in at.caption]
    assert any("newest shown is curated, partial" in c.value for c in at.caption)


def test_quality_page_coverage_per_market_and_day(covered: SimpleNamespace) -> None:
    at = open_app()
    at.switch_page("views/quality.py").run()
    assert not at.exception, at.exception  # the seeded failed validation is an error box, on purpose
    rows = table(at, "covered_pct")
    ours = rows[(rows["exchange"] == covered.exchange) & (rows["symbol"] == DAILY_SYMBOL)]
    got = {pd.Timestamp(r.day).date(): r for r in ours.itertuples(index=False)}
    assert set(got) == {covered.day.date(), covered.before.date()}
    for start in (covered.day, covered.before):
        end = start + timedelta(days=1)
        merged = _merged(covered.daily, start, end)
        seconds = sum(b - a for a, b in merged) / 1e6
        spans = [s for s in covered.daily if s[3] > start and s[2] < end]
        candles = [c for c in covered.daily_candles if start <= c["open_time"] < end]
        # Partial as the Markets page draws it: judged against the coverage; and as the nightly batch stored it.
        partial = [c for c in candles if coverage.state_of(merged, to_us(c["open_time"]), 60_000_000) == "partial"]
        stored = [c for c in candles if c["coverage"] == "partial"]
        row = got[start.date()]
        assert row.covered_hours == pytest.approx(round(seconds / 3600, 2))
        assert row.covered_pct == pytest.approx(round(100 * seconds / 86_400, 1))
        assert row.intervals == len(merged)
        assert (row.kinds or None) == (", ".join(sorted({s[0] for s in spans})) or None)
        assert (row.sources or None) == (", ".join(sorted({s[1] for s in spans})) or None)
        assert (row.candles, row.partial_candles, row.curated_partial) == (len(candles), len(partial), len(stored))
    # 6 h and 3 h of the day, the backfill inside the feed's hours: 37.5%, in two stretches; none the day before.
    assert (got[covered.day.date()].covered_pct, got[covered.day.date()].intervals) == (37.5, 2)
    assert (got[covered.before.date()].covered_pct, got[covered.before.date()].partial_candles) == (0, 1)


def test_quality_page_says_when_no_coverage_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    columns = ["exchange", "symbol", "day", "covered_hours", "covered_pct", "intervals", "kinds", "sources"]
    columns += ["candles", "partial_candles", "curated_partial"]
    monkeypatch.setattr(quality_data, "coverage_by_day", lambda since: pd.DataFrame(columns=columns))
    at = open_app()
    at.switch_page("views/quality.py").run()
    assert not at.exception, at.exception
    assert any("No coverage is recorded in this period, and no candles" in i.value for i in at.info)
    day = datetime(2024, 1, 1).date()
    uncovered_day = pd.DataFrame([["x", "Y", day, 0.0, 0.0, 0, None, None, 5, 5, 0]], columns=columns)
    monkeypatch.setattr(quality_data, "coverage_by_day", lambda since: uncovered_day)
    at = open_app()
    at.switch_page("views/quality.py").run()
    assert not at.exception, at.exception
    assert any("No coverage is recorded in this period: every candle below is partial" in w.value for w in at.warning)
    assert table(at, "covered_pct")["partial_candles"].tolist() == [5]


@pytest.mark.skipif("coverage" not in rollups.COLUMNS, reason="the rollups do not return candle coverage yet")
def test_the_live_candle_is_in_progress_not_partial_unless_unseen_time_touches_it(
    services: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Coverage cannot hold time that has not happened: the newest candle of a live feed is not partial for
    that. A live feed covers SEENUSDT from midnight up to now; HOLEUSDT lost one second in the minute
    before the newest."""
    exchange = f"test-live-coverage-{uuid.uuid4().hex[:8]}"
    newest = datetime.now(UTC).replace(second=0, microsecond=0)
    rows = {
        symbol: [
            _candle(exchange, symbol, newest - (4 - i) * MINUTE, "live" if i == 4 else "closed", None, i)
            for i in range(5)
        ]
        for symbol in ("SEENUSDT", "HOLEUSDT")
    }
    # Covered since midnight, so that the day's candle too has no unseen time but what is still to come.
    first = min(newest - 4 * MINUTE, newest.replace(hour=0, minute=0))
    hole = newest - timedelta(seconds=30)
    with psycopg2.connect(services.pg_dsn(), connect_timeout=5) as conn, conn.cursor() as cur:
        for candles in rows.values():
            execute_values(cur, INSERT_CANDLES, candles, template=CANDLE_TEMPLATE, page_size=len(candles))
        insert = "INSERT INTO coverage (exchange, symbol, source, kind, started_at, ended_at) "
        insert += "VALUES (%s, %s, %s, 'live', %s, "
        cur.execute(insert + "now())", (exchange, "SEENUSDT", "feed", first))
        cur.execute(insert + "%s)", (exchange, "HOLEUSDT", "feed", first, hole))
        cur.execute(
            insert + "now() + interval '10 minutes')", (exchange, "HOLEUSDT", "feed", hole + timedelta(seconds=1))
        )
    conn.close()
    try:
        # Two minutes of grace (health beats every 60 s): the seconds since the row was written are not unseen.
        monkeypatch.setenv("CANDLELAKE_HEALTH_INTERVAL_S", "60")
        for bucket in ("1m", "1d"):
            at = view(exchange, symbol="SEENUSDT", lookback="24h", bucket=bucket)
            assert_clean(at)
            assert _trace_values(traces(at)["partial"]["x"]) == [], bucket
            assert metric(at, "Last price") == str(rows["SEENUSDT"][-1]["close"])
            assert not any(m.label.startswith("Last price (partial") for m in at.metric)
        # The lost second lies in the newest day: that candle is partial, live or not.
        monkeypatch.setenv("CANDLELAKE_HEALTH_INTERVAL_S", "0.1")
        at = view(exchange, symbol="HOLEUSDT", lookback="24h", bucket="1d")
        assert_clean(at)
        assert len(_trace_values(traces(at)["partial"]["x"])) == 1
        assert any(m.label == "Last price (partial candle)" for m in at.metric)
    finally:
        with psycopg2.connect(services.pg_dsn(), connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM candles WHERE exchange = %s", (exchange,))
            cur.execute("DELETE FROM coverage WHERE exchange = %s", (exchange,))
        conn.close()


@pytest.mark.skipif("coverage" not in rollups.COLUMNS, reason="the rollups do not return candle coverage yet")
def test_a_range_of_unknown_time_without_trades_is_explained_not_drawn_quiet(covered: SimpleNamespace) -> None:
    # QUIETUSDT's minutes after 10:00 hold no trades and no coverage: nothing is known of 10:05-10:10.
    at = view(covered.exchange, symbol=QUIET_SYMBOL, lookback="Custom", bucket="1m")
    at.datetime_input(key="start").set_value(HOUR.replace(tzinfo=None) + 5 * MINUTE).run()
    at.datetime_input(key="end").set_value(HOUR.replace(tzinfo=None) + 10 * MINUTE).run()
    assert_clean(at)
    assert not at.get("plotly_chart")
    assert any("Nothing is known about" in i.value and "no live feed, replay or backfill" in i.value for i in at.info)
    # Over the whole span the covered minute is drawn, and the rest is unknown, not quiet.
    at.datetime_input(key="start").set_value(HOUR.replace(tzinfo=None)).run()
    assert_clean(at)
    assert drawn(at) == (1, 0)
