from decimal import Decimal

import pytest

from candlelake.sources.simulator import Simulator
from candlelake.trade import Trade

pytestmark = pytest.mark.unit


def test_same_seed_gives_the_same_trades():
    a = Simulator(["BTCUSDT", "ETHUSDT"], rate=100, seed=7, start_time_us=1_000_000).take(200)
    b = Simulator(["BTCUSDT", "ETHUSDT"], rate=100, seed=7, start_time_us=1_000_000).take(200)
    assert [t.to_json_bytes() for t in a] == [t.to_json_bytes() for t in b]
    c = Simulator(["BTCUSDT", "ETHUSDT"], rate=100, seed=8, start_time_us=1_000_000).take(200)
    assert [t.to_json_bytes() for t in a] != [t.to_json_bytes() for t in c]


def test_trade_ids_are_contiguous_per_symbol_and_times_increase():
    trades = Simulator(["BTCUSDT", "ETHUSDT", "SOLUSDT"], rate=50, seed=1, first_trade_id=500).take(3000)
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        ids = [t.trade_id for t in trades if t.symbol == symbol]
        assert ids == list(range(500, 500 + len(ids)))
        assert len(ids) > 700  # spread over the symbols
    times = [t.trade_time_us for t in trades]
    assert times == sorted(times)


def test_arrival_rate_is_poisson_with_the_configured_mean():
    trades = Simulator(["BTCUSDT"], rate=200, seed=3).take(20_000)
    span_s = (trades[-1].trade_time_us - trades[0].trade_time_us) / 1e6
    assert 20_000 / span_s == pytest.approx(200, rel=0.05)


def test_prices_stay_positive_on_the_tick_and_sizes_on_the_lot():
    trades = Simulator(["DOGEUSDT", "BTCUSDT"], rate=10, seed=5, volatility=0.01).take(5000)
    for t in trades:
        assert t.price > 0 and t.qty > 0
        assert t.qty == t.qty.quantize(Decimal("0.00001"))
    btc = {t.price for t in trades if t.symbol == "BTCUSDT"}
    assert len(btc) > 100  # it walks


def test_wire_format_round_trips_exact_decimals():
    t = Trade(
        "binance",
        "XRPETH",
        13519807,
        Decimal("0.00141342"),
        Decimal("23.00000000"),
        1570752011620000,
        True,
        1570752011700000,
        "replay",
    )
    wire = t.to_wire()
    assert wire["price"] == "0.00141342" and wire["qty"] == "23.00000000"
    assert Trade.from_wire(wire) == t
    tiny = Trade("x", "Y", 1, Decimal("1E-8"), Decimal("5E+3"), 0, False, 0, "s").to_wire()
    assert tiny["price"] == "0.00000001" and tiny["qty"] == "5000"


def test_bad_rate_is_refused_with_a_message():
    with pytest.raises(ValueError, match="positive number of trades per second"):
        Simulator(["BTCUSDT"], rate=0)
