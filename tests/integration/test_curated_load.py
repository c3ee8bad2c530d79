"""The curated load against a real PostgreSQL, from stages written by the real Spark staging code.

Candles are the first minutes of real XRP/ETH 2019-10-11 (tests/fixtures/klines), staged with
candlelake.nightly.staging.write_stage into a lake of the test's own; validations are rows in `quality_runs`
as the data_quality DAG writes them. Every test uses an exchange name of its own and deletes its rows
(the tier's `exchange`, tests/integration/conftest.py, as is the Spark session).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from candlelake.config import Settings
from candlelake.nightly.curated_load import NotStaged, NotValidated, corrections, load_day
from candlelake.nightly.staging import STAGE_INFO, StageInfo, stage_dir, write_stage
from candlelake.sources.klines import read_kline_file
from candlelake.spark.transforms import CURATED_SCHEMA
from candlelake.stream.postgres_candles import COLUMNS, upsert_candles

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

KLINES = Path(__file__).resolve().parents[1] / "fixtures" / "klines" / "XRPETH-1m-2019-10-11.csv"
DAY = date(2019, 10, 11)
MINUTES = 20


@pytest.fixture(scope="module")
def settings(services: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return replace(services, lake_dir=tmp_path_factory.mktemp("lake"))


@pytest.fixture
def conn(settings: Settings) -> Iterator[psycopg2.extensions.connection]:
    c = psycopg2.connect(settings.pg_dsn())
    c.autocommit = True
    with c.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
    yield c
    c.close()


def real_candles(exchange: str) -> list[tuple[Any, ...]]:
    """The day's first minutes of real XRP/ETH as candle rows (postgres_candles.COLUMNS order)."""
    rows = []
    for i, k in enumerate(read_kline_file(KLINES)[:MINUTES]):
        assert k.quote_volume is not None and k.taker_buy_volume is not None and k.taker_buy_quote_volume is not None
        vwap = (k.quote_volume / k.volume).quantize(Decimal("1e-20")) if k.volume else None
        rows.append(
            (
                exchange,
                "XRPETH",
                k.open_time,
                k.open_time + timedelta(seconds=60) - timedelta(milliseconds=1),
                k.open,
                k.high,
                k.low,
                k.close,
                k.volume,
                k.quote_volume,
                k.trades,
                k.taker_buy_volume,
                k.taker_buy_quote_volume,
                vwap,
                13_519_807 + 10 * i,
                13_519_807 + 10 * i + 9,
            )
        )
    return rows


def stage(
    spark: Any,
    settings: Settings,
    exchange: str,
    rows: list[tuple[Any, ...]],
    run_id: str,
    coverage: str | list[str] = "complete",
) -> StageInfo:
    """Stage candle rows (postgres_candles.COLUMNS order) as the nightly batch does, each with its coverage."""
    states = [coverage] * len(rows) if isinstance(coverage, str) else coverage
    curated = [(*r, c) for r, c in zip(rows, states, strict=True)]
    return write_stage(spark.createDataFrame(curated, CURATED_SCHEMA), settings.lake_dir, exchange, DAY, run_id)


def validate(
    conn: psycopg2.extensions.connection,
    info: StageInfo,
    *,
    candles: bool = True,
    trades: bool = True,
    fingerprint: str | None = None,
    trades_at: datetime | None = None,
) -> None:
    """Record validations as the data_quality DAG does: trades, then the staged candles."""
    with conn.cursor() as cur:
        for suite, success, print_, at in (
            ("trades", trades, None, trades_at or datetime.now(UTC)),
            ("candles", candles, fingerprint or info.fingerprint, datetime.now(UTC)),
        ):
            cur.execute(
                "INSERT INTO quality_runs (run_id, exchange, trade_date, suite, success, evaluated, failed, "
                "rows_validated, fingerprint, validated_at) VALUES (%s, %s, %s, %s, %s, 7, %s, %s, %s, %s)",
                (info.run_id, info.exchange, DAY, suite, success, 0 if success else 2, info.rows, print_, at),
            )


def stored(conn: psycopg2.extensions.connection, exchange: str) -> dict[datetime, dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {', '.join(COLUMNS)}, state, updated_at FROM candles WHERE exchange = %s ORDER BY open_time",
            (exchange,),
        )
        names = [*COLUMNS, "state", "updated_at"]
        return {r[2]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def count(conn: psycopg2.extensions.connection, table: str, exchange: str) -> int:
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table} WHERE exchange = %s", (exchange,))
        row = cur.fetchone()
    assert row is not None
    return int(row[0])


