"""The trade rate the streaming job sustains without its lag growing, on the running platform.

    .venv/bin/python bench/stream_throughput.py --rates 5000 10000 20000 --seconds 120 [--hold 600]

Runs against the platform `candlelake up` started. For each rate in `--rates`, trades of a bench-only
exchange (10 markets, prices and sizes from the seeded simulator) are produced into the `trades`
topic, paced in real time, for `--seconds`; then, with `--hold`, the highest rate whose lag did not
grow (or the last one asked for, with --hold-rate) is held for that many seconds.

Lag of a query = records appended to the topic since the step began - records the query's finished
micro-batches read since then (`stream_progress.num_input_rows`), sampled every 5 s; the step starts
after both queries have caught up. A rate is sustained when the lag's least-squares slope over the
last two thirds of the step is below 2% of the rate and the lag at the end is under 30 s of trades
(a query that keeps up still lags by up to two micro-batches: the lake query's trigger is 10 s, and
under load its batches take longer).

The load generator is librdkafka (confluent-kafka), not the platform's kafka-python producer, so that
on a two-core machine the measurement is of the streaming job, not of a Python Kafka client: it
spends about a tenth of a core at 20,000 trades/s. Messages are exactly the producer's wire format.
Writes JSON to bench/results/ and prints a Markdown table. The bench market's candles are deleted
at the end (its trades stay in the topic and the lake, marked by their exchange name).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from confluent_kafka import Producer
from kafka import KafkaConsumer, TopicPartition
from running_stream import stream_settings_record

from candlelake.config import Settings, load_settings
from candlelake.sources.simulator import Simulator
from candlelake.stream.progress import STREAM_QUERIES

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = [f"TP{n}USDT" for n in range(10)]
BLOCK = 50_000  # distinct (price, qty, side) triples, cycled with fresh trade ids and times
SAMPLE_S = 5.0
TICK_S = 0.02


@dataclass
class Step:
    rate: float
    seconds: float
    produced: int = 0
    samples: list[dict[str, float]] = field(default_factory=list)

    def lag_series(self, query: str) -> list[tuple[float, float]]:
        return [(s["t"], s[f"lag_{query}"]) for s in self.samples]


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, y) points; 0 for fewer than two."""
    if len(points) < 2:
        return 0.0
    mean_t = statistics.fmean(t for t, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    den = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (y - mean_y) for t, y in points) / den if den else 0.0


class Load:
    """Paced trades of the bench exchange in the producer's wire format, through librdkafka."""

    def __init__(self, settings: Settings, exchange: str) -> None:
        self.topic = settings.trades_topic
        self.exchange = exchange
        self.producer = Producer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 20,
                "queue.buffering.max.messages": 1_000_000,
                "client.id": "bench-throughput",
            }
        )
        sim = Simulator(SYMBOLS, rate=1000.0, seed=7, exchange=exchange, first_trade_id=1)
        self.block = [
            (t.symbol, format(t.price, "f"), format(t.qty, "f"), "true" if t.is_buyer_maker else "false")
            for t in sim.take(BLOCK)
        ]
        self.sent = 0

    def send_until(self, total: int) -> None:
        """Produce trades until `total` have been handed to the client; times are now, ids increasing."""
        now_us = time.time_ns() // 1000
        while self.sent < total:
            symbol, price, qty, maker = self.block[self.sent % BLOCK]
            self.sent += 1
            value = (
                f'{{"exchange":"{self.exchange}","symbol":"{symbol}","trade_id":{self.sent},"price":"{price}",'
                f'"qty":"{qty}","trade_time":{now_us},"is_buyer_maker":{maker},"ingest_time":{now_us},'
                f'"source":"bench"}}'
            )
            while True:
                try:
                    self.producer.produce(self.topic, value=value.encode(), key=f"{self.exchange}:{symbol}".encode())
                    break
                except BufferError:  # the local queue is full: let librdkafka send
                    self.producer.poll(0.05)
        self.producer.poll(0)

    def close(self) -> None:
        left = self.producer.flush(30)
        if left:
            print(f"warning: {left} bench messages were not delivered", file=sys.stderr)


