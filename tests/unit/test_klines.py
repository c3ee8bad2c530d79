"""Kline files (data.binance.vision format) and the pure candle-vs-kline comparison.

The fixture tests/fixtures/klines/XRPETH-1m-2019-10-11.csv is Binance's real XRP/ETH klines of one day
with the columns the recording lacked computed from the real aggTrades (its README); the first tests
check that it is exactly that, the rest use it as the exchange's word.
"""

from __future__ import annotations

import gzip
import json
import zipfile
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from candlelake.candle import Candle
from candlelake.nightly.kline_sources import FileKlines, Klines, RestKlines, answers, kline_source
from candlelake.nightly.reconcile import (
    MAX_EXAMPLES,
    ReconcileFailed,
    ReconcileResult,
    check_threshold,
    compare,
)
from candlelake.sources.klines import (
    Kline,
    KlineError,
    KlineFileNotFound,
    KlineFormatError,
    KlineSourceUnreachable,
    epoch_time,
    file_klines,
    find_kline_file,
    parse_kline,
    read_kline_file,
)
from candlelake.trade import Trade
from tests.support.reference_candles import reference_candles

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
KLINES = FIXTURES / "klines"
CSV = KLINES / "XRPETH-1m-2019-10-11.csv"
RECORDING = FIXTURES / "binance-spot-xrpeth-2019-10"
DAY = date(2019, 10, 11)
DAY_START = datetime(2019, 10, 11, tzinfo=UTC)
HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore"
)


@pytest.fixture(scope="module")
def klines() -> list[Kline]:
    return read_kline_file(CSV)


@pytest.fixture(scope="module")
def agg_trades() -> list[dict]:
    with gzip.open(RECORDING / "aggtrades.json.gz", "rt") as f:
        return [row["info"] for row in json.load(f)]


def candle_of(k: Kline) -> Candle:
    assert k.quote_volume is not None and k.trades is not None
    assert k.taker_buy_volume is not None and k.taker_buy_quote_volume is not None
    return Candle(
        k.open_time,
        k.open,
        k.high,
        k.low,
        k.close,
        k.volume,
        k.quote_volume,
        k.trades,
        k.taker_buy_volume,
        k.taker_buy_quote_volume,
    )


# --- the fixture is what its README says -----------------------------------------------------------------


@pytest.fixture(scope="module")
def all_klines() -> list[Kline]:
    """Every fixture file, in day order: the recording's 3,560 minutes."""
    return [k for path in sorted(KLINES.glob("XRPETH-1m-*.csv")) for k in read_kline_file(path)]


def test_fixtures_are_the_recorded_minutes_with_binance_s_recorded_ohlcv(all_klines, klines) -> None:
    recorded = json.loads((RECORDING / "klines-1m.json").read_text())
    assert [k.open_time for k in all_klines] == [DAY_START + timedelta(minutes=i) for i in range(len(recorded))]
    assert all(k.close_time == k.open_time + timedelta(seconds=60) - timedelta(milliseconds=1) for k in all_klines)
    for k, r in zip(all_klines, recorded, strict=True):
        assert epoch_time(r[0]) == k.open_time
        # The recording holds floats; the file spells each as the exact decimal the float was printed from.
        assert [Decimal(repr(v)) for v in r[1:6]] == [k.open, k.high, k.low, k.close, k.volume]
    assert [len(read_kline_file(p)) for p in sorted(KLINES.glob("XRPETH-1m-*.csv"))] == [1440, 1440, 680]
    assert klines == all_klines[:1440]
    assert klines[0] == parse_kline(
        [1570752000000, "0.00141342", "0.00141557", "0.00141266", "0.00141418", "1482.00000000", 1570752059999,
         "2.09550564", 9, "1182.00000000", "1.67111936", "0"]
    )  # fmt: skip


