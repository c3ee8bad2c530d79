"""The nightly chain, run by Airflow on real Binance trades: its curated candles are Binance's klines.

tests/fixtures/binance-spot-xrpeth-2019-10 (provenance in its README): 12,477 XRP/ETH aggTrades and
Binance's 1m and 5m klines for the same 2.5 days, 1,091 of whose minutes had no trade. The trades go
through `candlelake replay` into Kafka twice, as a user who replays a file again would (the first time
with --no-chain), and the streaming job lands them in the lake (they are years older than the live
watermark, so only the lake takes them). Then one triggered `lake_compaction` run
sets off the whole chain through the scheduler and its assets: compaction, `data_quality` (recompute
to staging, Great Expectations), `load_curated_candles` (COPY and upsert as curated) and
`reconcile_klines` against a fake Binance REST API serving the recorded klines on the port the
platform's CANDLELAKE_BINANCE_REST_URL names (tests/e2e/conftest.py). `candlelake candles` then serves
the curated candles, which must equal Binance's klines digit for digit at 1m and 5m: every trade
counted once although it was sent twice.

Afterwards a candle is corrupted in the staged output: validation must fail, say why (task log,
`quality_runs`, Data Docs), and the load must refuse to publish it.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from candlelake.config import Settings
from candlelake.nightly.staging import stage_dir, staged_files
from tests.e2e.airflow_support import client, dags_test, failed_task_logs
from tests.e2e.conftest import FAKE_BINANCE_REST_PORT, run_cli
from tests.support.postgres import rows

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(1800),
]

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "fixtures" / "binance-spot-xrpeth-2019-10"
KLINE_FILES = ROOT / "tests" / "fixtures" / "klines"
TRADES = 12_477
DAYS = [date(2019, 10, 11), date(2019, 10, 12), date(2019, 10, 13)]
CHAIN_DAGS = ("lake_compaction", "data_quality", "load_curated_candles", "reconcile_klines")
# The capture runs from 2019-10-11T00:00:11.620Z to 2019-10-13T11:19:28.844Z: minutes per day it covers.
MINUTES = {DAYS[0]: 1440, DAYS[1]: 1440, DAYS[2]: 11 * 60 + 20}


def klines(name: str) -> list[list[float]]:
    return json.loads((DATA / name).read_text())


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def kline_server() -> Any:
    """The recorded klines behind Binance's REST API, on the port the platform was told to use."""
    from tests.fakes.binance_rest import FakeBinanceRest, klines_from_csv

    files = sorted(KLINE_FILES.glob("XRPETH-1m-*.csv"))
    recorded = {"XRPETH": [row for path in files for row in klines_from_csv(path)]}
    with FakeBinanceRest(None, "binance", klines=recorded, port=FAKE_BINANCE_REST_PORT) as server:
        yield server


def replayed_runs(output: str) -> dict[str, str]:
    """dag_id -> run_id from the lines `candlelake replay` ends with ("  lake_compaction   success  <run id>")."""
    found = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in CHAIN_DAGS:
            found[parts[0]] = parts[2]
    return found


def replay_history(*options: str) -> Any:
    return run_cli(
        "replay", str(DATA / "aggtrades.json.gz"), "--exchange", "binance", "--symbol", "XRPETH", *options, timeout=1500
    )


@pytest.fixture(scope="module")
def chain(platform: Settings, kline_server: Any) -> dict[str, Any]:
    """A user's command: `candlelake replay` of the history runs the chain and waits for it.

    The file goes in twice, first without the chain: the copies must be counted once (the stream's lake
    dedupe drops those it still remembers, the compaction the rest). One chain run over the doubled
    input costs a few seconds more than one over the file, where a second replay with its own chain
    would cost a whole run (about 280 s); that a re-run's curated load changes nothing is
    tests/integration/test_curated_load.py's."""
    first = replay_history("--no-chain")
    assert first.returncode == 0, (first.stdout + first.stderr)[-6000:]
    replay = replay_history()
    output = replay.stdout + replay.stderr
    assert replay.returncode == 0, output[-6000:]
    assert f"{TRADES} of {TRADES} trades are older than the live stream's watermark" in replay.stdout
    ids = replayed_runs(replay.stdout)
    assert set(ids) == set(CHAIN_DAGS), output[-4000:]
    with client(platform) as api:
        runs = {dag_id: api.get_dag_run(dag_id, run_id) for dag_id, run_id in ids.items()}
    for dag_id, run in runs.items():
        assert run.state == "success", f"{dag_id} {run.state}:\n{failed_task_logs(platform, run)}"
    return {**runs, "output": replay.stdout}


