"""Latency from a trade's production to its live candle in PostgreSQL, at a steady trade rate.

    .venv/bin/python bench/stream_latency.py [--rate 1000] [--seconds 60] [--warmup 30]

Runs against the platform `candlelake up` started (the streaming job with its configured trigger,
CANDLELAKE_TRIGGER_INTERVAL). Produces trades for one market of a bench-only exchange at `--rate` per
second, paced in real time, while another thread polls that market's newest candle every 20 ms: a
trade counts as visible when the candle's last_trade_id reaches its id. Latency = first poll that sees
it - the moment it was handed to the Kafka client (so it includes the producer's linger, the broker,
the micro-batch trigger, Spark and the upsert; the poll adds at most 20 ms). Prints p50/p90/p99/max
and writes JSON to bench/results/. The bench market's rows are deleted at the end. Trades of the first
`--warmup` seconds are produced at the same rate and not counted: a freshly started JVM compiles Spark's
hot paths during its first micro-batches (seconds each), and a running platform is past that.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg2
from running_stream import stream_settings_record

from candlelake.config import load_settings
from candlelake.ingest.counters import Counters
from candlelake.ingest.kafka_sinks import KafkaTradeSink
from candlelake.sources.simulator import Simulator

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds, after the warm-up")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds produced first and not counted")
    args = parser.parse_args()
    settings = load_settings()
    exchange = f"bench{uuid.uuid4().hex[:6]}"
    sim = Simulator(["LATUSDT"], rate=args.rate, seed=1, exchange=exchange, first_trade_id=1)
    sent_at: dict[int, float] = {}
    seen_at: dict[int, float] = {}
    done = threading.Event()

    def poll() -> None:
        conn = psycopg2.connect(settings.pg_dsn())
        conn.autocommit = True
        highest = 0
        with conn.cursor() as cur:
            while not done.is_set():
                cur.execute("SELECT max(last_trade_id) FROM candles WHERE exchange = %s", (exchange,))
                value = cur.fetchone()[0]
                now = time.monotonic()
                if value and value > highest:
                    for trade_id in range(highest + 1, value + 1):
                        seen_at[trade_id] = now
                    highest = value
                time.sleep(0.02)
        conn.close()

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    counters = Counters()
    sink = KafkaTradeSink(settings, counters, client_id="bench-latency")
    warmup = int(args.rate * args.warmup)
    total = warmup + int(args.rate * args.seconds)
    started = time.monotonic()
    for i in range(total):
        due = started + i / args.rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        stamp = time.time_ns() // 1000
        trade = sim.next_trade(stamp, stamp)
        sent_at[trade.trade_id] = time.monotonic()
        sink.send(trade)
    sink.flush()
    deadline = time.monotonic() + 60
    while len(seen_at) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    done.set()
    poller.join()
    sink.close()
    counted = [i for i in sent_at if i > warmup]  # trade ids start at 1
    latencies = [seen_at[i] - sent_at[i] for i in counted if i in seen_at]
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM candles WHERE exchange = %s", (exchange,))
    conn.close()
    if not latencies:
        print("no trade became visible", file=sys.stderr)
        return 1
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rate": args.rate,
        "seconds": args.seconds,
        "warmup_seconds": args.warmup,
        "trades": len(counted),
        "visible": len(latencies),
        **stream_settings_record(settings),
        "p50_s": round(statistics.median(latencies), 3),
        "p90_s": round(percentile(latencies, 0.90), 3),
        "p99_s": round(percentile(latencies, 0.99), 3),
        "max_s": round(max(latencies), 3),
    }
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"stream_latency-{result['when']}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
