"""Replay: format detection, reading, skip and duplicate counting, pacing and clear errors, no Kafka."""

from __future__ import annotations

import gzip
import json
import time
import zipfile
from pathlib import Path

import pytest

from candlelake import cli
from candlelake.ingest.dead_letter import dead_letter_record
from candlelake.runs import replay
from candlelake.sources.fields import Rejection
from candlelake.sources.recordings import ReplayError, SeenIds, open_recording, read
from candlelake.trade import Trade

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "replay"
SPOT = FIXTURES / "binance-spot-aggtrade.jsonl"
AGG_HEADER = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
SPOT_AGG_US = [
    "3411240963,93548.80000000,0.00100000,4391211048,4391211048,1735689600125455,True,True",
    "3411240964,93548.81000000,0.00020000,4391211049,4391211050,1735689600200000,False,True",
]


class ListSink(list[object]):
    def send(self, item: object) -> None:
        self.append(item)


def run(path: Path, exchange: str | None = None, symbol: str | None = None, **kw: object) -> tuple[
    replay.ReplaySummary, list[Trade], list[Rejection]
]:  # fmt: skip
    trades, rejections = ListSink(), ListSink()
    summary = replay.replay(open_recording(path, exchange, symbol), trades, rejections, **kw)  # type: ignore[arg-type]
    return summary, trades, rejections  # type: ignore[return-value]


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_a_binance_capture_replays_every_trade_in_file_order() -> None:
    summary, trades, rejections = run(SPOT)
    expected = [json.loads(line)["data"]["a"] for line in SPOT.read_text().splitlines()]
    assert [t.trade_id for t in trades] == expected and not rejections
    assert (summary.format, summary.lines, summary.accepted, summary.skipped) == ("ws-capture", 200, 200, 0)
    assert {t.exchange for t in trades} == {"binance"} and trades[0].source == "replay:binance-ws"
    assert summary.first_trade_us == 1617566591314000


def test_klines_subscriptions_and_heartbeats_are_skipped_and_counted_not_rejected(tmp_path: Path) -> None:
    spot, klines = SPOT.read_text().splitlines(), (FIXTURES / "binance-spot-kline_1m.jsonl").read_text().splitlines()
    capture = write(
        tmp_path / "mixed.jsonl",
        '{"result":null,"id":1}',
        *[line for pair in zip(spot[:20], klines, strict=True) for line in pair],
        '{"e":"24hrTicker","s":"BTCUSDT","c":"1"}',
        "",
    )
    summary, trades, rejections = run(capture)
    assert (summary.accepted, summary.skipped, len(rejections)) == (20, 22, 0)
    assert len(trades) == 20


def test_a_receive_timestamp_before_a_message_is_ignored_and_usdm_is_detected(tmp_path: Path) -> None:
    usdm = (FIXTURES / "binance-usdm-aggtrade.jsonl").read_text().splitlines()
    capture = write(tmp_path / "stamped.jsonl", *[f"1618677448.301 {line}" for line in usdm[:5]], usdm[5])
    summary, trades, _ = run(capture)
    assert summary.accepted == 6 and {t.exchange for t in trades} == {"binance-usdm"}
    assert trades[0].symbol == "YFIUSDT" and trades[0].trade_id == 52599685


def test_a_coinbase_capture_keeps_matches_and_skips_tickers() -> None:
    summary, trades, rejections = run(FIXTURES / "coinbase-matches-and-ticker.jsonl")
    assert (summary.accepted, summary.skipped, len(rejections)) == (107, 107, 0)
    assert {t.exchange for t in trades} == {"coinbase"}
    assert "BAND-GBP" in {t.symbol for t in trades}


def test_symbol_picks_one_market_out_of_a_capture() -> None:
    summary, trades, _ = run(SPOT, symbol="ethusdt")
    assert {t.symbol for t in trades} == {"ETHUSDT"} and summary.skipped == 200 - summary.accepted > 0
    _, matches, _ = run(FIXTURES / "coinbase-matches-and-ticker.jsonl", symbol="BAND-GBP")
    assert matches and {t.symbol for t in matches} == {"BAND-GBP"}


def test_the_xrpeth_json_array_gzip_reads_the_rest_aggtrades() -> None:
    summary, trades, _ = run(FIXTURES / "xrpeth-aggtrades-first200.json.gz")
    assert summary.format == "json-array" and summary.accepted == 200
    assert [t.trade_id for t in trades] == list(range(13519807, 13520007))
    assert {(t.exchange, t.symbol) for t in trades} == {("binance", "XRPETH")}


def test_malformed_lines_are_rejected_with_their_raw_text(tmp_path: Path) -> None:
    good = SPOT.read_text().splitlines()[0]
    bad_price = good.replace('"p":"58001.03000000"', '"p":"NaN"')
    capture = write(tmp_path / "bad.jsonl", good, "{not json", "garbage line", bad_price, "[1,2]")
    summary, trades, rejections = run(capture)
    assert len(trades) == 1
    assert [r.code for r in rejections] == ["malformed", "malformed", "not-finite", "malformed"]
    assert rejections[0].raw == "{not json" and rejections[2].raw == bad_price
    assert summary.rejected == {"malformed": 3, "not-finite": 1}
    assert "rejected    4 (malformed 3, not-finite 1)" in summary.text()
    record = dead_letter_record(rejections[2])
    assert set(record) == {"raw", "code", "reason", "source", "time"} and "not a finite number" in record["reason"]
    assert record["code"] == "not-finite"