def served(interval: str, first_ms: int, end_ms: int) -> list[dict[str, str]]:
    result = run_cli(
        "candles",
        "--exchange",
        "binance",
        "--symbol",
        "XRPETH",
        "--interval",
        interval,
        "--start",
        iso(first_ms),
        "--end",
        iso(end_ms),
    )
    assert result.returncode == 0, result.stderr
    return list(csv.DictReader(io.StringIO(result.stdout)))


@pytest.mark.parametrize(
    ("interval", "file", "step_ms"), [("1m", "klines-1m.json", 60_000), ("5m", "klines-5m.json", 300_000)]
)
def test_curated_candles_equal_binance_klines_for_every_interval(chain, interval, file, step_ms) -> None:
    expected = klines(file)
    result = served(interval, expected[0][0], expected[-1][0] + step_ms)
    assert [r["open_time"] for r in result] == [iso(k[0]) for k in expected]
    mismatches = []
    for row, kline in zip(result, expected, strict=True):
        for name, value in zip(("open", "high", "low", "close", "volume"), kline[1:6], strict=True):
            if Decimal(row[name]) != Decimal(repr(value)):
                mismatches.append(f"{row['open_time']} {name}: ours {row[name]}, Binance {value!r}")
    assert mismatches == [], f"{len(mismatches)} mismatches, first: {mismatches[:5]}"
    empty = sum(1 for r in result if r["trades"] == "0")
    assert empty == sum(1 for k in expected if k[5] == 0)
    assert empty > 0
    assert {r["state"] for r in result} == {"curated"}


EIGHT = ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")


def aggtrades_per_minute() -> dict[str, int]:
    """The recording's aggTrades per minute: what `trades` counts (Binance's kline counts raw trades)."""
    import gzip

    counts: dict[str, int] = {}
    with gzip.open(DATA / "aggtrades.json.gz", "rt") as f:
        for item in json.load(f):
            minute = iso(item["info"]["T"] - item["info"]["T"] % 60_000)
            counts[minute] = counts.get(minute, 0) + 1
    return counts


def test_full_minutes_equal_the_kline_files_on_nine_fields_and_the_edges_are_partial(chain) -> None:
    """Eight values against Binance's kline files; the ninth, the trade count, against the aggTrades."""
    from candlelake.sources.klines import read_kline_file

    first_ms, last_ms = 1570752011620, 1570965568844  # the capture's first and last trade
    served_1m = served("1m", first_ms - first_ms % 60_000, last_ms + 86_400_000 * 2)
    by_time = {r["open_time"]: r for r in served_1m}
    counts = aggtrades_per_minute()
    files = sorted(KLINE_FILES.glob("XRPETH-1m-2019-10-1*.csv"))
    compared = 0
    for kline in (k for path in files for k in read_kline_file(path)):
        at = kline.open_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        row = by_time[at]
        theirs = [kline.open, kline.high, kline.low, kline.close, kline.volume, kline.quote_volume,
                  kline.taker_buy_volume, kline.taker_buy_quote_volume]  # fmt: skip
        ours = [Decimal(row[n]) for n in EIGHT]
        assert ours == [Decimal(v) for v in theirs], f"{at}: ours {ours}, the kline {theirs}"
        assert int(row["trades"]) == counts.get(at, 0), at
        assert (kline.trades > 0) == (int(row["trades"]) > 0), at
        compared += 1
    assert compared == sum(MINUTES.values())
    # The capture starts 11.6 s into its first minute and ends 28.8 s into its last: both partial, the
    # rest complete; nothing after its last minute, and nothing on the day after.
    coverage = [r["coverage"] for r in served_1m]
    assert coverage[0] == coverage[-1] == "partial" and set(coverage[1:-1]) == {"complete"}
    assert served_1m[-1]["open_time"] == iso(last_ms - last_ms % 60_000)
    hours = served("1h", first_ms - first_ms % 3_600_000, last_ms + 3_600_000)
    assert hours[0]["coverage"] == hours[-1]["coverage"] == "partial"  # each holds a partial minute
    assert {r["coverage"] for r in hours[1:-1]} == {"complete"}
    assert served("1m", 1571011200000, 1571097600000) == []  # 2019-10-14
    # The replay ended with the count and state of what it made.
    for day in DAYS:
        partial = 1 if day in (DAYS[0], DAYS[-1]) else 0
        quiet = sum(1 for r in served_1m if r["open_time"].startswith(day.isoformat()) and r["trades"] == "0")
        line = (
            f"XRPETH {day.isoformat()}: {MINUTES[day]} curated candles ({MINUTES[day] - partial} complete, "
            f"{quiet} of them quiet; {partial} partial)"
        )
        assert line in chain["output"], chain["output"][-3000:]