def test_load_refuses_a_day_not_staged_or_not_validated(spark, settings, exchange, conn) -> None:
    with pytest.raises(NotStaged, match=f"no candles are staged for {exchange} 2019-10-11"):
        load_day(settings, exchange, DAY, "run-1")
    info = stage(spark, settings, exchange, real_candles(exchange), "run-1")
    with pytest.raises(NotValidated, match=r"candles of .* have not been validated: run the data_quality DAG"):
        load_day(settings, exchange, DAY, "run-1")
    validate(conn, info, trades_at=datetime.now(UTC) - timedelta(hours=1))  # trades checked before the stage
    with pytest.raises(NotValidated, match=r"trades .* were last validated at .* before the candles were staged"):
        load_day(settings, exchange, DAY, "run-1")
    validate(conn, info, candles=False)
    with pytest.raises(NotValidated, match=r"latest validation of the candles .* failed \(2 of 7 expectations"):
        load_day(settings, exchange, DAY, "run-1")
    validate(conn, info, trades=False)
    with pytest.raises(NotValidated, match=r"latest validation of the trades .* failed"):
        load_day(settings, exchange, DAY, "run-1")
    assert count(conn, "candles", exchange) == 0
    assert count(conn, "curated_loads", exchange) == 0
    validate(conn, info)  # now everything holds
    assert load_day(settings, exchange, DAY, "run-1").inserted == MINUTES


def test_load_refuses_candles_changed_after_their_validation(spark, settings, exchange, conn) -> None:
    rows = real_candles(exchange)
    validated = stage(spark, settings, exchange, rows, "run-1")
    validate(conn, validated)
    rows[3] = (*rows[3][:7], rows[3][7] + Decimal("0.00000001"), *rows[3][8:])  # a close changed
    restaged = stage(spark, settings, exchange, rows, "run-2")
    assert restaged.fingerprint != validated.fingerprint
    with pytest.raises(NotValidated, match=rf"not the ones validated \(staged {restaged.fingerprint}, validated"):
        load_day(settings, exchange, DAY, "run-2")
    # A damaged stage: the files no longer hold what _stage.json describes.
    validate(conn, restaged)
    record = stage_dir(settings.lake_dir, exchange, DAY) / STAGE_INFO
    record.write_text(json.dumps({**json.loads(record.read_text()), "rows": MINUTES + 1}))
    with pytest.raises(NotStaged, match=f"hold {MINUTES} candles but _stage.json says {MINUTES + 1}"):
        load_day(settings, exchange, DAY, "run-2")
    assert count(conn, "candles", exchange) == 0


def as_decimals(values: dict[str, Any]) -> dict[str, Any]:
    """Correction JSON with its decimal strings read back (the scale a value was stored with may differ)."""
    return {
        k: Decimal(v) if isinstance(v, str) and k not in ("open_time", "close_time") else v for k, v in values.items()
    }


