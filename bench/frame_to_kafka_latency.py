"""Frame-to-Kafka latency: from a fake Binance server sending a WebSocket frame to Kafka acknowledging its trade.

    .venv/bin/python bench/frame_to_kafka_latency.py [--speed 50] [--clients kafka-python confluent]

The real spot capture in tests/fixtures/exchanges (1,910 aggTrades over 91 s) is played by the fake
Binance WebSocket server (tests/fakes) `--speed` times faster (50: about 1,000 frames a second, in the
capture's own bursts), into the producer's own path in this process: BinanceTradeFeed -> Pipeline
(dedupe, gap tracking) -> the Kafka client (acks=all, idempotent, LZ4, linger 20 ms) into a bench-only
topic. Latency of a trade = the client's delivery acknowledgement - the moment the server sent its
frame (both on this process's clock). Needs Kafka (`candlelake up --only kafka`). Writes JSON to
bench/results/ and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from kafka.admin import KafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from candlelake.config import Settings, load_settings  # noqa: E402
from candlelake.ingest.counters import Counters, DeliveryReports  # noqa: E402
from candlelake.ingest.kafka_sinks import make_trade_sink  # noqa: E402
from candlelake.ingest.pipeline import Pipeline  # noqa: E402
from candlelake.sources.binance_ws import BinanceTradeFeed  # noqa: E402
from candlelake.sources.websocket_feed import FeedSettings  # noqa: E402
from candlelake.trade import Trade  # noqa: E402
from tests.fakes.binance_ws import FakeBinanceWs  # noqa: E402
from tests.fakes.recording import BINANCE_SPOT, LiveReplay, Recording  # noqa: E402

SYMBOLS = ["BTCUSDT", "ETHUSDT", "DOTUSDT"]


class NullDeadLetters:
    def send(self, _rejection: object) -> None:
        pass


def run_once(settings: Settings, client: str, speed: float) -> dict[str, object]:
    recording = Recording.load(BINANCE_SPOT)
    replay = LiveReplay(recording, datetime.now(UTC) + timedelta(seconds=2), speed)
    # trade id -> when its frame was due (the server sends each frame at its due time)
    due: dict[tuple[str, int], float] = {}
    for index, frame in enumerate(recording.frames):
        data = frame.payload.get("data", {})
        if data.get("e") == "aggTrade":
            due[(data["s"], data["a"])] = replay.due_at(index).timestamp()
    acked: dict[tuple[str, int], float] = {}
    counters = Counters()
    reports = DeliveryReports(counters, keep_failures=True)

    def delivered(trade: Trade) -> None:
        acked[(trade.symbol, trade.trade_id)] = time.time()
        reports.delivered(trade)

    sink = make_trade_sink(dataclasses.replace(settings, kafka_client=client), delivered, reports.failed)
    pipeline = Pipeline(counters, sink, NullDeadLetters(), deliveries=reports, track_gaps=True, source="bench")
    # A running producer has long had its connection, metadata and idempotent producer id; a new one
    # spends up to a second getting them. Measure the steady state: one trade through first.
    sink.send(Trade("binance", "WARMUP", 0, Decimal(1), Decimal(1), time.time_ns() // 1000, True, 0, "bench"))
    sink.flush()
    with FakeBinanceWs(replay, ping_interval_s=None) as ws:
        feed = BinanceTradeFeed(
            "binance", SYMBOLS, base_url=ws.url, settings=FeedSettings(ping_interval_s=None, lifetime_s=None)
        )

        async def play() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(feed.run(pipeline.emit, stop))
            await asyncio.sleep((replay.end - datetime.now(UTC)).total_seconds() + 1)
            stop.set()
            await task

        cpu0 = time.process_time()
        asyncio.run(play())
        cpu = time.process_time() - cpu0
    sink.close()
    latencies_ms = sorted((acked[key] - due[key]) * 1000 for key in acked if key in due)
    q = statistics.quantiles(latencies_ms, n=100)
    span_s = recording.frames[-1].at_s / speed
    return {
        "client": client,
        "frames_per_s": round(len(due) / span_s),
        "trades": len(latencies_ms),
        "missing": len(due) - len(latencies_ms),
        "p50_ms": round(q[49], 2),
        "p90_ms": round(q[89], 2),
        "p99_ms": round(q[98], 2),
        "max_ms": round(latencies_ms[-1], 2),
        "cpu_share": round(cpu / (span_s + 3), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=float, default=50.0)
    parser.add_argument(
        "--clients", nargs="+", default=["kafka-python", "confluent"], choices=["kafka-python", "confluent"]
    )
    args = parser.parse_args()
    base = load_settings()
    topic = f"bench.latency.{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(base, trades_topic=topic)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="bench-admin")
    admin.create_topics([NewTopic(topic, num_partitions=settings.topic_partitions, replication_factor=1)])
    results = []
    try:
        for client in args.clients:
            result = run_once(settings, client, args.speed)
            results.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
    finally:
        admin.delete_topics([topic])
        admin.close()
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = ROOT / "bench" / "results" / f"frame_to_kafka_latency-{stamp}.json"
    record = {"bench": "frame_to_kafka_latency", "at": stamp, "speed": args.speed, "machine": {"cpus": os.cpu_count()}}
    out.write_text(json.dumps({**record, "results": results}, indent=1))
    print(f"\nframe sent by the fake exchange -> trade acknowledged by Kafka (capture at {args.speed:g}x)\n")
    print("| client | frames/s | trades | p50 ms | p90 ms | p99 ms | max ms | CPU share |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['client']} | {r['frames_per_s']} | {r['trades']} | {r['p50_ms']} | {r['p90_ms']} | "
            f"{r['p99_ms']} | {r['max_ms']} | {r['cpu_share']} |"
        )
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