def test_compaction_kept_every_trade_once(platform: Settings, chain) -> None:
    found = rows(
        platform,
        "SELECT trade_date, status, files_before, files_after, rows_before, duplicates_dropped, rows_after "
        "FROM lake_compactions WHERE run_id = %s AND exchange = 'binance' ORDER BY trade_date",
        (chain["lake_compaction"].run_id,),
    )
    assert [r[0] for r in found] == DAYS
    assert {r[1] for r in found} == {"switched"}
    assert sum(r[6] for r in found) == TRADES  # every distinct trade once, over the three days
    # A fresh lake holds each day in one batch file (the replay is fast), so there may be nothing to
    # cut here; the compaction kill test and tests/integration/test_compaction.py show the cut.
    for day, _, before, after, rows_before, dropped, rows_after in found:
        assert after <= before, f"{day}: {before} files became {after}"
        assert rows_after == rows_before - dropped


def test_quality_and_reconciliation_are_recorded(platform: Settings, chain) -> None:
    suites = rows(
        platform,
        "SELECT trade_date, suite, success FROM quality_runs WHERE run_id = %s AND exchange = 'binance'",
        (chain["data_quality"].run_id,),
    )
    assert sorted(suites) == sorted((d, s, True) for d in DAYS for s in ("candles", "trades"))
    assert (platform.reports_dir / "data_docs" / "index.html").is_file()
    loaded = rows(
        platform,
        "SELECT trade_date, candles FROM curated_loads WHERE run_id = %s AND exchange = 'binance' ORDER BY 1",
        (chain["load_curated_candles"].run_id,),
    )
    assert [d for d, _ in loaded] == DAYS
    # Every covered minute of each day, quiet ones included; nothing after the capture's last trade.
    assert [n for _, n in loaded] == [MINUTES[d] for d in DAYS]
    matched = rows(
        platform,
        "SELECT trade_date, klines, matched, mismatched, match_rate FROM kline_reconciliations "
        "WHERE run_id = %s AND symbol = 'XRPETH' ORDER BY 1",
        (chain["reconcile_klines"].run_id,),
    )
    assert [r[0] for r in matched] == DAYS
    assert sum(r[1] for r in matched) == len(klines("klines-1m.json"))
    assert all(r[3] == 0 and r[4] == 1.0 for r in matched), matched


