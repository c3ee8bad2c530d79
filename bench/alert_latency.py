"""Scoring latency, candle close to alert, at 100 markets; and the scorer's memory.

    .venv/bin/python bench/alert_latency.py [--markets 100] [--rounds 10] [--detector]

Real PostgreSQL (`candlelake up --only postgres,kafka`), the platform's scorer (candlelake.alerts.service)
in this process with its real Kafka publisher (a bench-only topic). Each market gets 70 minutes of closed
1m candles, a seeded random walk (the warm-up: the features need an hour). Then, `--rounds` times, one
UPDATE closes the next minute of every market at once, as the stream's watermark does, at a random moment
between two of the scorer's polls (its own loop, CANDLELAKE_SCORER_POLL_S apart), with a pump (5 % up on
30 times the volume) in a tenth of them. Latency of an alert = its `raised_at` - the candle's `updated_at`
when it closed, both PostgreSQL's clock, so it includes the wait for the next poll. Also printed: the
process's CPU time per closing (every market's candle, and the idle polls between), and its resident
memory with every book full and, with `--detector`, a 200-tree Isolation Forest loaded. Writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg2
from kafka.admin import KafkaAdminClient, NewTopic
from psycopg2.extras import execute_values

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from candlelake.alerts.delivery import AlertPublisher  # noqa: E402
from candlelake.alerts.service import ScorerService  # noqa: E402
from candlelake.analytics import detector  # noqa: E402
from candlelake.analytics.features import Bar, features  # noqa: E402
from candlelake.config import load_settings  # noqa: E402

MINUTE = timedelta(minutes=1)
HISTORY = 70


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def walk(rng: random.Random, price: float) -> tuple[Decimal, Decimal, int]:
    price *= 1 + rng.gauss(0, 0.001)
    return Decimal(f"{price:.6f}"), Decimal(f"{abs(rng.gauss(10, 3)):.4f}"), rng.randint(5, 40)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--detector", action="store_true", help="score with an Isolation Forest as well")
    args = parser.parse_args()
    settings = load_settings()
    exchange = f"bench{uuid.uuid4().hex[:6]}"
    topic = f"bench-alerts-{exchange}"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    rng = random.Random(7)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    first = now - (HISTORY + args.rounds) * MINUTE
    symbols = [f"M{i:03d}USDT" for i in range(args.markets)]
    prices = {s: rng.uniform(1, 1000) for s in symbols}
    rows = []
    for minute in range(HISTORY + args.rounds):
        at = first + minute * MINUTE
        state = "closed" if minute < HISTORY else "live"
        for s in symbols:
            close, volume, trades = walk(rng, prices[s])
            prices[s] = float(close)
            if minute >= HISTORY and rng.random() < 0.1:  # a pump in a tenth of the scored candles
                close, volume = (close * Decimal("1.05")).quantize(close), volume * 30
            rows.append((exchange, s, at, at + MINUTE - timedelta(milliseconds=1), close, volume, trades, state))
    conn = psycopg2.connect(settings.pg_dsn())
    with conn, conn.cursor() as cur:
        execute_values(
            cur,
            "INSERT INTO candles (exchange, symbol, open_time, close_time, open, high, low, close, volume, "
            "quote_volume,"
            " trades, taker_buy_volume, taker_buy_quote_volume, state) VALUES %s",
            [(e, s, o, c, p, p, p, p, v, 0, t, 0, 0, st) for e, s, o, c, p, v, t, st in rows],
        )
    forest = None
    if args.detector:
        history, price = [], 100.0
        for i in range(3000):  # the same random walk as the markets', as the forest's training days
            close, volume, trades = walk(rng, price)
            price = float(close)
            history.append(Bar(i * 60_000_000, close, volume, trades))
        forest = detector.fit(list(features(history)), alerts_per_day=5)
    ours = dataclasses.replace(settings, alerts_topic=topic, alert_webhook_url="", scorer_model_refresh_s=1e9)
    service = ScorerService(
        ours,
        publisher=AlertPublisher(ours.kafka_bootstrap, topic),
        load_champion=lambda: (forest, "bench") if forest is not None else None,
    )
    warm_started = time.perf_counter()
    service.poll()  # the warm-up: 70 minutes of every market into the books
    warm_s = time.perf_counter() - warm_started
    stop = threading.Event()
    loop = threading.Thread(target=service.run, args=(stop.is_set,), daemon=True)
    cpu = time.process_time()
    loop.start()
    try:
        for minute in range(HISTORY, HISTORY + args.rounds):
            time.sleep(rng.uniform(0.5, 1.5))  # closings fall anywhere between two polls
            with conn, conn.cursor() as cur:  # the watermark closes every market's minute in one statement
                cur.execute(
                    "UPDATE candles SET state = 'closed', updated_at = now() WHERE exchange = %s AND open_time = %s",
                    (exchange, first + minute * MINUTE),
                )
        time.sleep(3 * settings.scorer_poll_s)
        stop.set()
        loop.join(timeout=30)
        cpu_per_closing = (time.process_time() - cpu) / args.rounds
        memory = rss_mib()
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT extract(epoch FROM raised_at - candle_closed_at), detector FROM alerts WHERE exchange = %s "
                "AND type = 'anomaly' AND at >= %s",
                (exchange, first + HISTORY * MINUTE),
            )
            found = cur.fetchall()
            delays = sorted(float(r[0]) * 1000 for r in found)
            by_detector = {d: sum(1 for _, x in found if x == d) for d in sorted({x for _, x in found})}
    finally:
        service.close()
        with conn, conn.cursor() as cur:
            cur.execute("DELETE FROM alerts WHERE exchange = %s", (exchange,))
            cur.execute("DELETE FROM candles WHERE exchange = %s", (exchange,))
        conn.close()
        admin.delete_topics([topic])
        admin.close()
    if not delays:
        print("no alert was raised: nothing to measure", file=sys.stderr)
        return 1
    quantile = statistics.quantiles(delays, n=100, method="inclusive")
    result = {
        "markets": args.markets,
        "rounds": args.rounds,
        "detector": bool(args.detector),
        "alerts": len(delays),
        "alerts_by_detector": by_detector,
        "p50_ms": quantile[49],
        "p99_ms": quantile[98],
        "max_ms": delays[-1],
        "cpu_ms_per_closing": cpu_per_closing * 1000,
        "warm_up_s": warm_s,
        "rss_mib": memory,
    }
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = ROOT / "bench" / "results" / f"alert_latency-{stamp}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"\ncandle closed -> alert raised, {args.markets} markets, {args.rounds} closings\n")
    print("| detector | alerts | p50 ms | p99 ms | max ms | CPU per closing ms | warm-up s | RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {'rules + forest' if args.detector else 'rules'} | {len(delays)} | {result['p50_ms']:.0f} | "
        f"{result['p99_ms']:.0f} | {result['max_ms']:.0f} | {result['cpu_ms_per_closing']:.0f} | {warm_s:.1f} | "
        f"{memory:.0f} |"
    )
    print(f"\nalerts by detector: {by_detector}; {args.markets * args.rounds} candles scored")
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