def test_fixture_columns_the_recording_lacked_are_exact_sums_of_the_real_agg_trades(all_klines, agg_trades) -> None:
    minutes: dict[datetime, list[dict]] = defaultdict(list)
    for t in agg_trades:
        minutes[epoch_time(t["T"] - t["T"] % 60_000)].append(t)
    assert minutes.keys() <= {k.open_time for k in all_klines}  # every trade's minute has its kline
    for k in all_klines:
        group = minutes.get(k.open_time, [])
        buys = [t for t in group if not t["m"]]
        assert k.quote_volume == sum((Decimal(t["p"]) * Decimal(t["q"]) for t in group), Decimal(0))
        assert k.trades == sum(t["l"] - t["f"] + 1 for t in group)
        assert k.taker_buy_volume == sum((Decimal(t["q"]) for t in buys), Decimal(0))
        assert k.taker_buy_quote_volume == sum((Decimal(t["p"]) * Decimal(t["q"]) for t in buys), Decimal(0))
    assert sum(1 for k in all_klines if k.trades == 0) == 1091  # quiet minutes: flat klines, as Binance emits them
    # Binance's count is of raw trades: some aggregate trades cover several.
    assert sum(k.trades or 0 for k in all_klines) > len(agg_trades)


def test_candles_from_the_real_trades_equal_the_fixture_klines(klines, agg_trades) -> None:
    """Our candle rules (tests/support/reference_candles.py, empty minutes carrying the previous close)
    on the real trades give every kline of the day, all fields compared."""
    trades = [
        Trade("binance", "XRPETH", t["a"], Decimal(t["p"]), Decimal(t["q"]), t["T"] * 1000, t["m"], 0, "fixture")
        for t in agg_trades
    ]
    built = {c.open_time: c for c in reference_candles(trades).values() if c.open_time.date() == DAY}
    candles: list[Candle] = []
    previous = None
    for i in range(1440):
        at = DAY_START + timedelta(minutes=i)
        if at in built:
            candles.append(built[at])
            previous = built[at].close
        else:
            assert previous is not None  # the day's first minute has trades
            zero = Decimal(0)
            candles.append(Candle(at, previous, previous, previous, previous, zero, zero, 0, zero, zero))
    result = compare("binance", "XRPETH", DAY, "files", candles, klines)
    assert (result.matched, result.mismatched, result.missing_candles, result.missing_klines) == (1440, 0, 0, 0)
    assert result.match_rate == 1.0 and result.examples == ()


# --- kline files -------------------------------------------------------------------------------------------


def test_zip_header_and_microsecond_files_read_the_same(tmp_path, klines) -> None:
    lines = CSV.read_text().splitlines()
    archive = tmp_path / "zip" / "XRPETH-1m-2019-10-11.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("XRPETH-1m-2019-10-11.csv", CSV.read_text())
    header = tmp_path / "XRPETH-1m-2019-10-11-header.csv"
    header.write_text(HEADER + "\n" + "\n".join(lines) + "\n")
    micro = tmp_path / "micro.csv"  # spot files from 2025 on: times in microseconds
    micro.write_text(
        "\n".join(",".join([f"{c[0]}000", *c[1:6], f"{c[6]}999", *c[7:]]) for c in (line.split(",") for line in lines))
    )
    assert read_kline_file(archive) == klines
    assert read_kline_file(header) == klines
    micro_klines = read_kline_file(micro)
    assert [k.open_time for k in micro_klines] == [k.open_time for k in klines]
    assert micro_klines[0].close_time == klines[0].close_time + timedelta(microseconds=999)
    assert [replace(k, close_time=None) for k in micro_klines] == [replace(k, close_time=None) for k in klines]


def test_a_monthly_file_is_cut_to_the_day_and_a_daily_file_is_preferred(tmp_path, klines) -> None:
    neighbour = ["1570665540000,0.1,0.2,0.1,0.2,5,1570665599999,1,1,1,1,0"]  # 2019-10-09 23:59
    after = ["1570838400000,0.1,0.2,0.1,0.2,5,1570838459999,1,1,1,1,0"]  # 2019-10-12 00:00
    monthly = tmp_path / "spot" / "monthly" / "XRPETH-1m-2019-10.csv"
    monthly.parent.mkdir(parents=True)
    monthly.write_text("\n".join(neighbour + CSV.read_text().splitlines() + after) + "\n")
    assert find_kline_file(tmp_path, "XRPETH", "1m", DAY) == monthly
    assert file_klines(tmp_path, "XRPETH", DAY) == klines
    daily = tmp_path / "spot" / "daily" / "XRPETH-1m-2019-10-11.csv"
    daily.parent.mkdir(parents=True)
    daily.write_text("\n".join(CSV.read_text().splitlines()[:10]) + "\n")
    assert find_kline_file(tmp_path, "XRPETH", "1m", DAY) == daily
    assert file_klines(tmp_path, "XRPETH", DAY) == klines[:10]