class Meter:
    """Topic end offsets and the rows each streaming query has read, both counted since `reset()`."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, client_id="bench-throughput-meter")
        partitions = self.consumer.partitions_for_topic(settings.trades_topic) or set()
        self.partitions = [TopicPartition(settings.trades_topic, p) for p in sorted(partitions)]
        self.conn = psycopg2.connect(settings.pg_dsn())
        self.conn.autocommit = True
        self.since = 0.0
        self.base_end = 0

    def end(self) -> int:
        return sum(self.consumer.end_offsets(self.partitions).values())

    def read_rows(self) -> dict[str, int]:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT query_name, coalesce(sum(num_input_rows), 0) FROM stream_progress "
                "WHERE batch_time >= to_timestamp(%s) AND batch_id >= 0 GROUP BY query_name",
                (self.since,),
            )
            got = dict(cur.fetchall())
        return {q: int(got.get(q, 0)) for q in STREAM_QUERIES}

    def batch_stats(self, since: float) -> dict[str, dict[str, float]]:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT query_name, count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms), "
                "max(duration_ms), avg(num_input_rows) FROM stream_progress "
                "WHERE batch_time >= to_timestamp(%s) AND batch_id >= 0 GROUP BY query_name",
                (since,),
            )
            return {
                q: {"batches": int(n), "p50_ms": float(p50 or 0), "max_ms": float(mx or 0), "rows_avg": float(avg or 0)}
                for q, n, p50, mx, avg in cur.fetchall()
            }

    def reset(self) -> None:
        self.since = time.time()
        self.base_end = self.end()

    def lags(self) -> dict[str, int]:
        appended = self.end() - self.base_end
        read = self.read_rows()
        return {q: appended - read[q] for q in STREAM_QUERIES}

    def wait_caught_up(self, timeout_s: float = 600.0) -> None:
        """Block until both queries have read every record appended before now."""
        target_end = self.end()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.conn.cursor() as cur:
                cur.execute(
                    "SELECT query_name, max(recorded_at) FROM stream_progress WHERE query_name = ANY(%s) "
                    "AND recorded_at > now() - interval '15 seconds' AND num_input_rows = 0 GROUP BY query_name",
                    (list(STREAM_QUERIES),),
                )
                idle = {row[0] for row in cur.fetchall()}
            # Quiet enough: each query finished a batch recently that found less than a second of load.
            with self.conn.cursor() as cur:
                cur.execute(
                    "SELECT query_name, max(num_input_rows) FROM stream_progress WHERE query_name = ANY(%s) "
                    "AND recorded_at > now() - interval '12 seconds' GROUP BY query_name",
                    (list(STREAM_QUERIES),),
                )
                recent = dict(cur.fetchall())
            if all(q in idle or (q in recent and recent[q] < 1000) for q in STREAM_QUERIES):
                return
            time.sleep(2)
        raise SystemExit(f"the streaming job did not catch up with offset {target_end} in {timeout_s:.0f} s")


def run_step(load: Load, meter: Meter, rate: float, seconds: float) -> Step:
    meter.wait_caught_up()
    meter.reset()
    step = Step(rate, seconds)
    started = time.monotonic()
    base = load.sent
    next_sample = started + SAMPLE_S
    while (now := time.monotonic()) < started + seconds:
        load.send_until(base + int(rate * (now - started)))
        if now >= next_sample:
            lags = meter.lags()
            step.samples.append({"t": round(now - started, 1), **{f"lag_{q}": float(v) for q, v in lags.items()}})
            next_sample += SAMPLE_S
            print(f"  {rate:,.0f}/s t={now - started:5.0f}s lag " + " ".join(f"{q}={v:,}" for q, v in lags.items()))
        time.sleep(TICK_S)
    step.produced = load.sent - base
    return step


def verdict(step: Step) -> dict[str, object]:
    tail_from = step.seconds / 3
    out: dict[str, object] = {"rate": step.rate, "seconds": step.seconds, "produced": step.produced}
    sustained = True
    for q in STREAM_QUERIES:
        series = step.lag_series(q)
        tail = [(t, y) for t, y in series if t >= tail_from]
        growth = slope(tail)
        final = series[-1][1] if series else float("nan")
        ok = growth < 0.02 * step.rate and final < 30 * step.rate
        sustained = sustained and ok
        lag_max = max(y for _, y in series)
        out[q] = {
            "lag_slope_per_s": round(growth, 1),
            "lag_final": final,
            "lag_max": lag_max,
            "lag_max_s": round(lag_max / step.rate, 1),
        }
    out["sustained"] = sustained
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[5000, 10000, 20000])
    parser.add_argument("--seconds", type=float, default=120.0, help="length of each step of --rates")
    parser.add_argument("--hold", type=float, default=0.0, help="then hold the best sustained rate this long")
    parser.add_argument("--hold-rate", type=float, help="hold this rate instead of the best sustained one")
    args = parser.parse_args()
    settings = load_settings()
    exchange = f"benchtp{uuid.uuid4().hex[:6]}"
    load = Load(settings, exchange)
    meter = Meter(settings)
    results = []
    try:
        for rate in args.rates:
            step = run_step(load, meter, rate, args.seconds)
            results.append({**verdict(step), "batches": meter.batch_stats(meter.since), "samples": step.samples})
            print(json.dumps({k: v for k, v in results[-1].items() if k != "samples"}))
        if args.hold:
            sustained = [r["rate"] for r in results if r["sustained"]]
            hold_rate = args.hold_rate or (max(sustained) if sustained else min(args.rates))
            step = run_step(load, meter, float(hold_rate), args.hold)
            results.append(
                {**verdict(step), "hold": True, "batches": meter.batch_stats(meter.since), "samples": step.samples}
            )
            print(json.dumps({k: v for k, v in results[-1].items() if k != "samples"}))
    finally:
        load.close()
        with meter.conn.cursor() as cur:
            cur.execute("DELETE FROM candles WHERE exchange = %s", (exchange,))
        meter.conn.close()
        meter.consumer.close()
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count()},
        **stream_settings_record(settings),
        "steps": results,
    }
    out = ROOT / "bench" / "results" / f"stream_throughput-{result['when']}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        "| trades/s | seconds | sustained | candles lag slope /s | lake lag slope /s"
        " | candles / lake lag max s | candles batch p50 ms | lake batch p50 ms |"
    )
    print("|---:|---:|:---:|---:|---:|---:|---:|---:|")
    for r in results:
        b = r["batches"]
        print(
            f"| {r['rate']:,.0f} | {r['seconds']:.0f} | {'yes' if r['sustained'] else 'no'} "
            f"| {r['live_candles']['lag_slope_per_s']:,} | {r['lake_trades']['lag_slope_per_s']:,} "
            f"| {r['live_candles']['lag_max_s']} / {r['lake_trades']['lag_max_s']} "
            f"| {b.get('live_candles', {}).get('p50_ms', 0):.0f} | {b.get('lake_trades', {}).get('p50_ms', 0):.0f} |"
        )
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
