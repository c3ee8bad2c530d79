"""Grafana's provisioning and the candles dashboard, run the way Grafana runs them, against the platform's
PostgreSQL.

No Grafana server runs where we build (no Docker engine, no internet), so this test does what Grafana's
PostgreSQL datasource would do with every panel and query variable: substitute the template variables,
expand the macros (tests/support/grafana_macros.py, after Grafana's own code) and run the SQL on a
connection made from the provisioned datasource, that is as the read-only role. The rows are checked
against candles aggregated here in plain Python from the seeded 1m candles (Binance's own XRP/ETH klines
and a synthetic 8-day market, from tests/support/dashboard_seed.py), and against the product's own rollup
(`candlelake.serve.rollups.fetch_rollup`, what the candles command and the Streamlit dashboard read).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pytest
import yaml
from psycopg2.extras import execute_values

from candlelake import coverage
from candlelake.config import PROJECT_ROOT, Settings
from candlelake.serve import rollups
from tests.support import grafana_macros
from tests.support.dashboard_seed import (
    CANDLE_TEMPLATE,
    INSERT_CANDLES,
    LONG_SYMBOL,
    SYMBOL,
    candle_rows,
    covering,
    klines,
    long_rows,
)
from tests.support.grafana_macros import TimeRange

pytestmark = pytest.mark.integration

GRAFANA = PROJECT_ROOT / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "candlelake.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "candlelake.yaml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "candlelake.yaml"
COMPOSE = PROJECT_ROOT / "docker-compose.yaml"

DATASOURCE_TYPE = "grafana-postgresql-datasource"
TIMEFRAMES = ["1m", "5m", "15m", "1h", "4h", "1d", "1w"]
MONDAY = datetime(1970, 1, 5, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Time ranges as a browser sends them (millisecond precision, not on bucket edges). XRPETH's klines run
# from 2019-10-11 00:00 to 2019-10-13 11:19, LONGUSDT's minutes from 2019-10-05 11:20 to 2019-10-13 11:19.
TWO_DAYS = TimeRange(datetime(2019, 10, 11, 5, 7, 8, 900_000, UTC), datetime(2019, 10, 13, 9, 30, tzinfo=UTC))
TWO_WEEKS = TimeRange(datetime(2019, 9, 29, tzinfo=UTC), datetime(2019, 10, 14, tzinfo=UTC))


# ---- the files -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    loaded = yaml.safe_load(DATASOURCES.read_text())
    assert loaded["apiVersion"] == 1 and len(loaded["datasources"]) == 1
    entry = loaded["datasources"][0]
    assert isinstance(entry, dict)
    return entry


@pytest.fixture(scope="module")
def grafana_service() -> dict[str, Any]:
    service = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    assert isinstance(service, dict)
    return service


def panel(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    found = [p for p in dashboard["panels"] if p["title"] == title]
    assert len(found) == 1, f"one panel titled {title!r}: {[p['title'] for p in dashboard['panels']]}"
    return found[0]


def panel_sql(dashboard: dict[str, Any], title: str) -> str:
    (target,) = panel(dashboard, title)["targets"]
    sql = target["rawSql"]
    assert isinstance(sql, str)
    return sql


def variable(dashboard: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [v for v in dashboard["templating"]["list"] if v["name"] == name]
    assert isinstance(found, dict)
    return found


def every_sql(dashboard: dict[str, Any]) -> dict[str, str]:
    """Each panel's and query variable's SQL, by where it lives."""
    out = {f"panel {p['title']!r}": t["rawSql"] for p in dashboard["panels"] for t in p["targets"]}
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            out[f"variable {v['name']}"] = v["query"]
    return out


CANDLES = "${symbol} ${timeframe} candles"
CLOSE = "${symbol} close, ${timeframe}"
STATS = ("Last price", "24h change", "24h volume", "24h trades")


def datasource_env(s: Settings) -> dict[str, str]:
    """Grafana's environment as docker-compose.yaml's grafana service gives it, with this run's settings."""
    return {
        "CANDLELAKE_HOST": s.host,
        "CANDLELAKE_PG_PORT": str(s.pg_port),
        "CANDLELAKE_PG_DATABASE": s.pg_database,
        "CANDLELAKE_PG_READER_USER": s.pg_reader_user,
        "CANDLELAKE_PG_READER_PASSWORD": s.pg_reader_password,
    }