def test_a_missing_file_names_what_was_looked_for(tmp_path) -> None:
    with pytest.raises(
        KlineFileNotFound, match=r"no 1m kline file for XRPETH on 2019-10-11 under .*XRPETH-1m-2019-10-11\.zip"
    ):
        file_klines(tmp_path, "XRPETH", DAY)
    with pytest.raises(KlineFileNotFound, match="does not exist"):
        file_klines(tmp_path / "nowhere", "XRPETH", DAY)
    with pytest.raises(KlineError, match="not a Binance kline interval"):
        file_klines(tmp_path, "XRPETH", DAY, interval="2m")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("1570752000000,0.1,0.2,0.1,abc,5,1570752059999,1,1,1,1,0", "close 'abc' is not a decimal number"),
        ("1570752000000,0.1,0.2,0.1", "at least 6 fields"),
        ("1570752000000.5,0.1,0.2,0.1,0.2,5", "open time must be a whole number"),
        ("1570752000000,0.1,0.2,0.1,0.2,-5", "volume '-5' is not a finite, non-negative number"),
    ],
)
def test_a_malformed_line_is_refused_with_its_file_and_line(tmp_path, line, reason) -> None:
    path = tmp_path / "XRPETH-1m-2019-10-11.csv"
    path.write_text(CSV.read_text().splitlines()[0] + "\n" + line + "\n")
    with pytest.raises(KlineFormatError, match=rf"XRPETH-1m-2019-10-11\.csv line 2: .*{reason}"):
        read_kline_file(path)


def test_a_broken_zip_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "XRPETH-1m-2019-10-11.zip"
    path.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(KlineFormatError, match="not a readable zip file"):
        read_kline_file(path)


def test_six_field_klines_and_times_in_either_unit() -> None:
    kline = parse_kline([1570752000000, "0.00141342", "0.00141557", "0.00141266", "0.00141418", "1482.0"])
    assert kline.quote_volume is None and kline.trades is None and kline.close_time is None
    assert epoch_time(1_735_689_600_000) == epoch_time(1_735_689_600_000_000) == datetime(2025, 1, 1, tzinfo=UTC)
    with pytest.raises(KlineFormatError, match="must be a decimal string, not float"):
        parse_kline([1570752000000, 0.1, "0.2", "0.1", "0.2", "5"])  # a binary float is never taken


def test_kline_sources_per_exchange(tmp_path) -> None:
    from candlelake.config import load_settings

    settings = load_settings({})
    assert kline_source(settings, "simulator", "rest") is None
    assert kline_source(settings, "coinbase", "files", tmp_path) is None
    assert kline_source(settings, "binance", "files", tmp_path) is not None
    with pytest.raises(KlineError, match="needs the folder"):
        kline_source(settings, "binance", "files")
    with pytest.raises(KlineError, match="one of auto, rest, files"):
        kline_source(settings, "binance", "ftp")


