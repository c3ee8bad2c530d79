"""Training time of both models on N days of 1m candles for M markets, stage by stage.

    .venv/bin/python bench/training_time.py [--days 365] [--markets 10]

The candles are a seeded random walk with noisy volume and trade counts, with the same shape as curated
candles. The timed stages are what a `train_models` task runs (candlelake.analytics.training): the
features of every bar, the detector (fit, then judged with injected events against the rules), and the
trend classifier (fit, then judged against its baselines). MLflow logging is left out; it takes seconds
whatever the size. Writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from candlelake.analytics import training  # noqa: E402
from candlelake.analytics.features import MINUTE_US, Bar, features  # noqa: E402


def history(days: int, markets: int, seed: int = 3) -> dict[str, list[Bar]]:
    rng = random.Random(seed)
    out = {}
    for m in range(markets):
        price, bars = rng.uniform(1, 1000), []
        for i in range(days * 1440):
            price *= 1 + rng.gauss(0, 0.001)
            bars.append(
                Bar(i * MINUTE_US, Decimal(f"{price:.6f}"), Decimal(f"{abs(rng.gauss(10, 3)):.4f}"), rng.randint(5, 40))
            )
        out[f"bench:M{m:02d}"] = bars
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--markets", type=int, default=10)
    args = parser.parse_args()
    data = history(args.days, args.markets)
    bars = sum(len(b) for b in data.values())
    started = time.perf_counter()
    for series in data.values():
        for _ in features(series):
            pass
    features_s = time.perf_counter() - started
    started = time.perf_counter()
    detector = training.train_detector(data)
    detector_s = time.perf_counter() - started
    started = time.perf_counter()
    trend = training.train_trend(data)
    trend_s = time.perf_counter() - started
    result = {
        "days": args.days,
        "markets": args.markets,
        "bars": bars,
        "features_s": features_s,
        "detector_s": detector_s,
        "trend_s": trend_s,
        "detector_recall": detector.challenger.recall,
        "trend_balanced_accuracy": trend.challenger.balanced_accuracy,
    }
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = ROOT / "bench" / "results" / f"training_time-{stamp}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"\n{args.days} days x {args.markets} markets = {bars:,} bars\n")
    print("| features alone s | detector (features, fit, judge) s | trend classifier (features, fit, judge) s |")
    print("|---:|---:|---:|")
    print(f"| {features_s:.0f} | {detector_s:.0f} | {trend_s:.0f} |")
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