def test_load_counts_corrections_is_idempotent_and_stream_upserts_cannot_undo_it(
    spark, settings, exchange, conn
) -> None:
    rows = real_candles(exchange)
    t = [r[2] for r in rows]
    # The stream got there first: minute 2 live, without its last trade; minute 4 closed, and right.
    late = list(rows[2])
    late[7], late[8] = late[4], late[8] - 1  # close, volume
    upsert_candles(conn, [tuple(late)], "live")
    upsert_candles(conn, [rows[4]], "closed")

    info = stage(spark, settings, exchange, rows, "run-1")
    validate(conn, info)
    first = load_day(settings, exchange, DAY, "run-1")
    assert (first.candles, first.inserted, first.changed, first.unchanged) == (MINUTES, MINUTES - 2, 1, 1)
    assert first.upserted == MINUTES and first.fingerprint == info.fingerprint
    assert json.loads(json.dumps(first.as_dict()))["trade_date"] == "2019-10-11"  # an XCom for the DAG
    (correction,) = corrections(conn, first.load_id)
    assert (correction["symbol"], correction["open_time"], correction["was_state"]) == ("XRPETH", t[2], "live")
    assert as_decimals(correction["before"]) == {"close": late[7], "volume": late[8]}
    assert as_decimals(correction["after"]) == {"close": rows[2][7], "volume": rows[2][8]}
    after_first = stored(conn, exchange)
    assert [tuple(c[n] for n in COLUMNS) for c in after_first.values()] == rows
    assert {c["state"] for c in after_first.values()} == {"curated"}

    again = load_day(settings, exchange, DAY, "run-1")  # the same stage: nothing changes
    assert (again.inserted, again.changed, again.unchanged, again.upserted) == (0, 0, MINUTES, 0)
    assert list(corrections(conn, again.load_id)) == []
    assert stored(conn, exchange) == after_first  # not even updated_at moved

    # A late trade in minute 7 (5 XRP sold below the low), found by the next recompute: one candle corrected.
    fixed = list(rows[7])
    price = fixed[6] - Decimal("0.00000002")
    fixed[6], fixed[8], fixed[9], fixed[10] = price, fixed[8] + 5, fixed[9] + price * 5, fixed[10] + 1
    fixed[13] = (fixed[9] / fixed[8]).quantize(Decimal("1e-20"))
    rows[7] = tuple(fixed)
    info = stage(spark, settings, exchange, rows, "run-2")
    validate(conn, info)
    third = load_day(settings, exchange, DAY, "run-2")
    assert (third.inserted, third.changed, third.unchanged, third.upserted) == (0, 1, MINUTES - 1, 1)
    (correction,) = corrections(conn, third.load_id)
    assert correction["open_time"] == t[7] and correction["was_state"] == "curated"
    changed = ("low", "volume", "quote_volume", "trades", "vwap")
    assert as_decimals(correction["before"]) == {n: after_first[t[7]][n] for n in changed}
    assert as_decimals(correction["after"]) == {n: fixed[COLUMNS.index(n)] for n in changed}
    now = stored(conn, exchange)
    assert tuple(now[t[7]][n] for n in COLUMNS) == rows[7] and now[t[7]]["state"] == "curated"
    assert {k: v for k, v in now.items() if k != t[7]} == {k: v for k, v in after_first.items() if k != t[7]}
    with conn.cursor() as cur:  # the rollup triggers followed the correction
        cur.execute(
            "SELECT low, volume, trades, state_rank FROM candle_rollups WHERE exchange = %s "
            "AND bucket_seconds = 300 AND open_time = %s",
            (exchange, t[5]),
        )
        low = min(r[6] for r in rows[5:10] if r[10] > 0)
        assert cur.fetchone() == (low, sum(r[8] for r in rows[5:10]), sum(r[10] for r in rows[5:10]), 2)
        cur.execute(
            "SELECT run_id, candles, inserted, changed, unchanged FROM curated_loads WHERE exchange = %s "
            "ORDER BY load_id",
            (exchange,),
        )
        assert cur.fetchall() == [
            ("run-1", MINUTES, MINUTES - 2, 1, 1),
            ("run-1", MINUTES, 0, 0, MINUTES),
            ("run-2", MINUTES, 0, 1, MINUTES - 1),
        ]

    # The stream replays a stale micro-batch of these minutes, as live and as closed: curated stays.
    replayed = [(*r[:7], r[7] * 2, r[8] + 1, *r[9:]) for r in rows[:10]]
    upsert_candles(conn, replayed, "live")
    upsert_candles(conn, replayed, "closed")
    assert stored(conn, exchange) == now


def quiet_after(row: tuple[Any, ...], minutes: int) -> tuple[Any, ...]:
    """A candle without trades `minutes` after `row`, at its close (Binance's empty kline)."""
    at = row[2] + timedelta(minutes=minutes)
    close = row[7]
    return (row[0], row[1], at, at + timedelta(seconds=60) - timedelta(milliseconds=1), close, close, close, close,
            Decimal(0), Decimal(0), 0, Decimal(0), Decimal(0), None, None, None)  # fmt: skip


def test_coverage_is_published_and_quiet_candles_no_longer_covered_are_withdrawn(
    spark, settings, exchange, conn
) -> None:
    rows = real_candles(exchange)[:5]
    quiet = [quiet_after(rows[-1], m) for m in (1, 2)]
    # The first load believed minutes 5 and 6 quiet (covered); its first minute was partly unseen.
    info = stage(spark, settings, exchange, [*rows, *quiet], "run-1", ["partial"] + ["complete"] * 6)
    validate(conn, info)
    first = load_day(settings, exchange, DAY, "run-1")
    assert (first.inserted, first.withdrawn) == (7, 0)
    with conn.cursor() as cur:
        cur.execute("SELECT open_time, coverage FROM candles WHERE exchange = %s ORDER BY open_time", (exchange,))
        published = cur.fetchall()
    assert [c for _, c in published] == ["partial"] + ["complete"] * 6

    # Coverage recorded later shows minute 6 unseen: the next stage holds no candle there.
    info = stage(spark, settings, exchange, [*rows, quiet[0]], "run-2", ["partial"] + ["complete"] * 5)
    validate(conn, info)
    second = load_day(settings, exchange, DAY, "run-2")
    assert (second.inserted, second.changed, second.withdrawn) == (0, 0, 1)
    assert quiet[1][2] not in stored(conn, exchange) and quiet[0][2] in stored(conn, exchange)
    (correction,) = corrections(conn, second.load_id)
    assert correction["open_time"] == quiet[1][2] and correction["after"] == {}
    assert correction["before"] == {"trades": 0, "coverage": "complete"}
    with conn.cursor() as cur:
        cur.execute("SELECT withdrawn FROM curated_loads WHERE load_id = %s", (second.load_id,))
        assert cur.fetchone() == (1,)
