"""Price rules, the live scorer's books and the alert record, on real XRP/ETH klines where candles matter."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from candlelake.alerts.delivery import Webhook, WebhookSender
from candlelake.alerts.price_rules import PriceRule, PriceWatch, crossed, parse_level, parse_market
from candlelake.alerts.record import from_anomaly, from_crossing
from candlelake.alerts.scoring import LiveScorer
from candlelake.alerts.store import ClosedCandle
from candlelake.analytics.features import MINUTE_US, Bar, features
from candlelake.analytics.rules import Rules, Thresholds
from candlelake.sources.klines import read_kline_file
from candlelake.util import to_us
from tests.fakes.webhook import FakeWebhook
from tests.support.features import assert_same_features

pytestmark = pytest.mark.unit

KLINES = Path(__file__).resolve().parents[1] / "fixtures" / "klines"


@pytest.fixture(scope="module")
def candles() -> list[ClosedCandle]:
    klines = read_kline_file(KLINES / "XRPETH-1m-2019-10-11.csv")
    return [
        ClosedCandle("binance", "XRPETH", to_us(k.open_time), k.close, k.volume, k.trades or 0, to_us(k.open_time))
        for k in klines
    ]


ABOVE = PriceRule(1, "binance", "BTCUSDT", "above", Decimal("100000"))
BELOW = PriceRule(2, "binance", "BTCUSDT", "below", Decimal("90000.5"))


@pytest.mark.parametrize(
    ("rule", "previous", "price", "fires"),
    [
        (ABOVE, "99999.99", "100000", True),  # reaching the level is crossing it
        (ABOVE, "99999.99", "100000.01", True),
        (ABOVE, "100000", "100001", False),  # already beyond: no new crossing
        (ABOVE, "100001", "99999", False),  # the other way
        (BELOW, "90000.51", "90000.5", True),
        (BELOW, "90000.5", "90000.4", False),
        (BELOW, "89000", "91000", False),
    ],
)
def test_a_rule_fires_when_the_price_crosses_its_level_exactly(rule, previous, price, fires) -> None:
    assert crossed(rule, Decimal(previous), Decimal(price)) is fires


def test_the_first_price_arms_the_rules_and_each_crossing_fires_once() -> None:
    watch = PriceWatch([ABOVE, BELOW])
    assert watch.observe("binance", "BTCUSDT", Decimal("100500"), 1) == []  # beyond already: armed, silent
    assert watch.observe("binance", "BTCUSDT", Decimal("99000"), 2) == []
    [crossing] = watch.observe("binance", "BTCUSDT", Decimal("100000"), 3)
    assert (crossing.rule.id, crossing.price, crossing.at_us) == (1, Decimal("100000"), 3)
    assert watch.observe("binance", "BTCUSDT", Decimal("100000"), 4) == []  # the same price again
    assert [c.rule.id for c in watch.observe("binance", "BTCUSDT", Decimal("90000"), 5)] == [2]
    assert watch.observe("binance", "ETHUSDT", Decimal("1"), 6) == []  # no rules for it
    assert watch.markets == ["binance:BTCUSDT"]


@pytest.mark.parametrize(
    ("text", "message"),
    [("BTCUSDT", "exchange:SYMBOL"), (":BTC", "exchange:SYMBOL"), ("binance:", "exchange:SYMBOL")],
)
def test_a_bad_market_says_how_to_write_one(text, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_market(text)


@pytest.mark.parametrize(
    ("text", "message"), [("abc", "not a number"), ("0", "above zero"), ("-1", "above zero"), ("NaN", "above zero")]
)
def test_a_bad_level_says_what_is_wrong(text, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_level(text)
    assert parse_level(" 0.0000123 ") == Decimal("0.0000123")
    assert parse_market(" Binance:btcusdt ") == ("binance", "BTCUSDT")


def test_the_live_books_compute_what_training_computes_when_quiet_minutes_are_watched(candles) -> None:
    traded = [c for c in candles if c.trades > 0]  # the stream writes no candle for a quiet minute
    scorer = LiveScorer(Rules(), covered=lambda _m, _s, _e: True)
    live = [s.features for c in traded if (s := scorer.push(c)) is not None]
    # Training's bars: every minute, the quiet ones with the close carried, as the nightly batch writes them.
    batch = {f.open_time_us: f for f in features(Bar(c.open_time_us, c.close, c.volume, c.trades) for c in candles)}
    assert len(live) == len(traded) and len(traded) < len(candles)
    assert_same_features(live, [batch[f.open_time_us] for f in live])
    assert sum(1 for f in live if f.return_z is not None) > 500


def test_unwatched_minutes_leave_the_features_unknown_instead_of_quiet(candles) -> None:
    traded = [c for c in candles if c.trades > 0]
    scorer = LiveScorer(Rules(), covered=lambda _m, _s, _e: False)
    live = [s.features for c in traded if (s := scorer.push(c)) is not None]
    gap_free = [f for f, c in zip(live, traded, strict=True) if f.return_1m is not None]
    # A return is known only where the minute before had a candle of its own.
    assert all(
        traded[i].open_time_us - traded[i - 1].open_time_us == MINUTE_US
        for i, f in enumerate(live)
        if f.return_1m is not None and i
    )
    assert len(gap_free) < len(live)


def test_a_candle_scored_before_is_not_scored_again_and_warm_up_raises_nothing(candles) -> None:
    scorer = LiveScorer(Rules(Thresholds(return_z=0.5, volume_z=0.5)), covered=lambda _m, _s, _e: True)
    warmed = [scorer.push(c, score=False) for c in candles[:200]]
    assert all(s is not None and s.anomalies == [] for s in warmed)
    assert scorer.push(candles[150]) is None  # a re-read after a restart
    fired = [s for c in candles[200:400] if (s := scorer.push(c)) is not None and s.anomalies]
    assert fired and all(a.detector == "rules" for s in fired for a in s.anomalies)
    assert scorer.last_scored_us("binance:XRPETH") == candles[399].open_time_us


def test_an_alert_record_carries_exact_prices_and_times_as_text(candles) -> None:
    scorer = LiveScorer(Rules(Thresholds(return_z=0.5, volume_z=0.5)), covered=lambda _m, _s, _e: True)
    anomaly = next(a for c in candles if (s := scorer.push(c)) is not None for a in s.anomalies)
    record = from_anomaly(anomaly, "3", closed_at_us=anomaly.open_time_us + 3 * MINUTE_US)
    body = json.loads(record.to_json_bytes(17))
    assert body["id"] == 17 and body["type"] == "anomaly" and body["model_version"] == "3"
    assert body["at"].endswith("Z") and body["features"]["close"] == anomaly.features["close"]
    assert "XRPETH" in body["headline"]
    watch = PriceWatch([ABOVE])
    watch.observe("binance", "BTCUSDT", Decimal("99999"), 0)
    [crossing] = watch.observe("binance", "BTCUSDT", Decimal("100000.00000001"), 60_000_000)
    body = json.loads(from_crossing(crossing).to_json_bytes())
    assert (body["price"], body["kind"], body["detector"]) == ("100000.00000001", "above", "rule:1")
    assert body["features"]["level"] == "100000" and body["at"] == "1970-01-01T00:01:00Z"


def test_the_webhook_sender_posts_off_the_scoring_thread_and_drains_on_close() -> None:
    """A receiver that does not answer holds up nobody: `submit` returns with nothing posted yet; once
    it answers, every alert is posted in order, a failed one retried, and each outcome recorded."""
    watch = PriceWatch([ABOVE])
    watch.observe("binance", "BTCUSDT", Decimal("99999"), 1)
    [crossing] = watch.observe("binance", "BTCUSDT", Decimal("100001"), 2)
    alert = from_crossing(crossing)
    outcomes: list[tuple[int, str]] = []
    with FakeWebhook() as hook:
        hook.hold()
        hook.fail_next(1)
        sender = WebhookSender(Webhook(hook.url, backoff_s=0.01), lambda i, s: outcomes.append((i, s)))
        sender.submit([(1, alert), (2, alert), (3, alert)])
        assert hook.received == [] and outcomes == []  # submit did not wait for the receiver
        hook.released.set()
        sender.close()
    assert outcomes == [(1, "delivered"), (2, "delivered"), (3, "delivered")]
    assert [b["id"] for b in hook.received] == [1, 2, 3]
    assert hook.attempts == 4  # the first POST failed once and was retried
