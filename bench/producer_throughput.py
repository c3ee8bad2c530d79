"""Producer throughput into Kafka on replay: kafka-python against confluent-kafka, in the same run.

    .venv/bin/python bench/producer_throughput.py [--trades 1000000] [--clients kafka-python confluent]

Builds a data.binance.vision aggTrades CSV of `--trades` rows from the real XRP/ETH aggTrades in
tests/fixtures (12,477 trades repeated with ids and times shifted on, prices and sizes as recorded),
then replays it through `candlelake.runs.replay.replay` — the command's own path: CSV parsing, the
boundary validation into Trade records, dedupe, JSON, the Kafka client with acks=all, idempotence
and LZ4 — into a bench-only topic (created and deleted here, so the streaming job never sees it).
A run ends when the client has acknowledged every trade (close() flushes). First it replays into a
sink that drops the records, which measures the Python side alone. Needs Kafka (`candlelake up --only
kafka`). Reports trades/s and the process's CPU seconds per 100,000 trades; writes JSON to
bench/results/ and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from kafka.admin import KafkaAdminClient, NewTopic

from candlelake.config import Settings, load_settings
from candlelake.ingest.counters import Counters
from candlelake.ingest.kafka_sinks import KafkaTradeSink
from candlelake.runs.replay import replay
from candlelake.sources.fields import Rejection
from candlelake.sources.recordings import open_recording
from candlelake.trade import Trade

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "fixtures" / "binance-spot-xrpeth-2019-10" / "aggtrades.json.gz"


def build_csv(rows: int, folder: Path) -> Path:
    """`rows` aggTrades in data.binance.vision's spot layout (8 columns, no header)."""
    records = [item["info"] for item in json.loads(gzip.decompress(SOURCE.read_bytes()))]
    span_ids = records[-1]["a"] - records[0]["a"] + 1
    span_ms = records[-1]["T"] - records[0]["T"] + 1
    path = folder / "XRPETH-aggTrades-bench.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        for n in range(rows):
            r = records[n % len(records)]
            lap = n // len(records)
            writer.writerow(
                [r["a"] + lap * span_ids, r["p"], r["q"], r["f"], r["l"], r["T"] + lap * span_ms, r["m"], r["M"]]
            )
    return path


class DropSink:
    """Takes records and does nothing: the cost of everything before the Kafka client."""

    def send(self, item: Trade | Rejection) -> None:
        pass


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_once(settings: Settings, path: Path, client: str | None) -> dict[str, object]:
    recording = open_recording(path)
    counters = Counters()
    started, cpu0 = time.perf_counter(), cpu_s()
    if client is None:
        summary = replay(recording, DropSink(), DropSink())
        delivered = summary.accepted
    else:
        # As `candlelake replay` builds it: successes counted at close where the client allows it.
        sink = KafkaTradeSink(
            dataclasses.replace(settings, kafka_client=client), counters, client_id=f"bench-{client}", per_trade=False
        )
        summary = replay(recording, sink, DropSink())
        sink.close()  # returns when every trade is acknowledged (or failed)
        delivered = counters.produced
    elapsed, cpu = time.perf_counter() - started, cpu_s() - cpu0
    return {
        "client": client or "none (records dropped)",
        "trades": summary.accepted,
        "delivered": delivered,
        "failures": counters.delivery_failures,
        "seconds": round(elapsed, 2),
        "trades_per_s": round(summary.accepted / elapsed),
        "cpu_s_per_100k": round(cpu / summary.accepted * 100_000, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument(
        "--clients", nargs="+", default=["kafka-python", "confluent"], choices=["kafka-python", "confluent"]
    )
    args = parser.parse_args()
    base = load_settings()
    topic = f"bench.producer.{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(base, trades_topic=topic)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="bench-admin")
    admin.create_topics([NewTopic(topic, num_partitions=settings.topic_partitions, replication_factor=1)])
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = build_csv(args.trades, Path(tmp))
            for client in [None, *args.clients]:
                result = run_once(settings, path, client)
                results.append(result)
                print(json.dumps(result), file=sys.stderr, flush=True)
    finally:
        admin.delete_topics([topic])
        admin.close()
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = ROOT / "bench" / "results" / f"producer_throughput-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "bench": "producer_throughput",
                "at": stamp,
                "trades": args.trades,
                "compression": settings.kafka_compression,
                "machine": {"cpus": os.cpu_count()},
                "results": results,
            },
            indent=1,
        )
    )
    compression = settings.kafka_compression
    print(f"\nreplay of {args.trades:,} aggTrades CSV rows into Kafka ({compression}, acks=all, idempotent)\n")
    print("| client | trades/s | seconds | CPU s per 100k trades | delivered |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['client']} | {r['trades_per_s']:,} | {r['seconds']} | {r['cpu_s_per_100k']} | {r['delivered']:,} |"
        )
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