def test_a_corrupted_candle_fails_validation_and_is_not_loaded(platform: Settings, chain) -> None:
    day = DAYS[0]
    before = rows(
        platform,
        "SELECT open_time, high, close FROM candles WHERE exchange = 'binance' AND symbol = 'XRPETH' "
        "AND open_time >= %s AND open_time < %s + interval '1 day' ORDER BY open_time",
        (day, day),
    )
    # Corrupt the staged candles the way a bad transform would: one minute's high below its close.
    [path] = staged_files(platform.lake_dir, "binance", day)
    table = pq.read_table(path)
    trading = [i for i, n in enumerate(table.column("trades").to_pylist()) if n > 0]
    victim = trading[len(trading) // 2]
    highs = table.column("high").to_pylist()
    lows = table.column("low").to_pylist()
    highs[victim] = lows[victim] - Decimal("0.00000001")
    field = table.schema.field("high")
    table = table.set_column(table.schema.get_field_index("high"), field, pa.array(highs, type=field.type))
    # Timestamps as Spark wrote them (INT96): pyarrow's default INT64 without a zone reads as TIMESTAMP_NTZ.
    pq.write_table(table, path, use_deprecated_int96_timestamps=True)
    path.with_name(f".{path.name}.crc").unlink(missing_ok=True)  # Spark's checksum of the old bytes
    conf = {"exchange": "binance", "trade_date": day.isoformat()}

    audit = dags_test(platform, "data_quality", conf, mark_success="recompute_candles")
    assert audit.returncode != 0, "validation passed a candle whose high is below its low"
    log = audit.stdout + audit.stderr
    assert "validation failed" in log and "high" in log, log[-3000:]
    failures = rows(
        platform,
        "SELECT suite, failures::text FROM quality_runs WHERE exchange = 'binance' AND trade_date = %s "
        "AND NOT success ORDER BY validated_at DESC LIMIT 1",
        (day,),
    )
    assert failures and failures[0][0] == "candles" and "high" in failures[0][1]
    docs = (platform.reports_dir / "data_docs").rglob("*.html")
    assert any("high" in p.read_text(errors="replace") and "candles" in p.name for p in docs)

    publish = dags_test(platform, "load_curated_candles", conf)
    assert publish.returncode != 0, "the load published candles that failed validation"
    assert "not loaded" in publish.stdout + publish.stderr
    after = rows(
        platform,
        "SELECT open_time, high, close FROM candles WHERE exchange = 'binance' AND symbol = 'XRPETH' "
        "AND open_time >= %s AND open_time < %s + interval '1 day' ORDER BY open_time",
        (day, day),
    )
    assert after == before
    assert stage_dir(platform.lake_dir, "binance", day).is_dir()


def test_the_training_dag_registers_both_models_from_the_curated_history(platform: Settings, chain) -> None:
    """train_models, run by Airflow's scheduler on the curated XRP/ETH days: the run registers a version
    of both models in the platform's MLflow store as challenger, each with its verdict, and the detector
    the first store holds beats the rules and becomes champion. A second model that does not beat the
    champion is refused in tests/integration/test_model_registry.py (one run here: each takes ~70 s)."""
    from candlelake.analytics import registry
    from tests.e2e.airflow_support import trigger

    conf = {"exchanges": ["binance"], "end": "2019-10-14", "days": 4}
    client = registry.use(platform).MlflowClient()

    def versions(model: str) -> list[int]:
        return sorted(int(v.version) for v in client.search_model_versions(f"name = '{model}'"))

    before = versions(registry.DETECTOR_MODEL)
    run = trigger(platform, "train_models", conf, timeout=1200)
    assert run.state == "success", failed_task_logs(platform, run)
    after = versions(registry.DETECTOR_MODEL)
    assert len(after) == len(before) + 1
    latest = client.get_model_version(registry.DETECTOR_MODEL, str(after[-1]))
    assert str(client.get_model_version_by_alias(registry.DETECTOR_MODEL, "challenger").version) == str(after[-1])
    assert latest.tags["candlelake.verdict"]
    if not before:  # a new store: the first detector beats the rules and becomes champion
        assert latest.tags["candlelake.verdict"] == "beats every baseline and there is no champion yet", latest.tags
        assert str(client.get_model_version_by_alias(registry.DETECTOR_MODEL, "champion").version) == "1"
    trend = client.get_model_version_by_alias(registry.TREND_MODEL, "challenger")
    assert trend.tags["candlelake.verdict"]  # registered, with the rule's verdict, whichever it was