def test_datasource_is_the_platform_postgresql_as_the_read_only_role(datasource, services) -> None:
    assert datasource["type"] == DATASOURCE_TYPE
    assert datasource["access"] == "proxy" and datasource["editable"] is False
    env = datasource_env(services)
    resolved = {
        "url": grafana_macros.interpolate_provisioning(datasource["url"], env),
        "user": grafana_macros.interpolate_provisioning(datasource["user"], env),
        "database": grafana_macros.interpolate_provisioning(datasource["jsonData"]["database"], env),
        "password": grafana_macros.interpolate_provisioning(datasource["secureJsonData"]["password"], env),
    }
    assert resolved == {
        "url": f"{services.host}:{services.pg_port}",
        "user": services.pg_reader_user,
        "database": services.pg_database,
        "password": services.pg_reader_password,
    }
    # No login is written in the file: user and password follow the settings, the password kept secure.
    assert datasource["user"] == "$__env{CANDLELAKE_PG_READER_USER}"
    assert datasource["secureJsonData"] == {"password": "$__env{CANDLELAKE_PG_READER_PASSWORD}"}
    assert "database" not in datasource and "password" not in datasource  # the deprecated top-level keys


def test_datasource_settings_are_the_ones_compose_gives_grafana(datasource, grafana_service, services) -> None:
    referenced = set(re.findall(r"\$__env\{(\w+)\}", DATASOURCES.read_text()))
    assert referenced == set(datasource_env(services))
    given = {k for k in grafana_service["environment"] if k.startswith("CANDLELAKE_")}
    assert given == referenced, "the grafana service must set exactly the settings the datasource reads"
    assert grafana_service["environment"]["CANDLELAKE_HOST"] == "postgres"
    assert re.fullmatch(r"grafana/grafana-oss:\d+\.\d+\.\d+", grafana_service["image"]), "pin a release"
    assert set(grafana_service["depends_on"]) == {"postgres", "db-init"}  # db-init creates the reader role