def test_a_coinbase_message_in_a_binance_replay_is_rejected() -> None:
    _, trades, rejections = run(FIXTURES / "coinbase-matches-and-ticker.jsonl", exchange="binance")
    assert not trades and len(rejections) == 107 and {r.code for r in rejections} == {"wrong-exchange"}


def test_duplicates_seen_earlier_in_the_same_replay_are_dropped_and_counted(tmp_path: Path) -> None:
    spot = SPOT.read_text().splitlines()
    capture = write(tmp_path / "dup.jsonl", *spot[:50], *spot[10:20], *spot[50:], spot[0])
    summary, trades, _ = run(capture)
    assert summary.accepted == 200 and summary.duplicates == 11
    assert len({(t.symbol, t.trade_id) for t in trades}) == len(trades) == 200


def test_seen_ids_merge_into_ranges_in_any_order() -> None:
    seen = SeenIds()
    for trade_id in [5, 7, 6, 1, 3, 2, 4, 10, 9, 8]:
        assert seen.add("m", trade_id)
    assert seen.ranges("m") == 1
    assert not any(seen.add("m", i) for i in range(1, 11))
    assert seen.add("other", 5)


@pytest.mark.parametrize("header", [False, True])
def test_a_futures_aggtrades_csv_with_or_without_header(tmp_path: Path, header: bool) -> None:
    rows = [
        "9445517,0.69067,369,12821738,12821738,1617647797485,true",
        "9445518,0.69070,12,12821739,12821740,1617647797600,false",
    ]
    path = write(tmp_path / "SANDUSDT-aggTrades-2021-04-05.csv", *([AGG_HEADER] if header else []), *rows)
    summary, trades, rejections = run(path)
    assert summary.format == "aggTrades-csv" and not rejections
    assert [(t.exchange, t.symbol, t.trade_id, t.trade_time_us) for t in trades] == [
        ("binance-usdm", "SANDUSDT", 9445517, 1617647797485000),
        ("binance-usdm", "SANDUSDT", 9445518, 1617647797600000),
    ]
    assert [t.is_buyer_maker for t in trades] == [True, False]


def test_a_2025_spot_aggtrades_zip_has_microsecond_times(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT-aggTrades-2025-01-01.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("BTCUSDT-aggTrades-2025-01-01.csv", "\n".join(SPOT_AGG_US) + "\n")
    _, trades, _ = run(path)
    assert [(t.exchange, t.symbol, t.trade_time_us) for t in trades] == [
        ("binance", "BTCUSDT", 1735689600125455),
        ("binance", "BTCUSDT", 1735689600200000),
    ]


def test_a_spot_trades_csv_without_a_telling_name_needs_and_takes_symbol(tmp_path: Path) -> None:
    path = write(tmp_path / "export.csv", "4391211048,94591.79,0.00012,11.35,1735689600125455,False,True")
    with pytest.raises(ReplayError, match="pass --symbol"):
        open_recording(path)
    summary, trades, _ = run(path, symbol="btc-usdt")
    assert summary.format == "trades-csv" and trades[0].symbol == "BTCUSDT" and trades[0].exchange == "binance"


def test_a_futures_trades_csv_with_header_in_a_gzip(tmp_path: Path) -> None:
    path = tmp_path / "ETHUSDT-trades-2024-01-01.csv.gz"
    path.write_bytes(
        gzip.compress(
            b"id,price,qty,quote_qty,time,is_buyer_maker\n2474937398,3337.06,0.010,33.37,1704067200014,true\n"
        )
    )
    _, trades, _ = run(path)
    assert [(t.exchange, t.symbol, t.trade_id, str(t.price)) for t in trades] == [
        ("binance-usdm", "ETHUSDT", 2474937398, "3337.06")
    ]


def test_bad_csv_rows_are_rejected_not_fatal(tmp_path: Path) -> None:
    path = write(
        tmp_path / "BTCUSDT-aggTrades-2025-01-01.csv", SPOT_AGG_US[0], "1,2,3", SPOT_AGG_US[1].replace("93548.81", "-1")
    )
    summary, trades, _ = run(path)
    assert len(trades) == 1 and summary.rejected == {"malformed": 1, "non-positive-price": 1}


def test_rate_limits_trades_per_second_and_progress_is_reported() -> None:
    progress: list[str] = []
    started = time.monotonic()
    summary, _, _ = run(SPOT, rate=1000.0, progress=progress.append, progress_every_s=0.05)
    assert time.monotonic() - started >= 0.19 and summary.accepted == 200
    assert progress and "lines read" in progress[0] and "accepted" in progress[0]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "no such file"),
        ("broken.zip", b"PK\x03\x04 this is not a zip", "not a readable zip archive"),
        ("notes.txt", b"hello world\n", "not a known format"),
        ("empty.jsonl", b"", "the file is empty"),
        ("five.csv", b"1,2,3,4,5\n", "neither a Binance trades nor aggTrades file"),
    ],
)
def test_files_that_cannot_be_replayed_get_one_clear_error(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ReplayError, match=message):
        open_recording(path)


def test_a_truncated_gzip_fails_clearly_while_reading(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl.gz"
    whole = gzip.compress(SPOT.read_bytes())
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ReplayError, match="cannot be read"):
        list(read(open_recording(path)))


def test_the_cli_says_one_line_and_exits_2_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["replay", str(tmp_path / "nope.zip")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"candlelake replay: {tmp_path / 'nope.zip'}: no such file"
    assert cli.main(["replay", str(SPOT), "--rate", "0"]) == 2
    assert "--rate 0.0: give a positive number" in capsys.readouterr().err
