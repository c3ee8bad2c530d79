"""A lake as the stream and compaction leave it, built from real XRP/ETH trades for the lake's readers.

Each UTC day's trades go into four bronze batches (0-3) with batch records; batch 2 is replayed whole
inside batch 3 (the same trades, ingested a minute later, source "replay"); batch 4 has a record but
Spark never committed it, and a file of a crashed batch (9) has no record: both hold a made-up trade at
price 999 that no reader may see. The first day is compacted (a curated file and its manifest covering
batches 0-3) while its bronze files stay, as they do until the next clean-up.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from candlelake.config import Settings
from candlelake.lake import catalog
from candlelake.trade import Trade
from candlelake.util import from_us

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "binance-spot-xrpeth-2019-10"
SYMBOL = "XRPETH"
GHOST_PRICE = Decimal("999")
DEC = pa.decimal128(28, 10)
TS = pa.timestamp("us", tz="UTC")


def real_trades(exchange: str) -> list[Trade]:
    with gzip.open(FIXTURE / "aggtrades.json.gz", "rt") as f:
        raw = [row["info"] for row in json.load(f)]
    return [
        Trade(exchange, SYMBOL, r["a"], Decimal(r["p"]), Decimal(r["q"]), r["T"] * 1000, r["m"], r["T"] * 1000, "rest")
        for r in raw
    ]


def arrow(trades: list[Trade], ingest_delay_us: int = 0, source: str | None = None) -> pa.Table:
    """Trades as the stream writes them: no exchange column (it is the partition's), Kafka metadata beside."""
    return pa.table(
        {
            "symbol": pa.array([t.symbol for t in trades]),
            "trade_id": pa.array([t.trade_id for t in trades], pa.int64()),
            "price": pc.cast(pa.array([format(t.price, "f") for t in trades]), DEC),
            "qty": pc.cast(pa.array([format(t.qty, "f") for t in trades]), DEC),
            "trade_time": pa.array([t.trade_time_us for t in trades], pa.int64()).cast(TS),
            "is_buyer_maker": pa.array([t.is_buyer_maker for t in trades]),
            "ingest_time": pa.array([(t.ingest_time_us or 0) + ingest_delay_us for t in trades], pa.int64()).cast(TS),
            "source": pa.array([source or t.source for t in trades]),
            "kafka_offset": pa.array(range(len(trades)), pa.int64()),
        }
    )


def day_of(trade: Trade) -> date:
    return from_us(trade.trade_time_us).date()


def lake_settings(settings: Settings, root: Path) -> Settings:
    return dataclasses.replace(
        settings, lake_dir=root / "lake", curated_dir=root / "curated", checkpoint_dir=root / "checkpoints"
    )


def build_lake(settings: Settings, trades: list[Trade]) -> None:
    """Lay `trades` (one exchange) out under settings' lake, curated and checkpoint folders (see above)."""
    exchange = trades[0].exchange
    commits = catalog.lake_checkpoint(settings) / "commits"
    commits.mkdir(parents=True, exist_ok=True)
    for batch in range(4):
        (commits / str(batch)).write_text("v1\n{}\n")
    days = sorted({day_of(t) for t in trades})
    for day in days:
        todays = [t for t in trades if day_of(t) == day]
        folder = catalog.partition_dir(settings.lake_dir, exchange, day)
        folder.mkdir(parents=True)
        quarter = len(todays) // 4
        batches = [todays[:quarter], todays[quarter : 2 * quarter], todays[2 * quarter : 3 * quarter]]
        batches.append(todays[3 * quarter :])
        for batch_id, part in enumerate(batches):
            path = folder / f"batch-{batch_id}-0.parquet"
            pq.write_table(arrow(part), path)
            files = [path]
            if batch_id == 3:  # the replay of batch 2: the same trades, ingested again a minute later
                again = folder / f"batch-{batch_id}-1.parquet"
                pq.write_table(arrow(batches[2], ingest_delay_us=60_000_000, source="replay"), again)
                files.append(again)
            catalog.write_batch_record(folder, batch_id, files)
        ghost = dataclasses.replace(todays[0], trade_id=10**12, price=GHOST_PRICE)
        pq.write_table(arrow([ghost]), folder / "batch-4-0.parquet")
        catalog.write_batch_record(folder, 4, [folder / "batch-4-0.parquet"])  # recorded, never committed
        pq.write_table(arrow([ghost]), folder / "batch-9-0.parquet")  # a crashed batch's file, no record
    first = catalog.partition_dir(settings.curated_dir, exchange, days[0])
    first.mkdir(parents=True)
    curated = sorted({t.trade_id: t for t in trades if day_of(t) == days[0]}.values(), key=lambda t: t.trade_id)
    pq.write_table(arrow(curated).drop(["kafka_offset"]), first / "part-t0-0.parquet")
    entry = catalog.parquet_entry(first / "part-t0-0.parquet")
    manifest = catalog.Manifest(
        exchange, days[0].isoformat(), (entry,), entry.rows, entry.bytes, "-", 3, "t0", "test", "-", 0, 0, 0, 0
    )
    catalog.write_manifest(first, manifest)
