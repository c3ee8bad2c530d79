"""The learned detector and its evaluation on real Binance XRP/ETH 1m klines with injected pumps and dumps.

Training day: 2019-10-11 (clean). Held-out span: 2019-10-12 and the 11 h of 2019-10-13, with twelve events
(2 or 3 % up and back, or down and back, over 3 + 3 minutes, volume five times the hour's mean) at seeded
minutes. Both detectors get the same budget, 5 alerts per market-day, calibrated on the training day.
The floors below are what the evaluation must keep; docs/analytics.md has the figures they come from.
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from pathlib import Path

import pytest

from candlelake.analytics import detector
from candlelake.analytics.evaluation import evaluate, threshold_at_budget
from candlelake.analytics.features import MINUTE_US, Bar, Features, features
from candlelake.analytics.injection import Event, inject, spaced_events
from candlelake.analytics.rules import Rules
from candlelake.sources.klines import read_kline_file
from candlelake.util import to_us

pytestmark = pytest.mark.unit

KLINES = Path(__file__).resolve().parents[1] / "fixtures" / "klines"
DAYS = ("2019-10-11", "2019-10-12", "2019-10-13")
BUDGET = 5.0


@pytest.fixture(scope="module")
def bars() -> list[Bar]:
    klines = [k for day in DAYS for k in read_kline_file(KLINES / f"XRPETH-1m-{day}.csv")]
    return [Bar(to_us(k.open_time), k.close, k.volume, k.trades) for k in klines]


@pytest.fixture(scope="module")
def split(bars: list[Bar]) -> dict:
    cut = bars[1440].open_time_us  # 2019-10-12 00:00
    events = spaced_events(bars[1440:], 12, (0.02, 0.03), seed=7)
    clean = list(features(bars))
    injected = list(features(inject(bars, events)))
    return {
        "train": [f for f in clean if f.open_time_us < cut],
        "clean_held_out": [f for f in clean if f.open_time_us >= cut],
        "held_out": [f for f in injected if f.open_time_us >= cut],
        "events": events,
    }


def test_injection_bends_only_the_event_minutes_and_the_peak_is_the_asked_size(bars) -> None:
    event = spaced_events(bars, 1, (0.03,), seed=3)[0]
    out = inject(bars, [event])
    changed = [i for i, (a, b) in enumerate(zip(bars, out, strict=True)) if a != b]
    first = next(i for i, b in enumerate(bars) if b.open_time_us == event.start_us)
    assert changed and set(changed) <= set(range(first, first + 2 * event.minutes))
    peak = first + event.minutes - 1
    assert out[peak].close / bars[peak].close == pytest.approx(Decimal("1.03"), abs=Decimal("1e-5"))
    # The way up carries the volume, the way back does not; the minute after the event is the real one.
    assert out[first].volume > bars[first].volume
    assert out[first + event.minutes].volume == bars[first + event.minutes].volume
    assert out[first + 2 * event.minutes] == bars[first + 2 * event.minutes]


def test_events_are_an_hour_apart_or_more_and_alternate(bars) -> None:
    events = spaced_events(bars, 12, (0.02, 0.03), seed=7)
    starts = [e.start_us for e in events]
    assert all(b - a >= 60 * MINUTE_US for a, b in itertools.pairwise(starts))
    assert starts[0] >= bars[0].open_time_us + 60 * MINUTE_US
    assert [e.direction for e in events[:4]] == ["pump", "dump", "pump", "dump"]
    with pytest.raises(ValueError, match="do not fit"):
        spaced_events(bars[:300], 5, (0.02,), seed=1)


def test_threshold_at_budget_lets_exactly_the_budget_through() -> None:
    scores = [float(i) for i in range(2880)]  # two days of bars, scores 0..2879
    threshold = threshold_at_budget(scores, alerts_per_day=5)
    assert sum(1 for s in scores if s >= threshold) == 10
    assert threshold_at_budget([None, 1.0, None], alerts_per_day=0) > 1.0


def _feature(minute: int) -> Features:
    return Features(minute * MINUTE_US, Decimal(1), None, None, None, None, None, None, None, None, None)


def test_evaluation_counts_events_found_their_delay_and_false_alerts_per_day() -> None:
    bars = [_feature(m) for m in range(1440)]
    fire_at = {100: 9.0, 103: 9.0, 700: 9.0, 1000: 9.0}  # events at 100 and 500; 700 and 1000 are false

    def score(series):
        return [fire_at.get(b.open_time_us // MINUTE_US, 0.0) for b in series]

    events = [Event(98 * MINUTE_US, "pump", 0.02), Event(500 * MINUTE_US, "dump", 0.02)]
    result = evaluate("fixed", score, [bars], [(bars, events)], alerts_per_day=4)
    assert (result.events, result.found, result.delays_minutes) == (2, 1, (2,))
    assert result.recall == 0.5
    assert result.false_alerts_per_day == 2.0


def test_the_forest_finds_injected_pumps_and_dumps_at_the_alert_budget_where_the_rules_do_not(split) -> None:
    model = detector.fit(split["train"], alerts_per_day=BUDGET)
    held_out = [(split["held_out"], split["events"])]
    forest = evaluate("forest", lambda b: detector.scores(model, b), [split["train"]], held_out, alerts_per_day=BUDGET)
    rules = Rules()
    by_rules = evaluate(
        "rules", lambda b: [rules.score("", "", f) for f in b], [split["train"]], held_out, alerts_per_day=BUDGET
    )
    # Measured: the forest finds 11 or 12 of the 12, in the event's first minute or the next; the rules
    # none at this budget (XRP/ETH's volume is so heavy-tailed that its 5th largest clean score is 31 sigma).
    assert forest.recall >= 0.75, forest.as_dict()
    assert forest.median_delay_minutes is not None and forest.median_delay_minutes <= 1
    assert forest.false_alerts_per_day <= 2 * BUDGET
    assert forest.beats(by_rules), (forest.as_dict(), by_rules.as_dict())


def test_on_clean_held_out_days_the_forest_stays_near_its_budget(split) -> None:
    model = detector.fit(split["train"], alerts_per_day=BUDGET)
    scored = [s for s in detector.scores(model, split["clean_held_out"]) if s is not None]
    per_day = sum(1 for s in scored if s > 0) / (len(split["clean_held_out"]) / 1440)
    assert per_day <= 2 * BUDGET


def test_a_learned_anomaly_says_what_kind_and_why(split) -> None:
    model = detector.Detector(detector.fit(split["train"], alerts_per_day=BUDGET))
    event = split["events"][0]  # a pump
    during = [f for f in split["held_out"] if event.start_us <= f.open_time_us < event.start_us + 3 * MINUTE_US]
    fired = [(f, a) for f in during if (a := model.check("binance", "XRPETH", f)) is not None]
    assert fired, "the first event's way up fired nothing"
    bar, anomaly = fired[0]
    assert anomaly.detector == "isolation_forest" and anomaly.open_time_us == bar.open_time_us
    assert anomaly.kind in ("pump", "price_move") and anomaly.score > 0
    assert anomaly.features["return_z"] == bar.return_z


def test_a_bar_without_the_inputs_is_not_scored(split) -> None:
    model = detector.fit(split["train"], alerts_per_day=BUDGET)
    assert detector.vector(_feature(5)) is None
    assert detector.scores(model, [_feature(5)]) == [None]
    with pytest.raises(ValueError, match="too few"):
        detector.fit(split["train"][:100])