def test_dashboards_are_provisioned_from_the_folder_compose_mounts(grafana_service) -> None:
    config = yaml.safe_load(PROVIDERS.read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file" and provider["allowUiUpdates"] is False
    mounts = dict(v.removesuffix(":ro").split(":", 1) for v in grafana_service["volumes"])
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert (GRAFANA / "dashboards").is_dir() and DASHBOARD.is_file()
    home = grafana_service["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


def test_dashboard_has_the_panels_variables_and_datasource(dashboard, datasource) -> None:
    types = sorted(p["type"] for p in dashboard["panels"])
    assert types == ["candlestick", "stat", "stat", "stat", "stat", "timeseries"]
    assert {p["title"] for p in dashboard["panels"]} == {CANDLES, CLOSE, *STATS}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(set(ids)) == len(ids)

    candles = panel(dashboard, CANDLES)
    assert candles["type"] == "candlestick"
    assert candles["options"]["mode"] == "candles+volume"
    assert candles["options"]["fields"] == {k: k for k in ("open", "high", "low", "close", "volume")}
    assert panel(dashboard, CLOSE)["fieldConfig"]["defaults"]["custom"]["lineInterpolation"] == "stepAfter"

    symbol = variable(dashboard, "symbol")
    assert symbol["type"] == "query" and symbol["multi"] is False and symbol["includeAll"] is False
    assert symbol["query"] == symbol["definition"]
    timeframe = variable(dashboard, "timeframe")
    assert timeframe["type"] == "custom" and timeframe["multi"] is False and timeframe["includeAll"] is False
    assert timeframe["query"].split(",") == TIMEFRAMES
    assert [o["value"] for o in timeframe["options"]] == [o["text"] for o in timeframe["options"]] == TIMEFRAMES
    assert timeframe["current"]["value"] in TIMEFRAMES
    for text in TIMEFRAMES:  # each is a bucket the product serves
        assert rollups.parse_bucket(text).text == text

    # Every reference to a datasource names the provisioned one, by uid.
    refs = [p["datasource"] for p in dashboard["panels"]]
    refs += [t["datasource"] for p in dashboard["panels"] for t in p["targets"]]
    refs += [v["datasource"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert refs and all(r == {"type": DATASOURCE_TYPE, "uid": datasource["uid"]} for r in refs)


def test_every_query_uses_grafanas_macros_and_variables(dashboard) -> None:
    for where, sql in every_sql(dashboard).items():
        if where.startswith("variable"):
            continue  # the markets do not depend on the time range or on a variable
        assert re.search(r"\$__time(Filter\(|From\(\)|To\(\))", sql), f"{where} ignores the time range"
        assert "'$symbol'" in sql, f"{where} ignores the market"
    for title in (CANDLES, CLOSE):
        sql = panel_sql(dashboard, title)
        assert "$__timeFilter(" in sql and "$__timeFrom()" in sql and "$__timeTo()" in sql
        assert "'$timeframe'" in sql
        # The levels the SQL reads are the ones the rollup tables keep.
        (levels,) = re.findall(r"ARRAY\[([0-9, ]+)\]", sql)
        assert sorted(int(x) for x in levels.split(",")) == sorted(rollups.ROLLUP_LEVELS)
    for where, sql in every_sql(dashboard).items():
        # A comment holds no `$`: some Grafana versions expand macros in comments, newer ones strip them.
        for line in sql.splitlines():
            assert "$" not in line.partition("--")[2], f"{where}: {line}"


def test_macros_expand_as_grafanas_postgresql_engine() -> None:
    # Cases from Grafana's pkg/tsdb/grafana-postgresql-datasource/macros_test.go.
    five = TimeRange(datetime(2018, 4, 12, 18, tzinfo=UTC), datetime(2018, 4, 12, 18, 5, tzinfo=UTC))
    expand = grafana_macros.expand_macros
    assert expand("select $__timeFrom()", five) == "select '2018-04-12T18:00:00Z'"
    assert expand("select $__timeTo()", five) == "select '2018-04-12T18:05:00Z'"
    assert (
        expand("WHERE $__timeFilter(time_column)", five)
        == "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'"
    )
    assert expand("select $__time(time_column)", five) == 'select time_column AS "time"'
    assert (
        expand("SELECT $__timeGroup(time_column,'5m'), value", five)
        == 'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value'
    )
    assert expand("$__timeGroupAlias(time_column , '5m')", five) == (
        'floor(extract(epoch from time_column)/300)*300 AS "time"'
    )
    half = TimeRange(datetime(1960, 2, 1, 7, 0, 0, 500_000, UTC), datetime(1980, 2, 3, 8, 0, 0, 500_000, UTC))
    assert (
        expand("WHERE $__timeFilter(time_column)", half)
        == "WHERE time_column BETWEEN '1960-02-01T07:00:00.5Z' AND '1980-02-03T08:00:00.5Z'"
    )
    with pytest.raises(grafana_macros.MacroError, match="unknown macro"):
        expand("SELECT $__nothing(x)", five)
    # Variables: a single value is escaped, not quoted; a variable nobody defined is left alone.
    assert grafana_macros.interpolate_variables("'$a' ${a:sqlstring} $b", {"a": "x'y"}) == "'x''y' 'x''y' $b"


# ---- the seeded market, and the queries run as Grafana runs them -----------------------------------------


@dataclass(frozen=True)
class Seeded:
    exchange: str
    rows: dict[str, list[dict[str, Any]]]  # per symbol, the 1m candles as inserted, oldest first

    def market(self, symbol: str) -> str:
        return f"{self.exchange}:{symbol}"


@pytest.fixture(scope="module")
def seeded(services: Settings, module_exchange: str) -> Seeded:
    """XRPETH's klines and LONGUSDT's 8 days as candles of this module's exchange, covered throughout (so
    the product's rollup shows their quiet minutes); the exchange fixture deletes them afterwards."""
    markets = {SYMBOL: candle_rows(module_exchange, klines()), LONG_SYMBOL: long_rows(module_exchange)}
    with psycopg2.connect(services.pg_dsn(), connect_timeout=5) as conn, conn.cursor() as cur:
        for rows in markets.values():  # one statement per market: one pass of the rollup triggers
            execute_values(cur, INSERT_CANDLES, rows, template=CANDLE_TEMPLATE, page_size=len(rows))
        coverage.record(cur, covering(module_exchange, module_exchange, *markets.values()))
    conn.close()
    return Seeded(module_exchange, markets)


@pytest.fixture(scope="module")
def grafana_conn(services: Settings, datasource: dict[str, Any]) -> Iterator[psycopg2.extensions.connection]:
    """A connection made from the provisioned datasource, as Grafana makes it: no session options of our
    own, so whatever keeps it from writing comes from the role."""
    env = datasource_env(services)
    host, _, port = grafana_macros.interpolate_provisioning(datasource["url"], env).rpartition(":")
    conn = psycopg2.connect(
        host=host,
        port=port,
        dbname=grafana_macros.interpolate_provisioning(datasource["jsonData"]["database"], env),
        user=grafana_macros.interpolate_provisioning(datasource["user"], env),
        password=grafana_macros.interpolate_provisioning(datasource["secureJsonData"]["password"], env),
        sslmode=datasource["jsonData"]["sslmode"],
        connect_timeout=5,
        application_name="candlelake-grafana-test",
    )
    conn.autocommit = True  # Grafana runs every query on its own
    yield conn
    conn.close()


def run(
    conn: psycopg2.extensions.connection, sql: str, variables: dict[str, str], time_range: TimeRange
) -> list[tuple[Any, ...]]:
    expanded = grafana_macros.render(sql, variables, time_range)
    assert "$" not in expanded, f"left unexpanded: {expanded}"
    with conn.cursor() as cur:
        cur.execute(expanded)  # no parameters: the text PostgreSQL gets from Grafana, `%` and all
        return list(cur.fetchall())


def test_the_datasource_connects_as_the_reader_and_cannot_write(grafana_conn, services) -> None:
    with grafana_conn.cursor() as cur:
        cur.execute("SELECT current_user, current_setting('transaction_read_only')")
        assert cur.fetchone() == (services.pg_reader_user, "on")
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            cur.execute("DELETE FROM candles WHERE false")


def test_symbol_variable_lists_every_market_as_exchange_and_symbol(dashboard, grafana_conn, seeded) -> None:
    rows = run(grafana_conn, variable(dashboard, "symbol")["query"], {}, TWO_DAYS)
    markets = [r[0] for r in rows]
    assert all(len(r) == 1 for r in rows) and len(markets) == len(set(markets))
    # Other tests write markets of their own meanwhile: this module's exchange has exactly its two.
    mine = sorted(m for m in markets if m.startswith(f"{seeded.exchange}:"))
    assert mine == sorted([seeded.market(SYMBOL), seeded.market(LONG_SYMBOL)])


# ---- the truth, in plain Python ---------------------------------------------------------------------------

Candle = tuple[datetime, Decimal, Decimal, Decimal, Decimal, Decimal]  # time, open, high, low, close, volume


def reference_candles(rows: list[dict[str, Any]], timeframe: str, time_range: TimeRange) -> list[Candle]:
    """Buckets of `timeframe` aggregated from 1m candle rows: open/close of the first/last minute with
    trades, high/low over those, volume summed, the previous close for a bucket without trades; the
    buckets that open inside the range, both ends included (Grafana's BETWEEN)."""
    step = timedelta(seconds=rollups.parse_bucket(timeframe).seconds)
    origin = MONDAY if timeframe.endswith("w") else EPOCH
    buckets: dict[datetime, list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: r["open_time"]):
        buckets.setdefault(origin + (r["open_time"] - origin) // step * step, []).append(r)
    out: list[Candle] = []
    previous: Decimal | None = None
    for t, parts in buckets.items():
        traded = [r for r in parts if r["trades"] > 0]
        volume = sum((r["volume"] for r in parts), Decimal(0))
        if traded:
            candle = (
                t,
                traded[0]["open"],
                max(r["high"] for r in traded),
                min(r["low"] for r in traded),
                traded[-1]["close"],
                volume,
            )
            previous = traded[-1]["close"]
        else:
            assert previous is not None, "the seed starts with a minute that has trades"
            candle = (t, previous, previous, previous, previous, volume)
        if time_range.start <= t <= time_range.end:
            out.append(candle)
    return out


def product_candles(
    conn: psycopg2.extensions.connection, exchange: str, symbol: str, timeframe: str, time_range: TimeRange
) -> list[Candle]:
    """The product's own rollup of the same buckets ([start, end] is [start, end + 1 us) there)."""
    rows = rollups.fetch_rollup(
        conn,
        exchange,
        symbol,
        rollups.parse_bucket(timeframe),
        time_range.start,
        time_range.end + timedelta(microseconds=1),
    )
    return [
        (datetime.fromisoformat(str(r[0])), Decimal(r[1]), Decimal(r[2]), Decimal(r[3]), Decimal(r[4]), Decimal(r[5]))
        for r in rows
    ]


def variables(seeded: Seeded, symbol: str, timeframe: str = "1m") -> dict[str, str]:
    return {"symbol": seeded.market(symbol), "timeframe": timeframe}


# ---- the panels -------------------------------------------------------------------------------------------


def test_candlestick_at_1m_returns_exactly_the_seeded_candles(dashboard, grafana_conn, seeded) -> None:
    window = TimeRange(datetime(2019, 10, 12, 9, 59, 59, 250_000, UTC), datetime(2019, 10, 12, 12, tzinfo=UTC))
    got = run(grafana_conn, panel_sql(dashboard, CANDLES), variables(seeded, SYMBOL, "1m"), window)
    seeded_rows = [r for r in seeded.rows[SYMBOL] if window.start <= r["open_time"] <= window.end]
    assert len(seeded_rows) == 121  # 10:00 to 12:00, both ends (BETWEEN)
    assert got == [(r["open_time"], r["open"], r["high"], r["low"], r["close"], r["volume"]) for r in seeded_rows]


CASES = [
    *[pytest.param(SYMBOL, tf, TWO_DAYS, id=f"{SYMBOL}-{tf}") for tf in TIMEFRAMES if tf != "1w"],
    pytest.param(SYMBOL, "1w", TWO_WEEKS, id=f"{SYMBOL}-1w"),
    pytest.param(LONG_SYMBOL, "1d", TWO_WEEKS, id=f"{LONG_SYMBOL}-1d"),
    pytest.param(LONG_SYMBOL, "1w", TWO_WEEKS, id=f"{LONG_SYMBOL}-1w"),
]


@pytest.mark.parametrize(("symbol", "timeframe", "time_range"), CASES)
def test_candlestick_equals_candles_rolled_up_from_the_seed(
    dashboard, grafana_conn, seeded, symbol, timeframe, time_range
) -> None:
    got = run(grafana_conn, panel_sql(dashboard, CANDLES), variables(seeded, symbol, timeframe), time_range)
    expected = reference_candles(seeded.rows[symbol], timeframe, time_range)
    assert got, "the range holds candles"
    assert got == expected
    assert got == product_candles(grafana_conn, seeded.exchange, symbol, timeframe, time_range)


def test_a_bucket_without_trades_repeats_the_previous_close(dashboard, grafana_conn, seeded) -> None:
    got = run(grafana_conn, panel_sql(dashboard, CANDLES), variables(seeded, SYMBOL, "5m"), TWO_DAYS)
    quiet = [i for i, c in enumerate(got) if c[5] == 0]
    assert quiet, "XRPETH's klines have quiet 5-minute stretches"
    for i in quiet:
        _, o, h, low, c, _ = got[i]
        assert o == h == low == c == got[i - 1][4]


def test_weeks_start_on_monday(dashboard, grafana_conn, seeded) -> None:
    got = run(grafana_conn, panel_sql(dashboard, CANDLES), variables(seeded, LONG_SYMBOL, "1w"), TWO_WEEKS)
    assert [c[0] for c in got] == [datetime(2019, 9, 30, tzinfo=UTC), datetime(2019, 10, 7, tzinfo=UTC)]


def test_1h_candles_are_the_rollup_tables_hours(dashboard, grafana_conn, seeded) -> None:
    got = run(grafana_conn, panel_sql(dashboard, CANDLES), variables(seeded, SYMBOL, "1h"), TWO_DAYS)
    with grafana_conn.cursor() as cur:
        cur.execute(
            "SELECT open_time, open, high, low, close, volume FROM candle_rollups"
            " WHERE exchange = %s AND symbol = %s AND bucket_seconds = 3600 AND open_time BETWEEN %s AND %s"
            " ORDER BY open_time",
            (seeded.exchange, SYMBOL, TWO_DAYS.start, TWO_DAYS.end),
        )
        hours = cur.fetchall()
    assert len(hours) == len(got) == 52  # 06:00 on the 11th to 09:00 on the 13th
    assert got == hours


@pytest.mark.parametrize("timeframe", ["1m", "15m", "4h", "1w"])
def test_price_line_is_the_close_of_each_bucket_with_trades(dashboard, grafana_conn, seeded, timeframe) -> None:
    time_range = TWO_WEEKS if timeframe == "1w" else TWO_DAYS
    got = run(grafana_conn, panel_sql(dashboard, CLOSE), variables(seeded, SYMBOL, timeframe), time_range)
    candles = reference_candles(seeded.rows[SYMBOL], timeframe, time_range)
    assert got == [(c[0], c[4]) for c in candles if c[5] > 0]
    assert got


def reference_kpis(rows: list[dict[str, Any]], end: datetime) -> dict[str, Any]:
    """The stat panels' values from the seed: the last close up to `end`, and over the minutes that opened
    in (end - 24h, end]: Binance's 24h change, the volumes and the trades."""
    up_to = [r for r in rows if r["open_time"] <= end]
    day = [r for r in up_to if r["open_time"] > end - timedelta(hours=24)]
    traded = [r for r in day if r["trades"] > 0]
    return {
        "last": [r for r in up_to if r["trades"] > 0][-1]["close"],
        "change": 100 * (traded[-1]["close"] - traded[0]["open"]) / traded[0]["open"] if traded else None,
        "volume": (sum((r["volume"] for r in day), Decimal(0)), sum((r["quote_volume"] for r in day), Decimal(0))),
        "trades": sum(r["trades"] for r in day),
    }


@pytest.mark.parametrize(
    "end",
    [
        pytest.param(datetime(2019, 10, 13, 9, 30, tzinfo=UTC), id="inside-the-data"),
        pytest.param(datetime(2019, 10, 20, tzinfo=UTC), id="a-week-after-the-last-candle"),
    ],
)
def test_stat_panels_equal_what_the_seed_gives(dashboard, grafana_conn, seeded, end) -> None:
    time_range = TimeRange(end - timedelta(hours=6), end)
    given = variables(seeded, SYMBOL, "15m")
    expected = reference_kpis(seeded.rows[SYMBOL], end)
    assert run(grafana_conn, panel_sql(dashboard, "Last price"), given, time_range) == [(expected["last"],)]
    change = run(grafana_conn, panel_sql(dashboard, "24h change"), given, time_range)
    if expected["change"] is None:
        assert change == []  # no trades in the window: no value, not 0 %
    else:
        ((value,),) = change
        assert abs(value - expected["change"]) < Decimal("1e-12")  # PostgreSQL divides to 16+ digits
        assert expected["trades"] > 0
    assert run(grafana_conn, panel_sql(dashboard, "24h volume"), given, time_range) == [expected["volume"]]
    assert run(grafana_conn, panel_sql(dashboard, "24h trades"), given, time_range) == [(expected["trades"],)]


def test_every_query_runs_for_every_timeframe(dashboard, grafana_conn, seeded) -> None:
    # Whatever the variables, each query is valid SQL for the read-only role and returns rows.
    for timeframe in TIMEFRAMES:
        for where, sql in every_sql(dashboard).items():
            rows = run(grafana_conn, sql, variables(seeded, LONG_SYMBOL, timeframe), TWO_WEEKS)
            assert rows, f"{where} at {timeframe} returned nothing"