def test_kline_files_come_from_a_folder_a_glob_or_a_file(tmp_path, klines) -> None:
    daily = tmp_path / "data" / "spot" / "daily" / "klines" / "XRPETH" / "1m" / "XRPETH-1m-2019-10-11.zip"
    daily.parent.mkdir(parents=True)
    with zipfile.ZipFile(daily, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("XRPETH-1m-2019-10-11.csv", CSV.read_text())
    locations = (tmp_path, f"{tmp_path}/**/XRPETH-1m-*.zip", str(daily), KLINES, f"{KLINES}/XRPETH-1m-2019-10-1?.csv")
    for location in locations:
        assert FileKlines(location).day_klines("XRPETH", DAY) == klines, location
    assert FileKlines(KLINES).has("XRPETH", DAY) and not FileKlines(KLINES).has("BTCUSDT", DAY)
    with pytest.raises(KlineFileNotFound, match=r"no 1m kline file for XRPETH on 2019-10-11 matching .*\*\.zip"):
        file_klines(f"{tmp_path}/*.zip", "XRPETH", DAY)
    with pytest.raises(KlineFileNotFound, match=r"on 2019-10-12 in .*XRPETH-1m-2019-10-11\.zip"):
        file_klines(daily, "XRPETH", date(2019, 10, 12))  # one file: only its own day


def test_the_setting_gives_the_kline_files_and_auto_prefers_them(tmp_path, klines) -> None:
    from candlelake.config import load_settings

    settings = load_settings({"CANDLELAKE_KLINE_FILES": "tests/fixtures/klines"})  # relative: to the project
    auto = kline_source(settings, "binance", "auto")
    assert auto is not None and auto.files is not None and auto.rest is not None
    assert auto.day_klines("XRPETH", DAY) == ("files", klines)
    only_files = kline_source(settings, "binance", "files")
    assert only_files is not None and only_files.rest is None
    with pytest.raises(KlineFileNotFound):
        only_files.day_klines("BTCUSDT", DAY)
    rest_only = kline_source(settings, "binance", "rest")
    assert rest_only is not None and rest_only.files is None
    given = kline_source(settings, "binance", "auto", tmp_path)  # the form's value wins over the setting
    assert given is not None and given.files is not None and Path(given.files.location) == tmp_path
    none_given = kline_source(load_settings({}), "binance", "auto")
    assert none_given is not None and none_given.files is None


def _rest(settings, answer) -> RestKlines:
    import httpx

    from candlelake.sources.binance_rest import BinanceRest
    from candlelake.sources.http import RestClient

    client = RestClient("http://binance.invalid", transport=httpx.MockTransport(answer), sleep=lambda _: None)
    return RestKlines(settings, "binance", client=BinanceRest("binance", client=client), probe=lambda url: False)


def test_a_rest_api_that_gives_no_answer_is_unreachable_and_asked_once(klines) -> None:
    import httpx

    from candlelake.config import load_settings

    asked: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    settings = load_settings({"CANDLELAKE_BINANCE_REST_URL": "http://binance.invalid"})
    both = Klines(FileKlines(KLINES), _rest(settings, refuse))
    assert both.day_klines("XRPETH", DAY) == ("files", klines)  # a file for the day: REST not asked
    assert asked == []
    with pytest.raises(KlineSourceUnreachable, match=r"binance REST API at http://binance\.invalid cannot be reached"):
        both.day_klines("BTCUSDT", DAY)
    tries = len(asked)
    assert tries == 5  # the client's attempts, then the probe said nothing answers
    with pytest.raises(KlineSourceUnreachable):
        both.day_klines("ETHUSDT", DAY)
    assert len(asked) == tries  # known unreachable: not asked again in this run


def test_a_rest_api_that_answers_badly_is_an_error_not_unreachable() -> None:
    import httpx

    from candlelake.config import load_settings
    from candlelake.sources.http import ExchangeUnavailable

    rest = _rest(load_settings({}), lambda request: httpx.Response(503, text="down for maintenance"))
    rest._probe = lambda url: True  # something answers HTTP there
    with pytest.raises(ExchangeUnavailable, match="HTTP 503"):
        rest.day_klines("XRPETH", DAY)


def test_the_probe_tells_no_answer_from_an_answer() -> None:
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert not answers(f"http://127.0.0.1:{closed}", timeout_s=2)
    assert not answers("http://binance.invalid", timeout_s=2)  # no such host (.invalid never resolves)

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert answers(f"http://127.0.0.1:{server.server_port}")  # a 404 is an answer
    finally:
        server.shutdown()
        server.server_close()


# --- comparison ------------------------------------------------------------------------------------------


def test_tampered_missing_and_extra_candles_are_counted_with_examples(klines) -> None:
    candles = [candle_of(k) for k in klines]
    candles[5] = replace(candles[5], close=candles[5].close + Decimal("0.00000001"))
    candles[7] = replace(candles[7], volume=candles[7].volume + 1, taker_buy_volume=candles[7].taker_buy_volume + 1)
    del candles[9]  # a kline without a candle
    served = [k for i, k in enumerate(klines) if i != 11]  # a candle the exchange lacks, inside its span
    beyond = replace(candles[-1], open_time=DAY_START + timedelta(days=1))  # after the source's last kline
    result = compare("binance", "XRPETH", DAY, "files", [*candles, beyond], served)
    assert (result.klines, result.candles) == (1439, 1440)
    assert (result.matched, result.mismatched, result.missing_candles, result.missing_klines) == (1436, 2, 1, 1)
    assert result.uncovered == 1
    assert result.match_rate == pytest.approx(1436 / 1439)
    assert result.mismatch_rate == pytest.approx(4 / 1440)
    assert result.examples[0] == {
        "open_time": "2019-10-11T00:05:00Z",
        "field": "close",
        "ours": str(klines[5].close + Decimal("0.00000001")),
        "theirs": str(klines[5].close),
    }
    assert [(e["open_time"][11:16], e["field"]) for e in result.examples] == [
        ("00:05", "close"),
        ("00:07", "volume"),
        ("00:07", "taker_buy_volume"),
        ("00:09", "candle"),
        ("00:11", "kline"),
    ]


def test_examples_stop_at_ten(klines) -> None:
    candles = [replace(candle_of(k), high=k.high + 1) for k in klines]
    result = compare("binance", "XRPETH", DAY, "files", candles, klines)
    assert result.mismatched == 1440 and len(result.examples) == MAX_EXAMPLES


def test_quote_volumes_match_within_the_kline_s_printed_digits(klines) -> None:
    k = replace(klines[0], quote_volume=Decimal("2.09550564"))
    exact = candle_of(k)
    finer = replace(exact, quote_volume=Decimal("2.095505643"))  # ours has a digit more: theirs is it cut off
    off = replace(exact, quote_volume=Decimal("2.09550565"))
    assert compare("b", "S", DAY, "files", [finer], [k]).matched == 1
    assert compare("b", "S", DAY, "files", [off], [k]).mismatched == 1
    # Base volumes and prices are exact: a digit more is a mismatch.
    assert compare("b", "S", DAY, "files", [replace(exact, volume=k.volume + Decimal("1e-10"))], [k]).mismatched == 1


def test_fields_a_kline_lacks_and_the_trade_count_are_not_compared(klines) -> None:
    six = replace(klines[0], quote_volume=None, trades=None, taker_buy_volume=None, taker_buy_quote_volume=None)
    candle = replace(candle_of(klines[0]), quote_volume=Decimal(0), taker_buy_volume=Decimal(0))
    assert compare("b", "S", DAY, "files", [candle], [six]).matched == 1
    assert compare("b", "S", DAY, "files", [candle_of(klines[0])], [replace(klines[0], trades=1)]).matched == 1


def test_check_threshold_names_the_markets_over_it() -> None:
    good = ReconcileResult("binance", "BTCUSDT", DAY, "rest", klines=1440, candles=1440, matched=1440)
    bad = ReconcileResult(
        "binance",
        "XRPETH",
        DAY,
        "rest",
        klines=1440,
        candles=1440,
        matched=1438,
        mismatched=2,
        examples=({"open_time": "2019-10-11T00:05:00Z", "field": "close", "ours": "1", "theirs": "2"},),
    )
    skipped = ReconcileResult("simulator", "*", DAY, "rest", note="no kline source for exchange simulator")
    check_threshold([good, skipped], 0.0)
    check_threshold([good, bad], 0.002)  # 2 of 1440 = 0.14%
    with pytest.raises(ReconcileFailed) as raised:
        check_threshold([good, bad, skipped], 0.001)
    message = str(raised.value)
    assert "binance XRPETH 2019-10-11: 0.14%" in message and "00:05:00Z close: ours 1, theirs 2" in message
    assert "BTCUSDT" not in message and "simulator" not in message


def test_rates_without_klines() -> None:
    assert ReconcileResult("b", "S", DAY, "rest").match_rate == 1.0
    nothing_there = ReconcileResult("b", "S", DAY, "rest", candles=3, missing_klines=3)
    assert nothing_there.match_rate == 0.0 and nothing_there.mismatch_rate == 1.0


def test_results_survive_an_xcom_round_trip(klines) -> None:
    candles = [candle_of(k) for k in klines[:3]]
    candles[1] = replace(candles[1], close=candles[1].close + 1)
    result = replace(compare("binance", "XRPETH", DAY, "rest", candles, klines[:4]), reconcile_id=7)
    data = json.loads(json.dumps(result.as_dict()))
    assert data["trade_date"] == "2019-10-11" and data["match_rate"] == 0.5 and data["mismatch_rate"] == 0.5
    assert ReconcileResult.from_dict(data) == result
    assert result.text() == (
        "binance XRPETH 2019-10-11 (rest): 2 of 4 covered klines matched (50.00%), 1 mismatched, 1 without a candle, "
        "0 candles without a kline"
    )
    skipped = ReconcileResult("simulator", "*", DAY, "rest", note="no kline source for exchange simulator")
    assert ReconcileResult.from_dict(json.loads(json.dumps(skipped.as_dict()))) == skipped
    assert skipped.text() == "simulator * 2019-10-11: no kline source for exchange simulator"
