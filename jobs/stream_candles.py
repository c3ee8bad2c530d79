"""Spark Structured Streaming: Kafka `trades` -> Parquet lake (bronze) + live candles in PostgreSQL.

Run with spark-submit (the platform's `stream` part does, with the Kafka connector jars):

    spark-submit --jars <spark-kafka jars> jobs/stream_candles.py

Two queries read the `trades` topic and one the `prices` topic, each with its own checkpoint under
CANDLELAKE_CHECKPOINT_DIR:

`lake_trades` appends every valid trade to `<lake>/trades/exchange=.../trade_date=...` (Parquet, one
    file per partition per micro-batch, named by batch id: see candlelake.stream.parquet_lake, which
    keeps the lake exact for any reader after a crash). Duplicates of (exchange, symbol, trade_id)
    arriving within twice LAKE_DEDUPE_WINDOW of processing time are dropped. The dedupe clock is the
    batch time, not the trade time, so a late trade (old trade_time) is never dropped from the lake:
    the nightly batch needs it to correct the candles. A duplicate arriving later than the window can
    still land; readers of the lake dedupe again on the same key.

`live_candles` (in a session of its own, for its state store: see candles_session) deduplicates with a
    watermark on trade_time (CANDLELAKE_WATERMARK_DELAY), aggregates with
    `candlelake.spark.transforms.candles` in update mode and upserts each micro-batch into `candles` with
    state 'live'. A trade's dedupe key is kept until the watermark passes its trade_time, and from then
    on any copy of it is dropped as late: never counted twice. Update mode emits the complete candle of
    every bucket a batch touched, and the upsert replaces rather than adds, so Spark re-running a batch
    after a crash writes the same rows again. Trades later than the watermark are dropped here (counted
    in stream_progress.rows_dropped_by_watermark) and reach the curated candles through the lake.
    Once the watermark passes a candle's end, no trade can change it any more: recording that batch's
    progress marks it 'closed' (candlelake.stream.progress).

`lake_prices` reads the price points (REST tickers, CoinGecko: prices without trades), drops a point
    seen again within PRICES_DEDUPE_WINDOW, appends them to `<lake>/prices/exchange=.../price_date=...`,
    inserts them into `price_points` and recomputes the sliding-window KPIs of every window they touch
    into `price_kpis` and onto CANDLELAKE_PRICE_KPIS_TOPIC (candlelake.stream.price_kpis).

Every micro-batch of the queries is recorded in `stream_progress` by polling (see
candlelake.stream.progress.ProgressPoller, and there why not with a query listener).
SIGTERM or SIGINT stops both queries and exits 0; a failed query exits 1 so the platform notices.

The measurements behind the constants and the candles session's settings: docs/stream.md.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from types import FrameType

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from candlelake.config import Settings, load_settings
from candlelake.spark import prices, transforms
from candlelake.spark.session import build_session
from candlelake.stream import guard as stream_guard
from candlelake.stream import parquet_lake, price_kpis
from candlelake.stream.postgres_candles import upsert_candles_df
from candlelake.stream.progress import (
    CANDLES_QUERY,
    LAKE_QUERY,
    PRICES_QUERY,
    ProgressPoller,
    ProgressRecorder,
)
from candlelake.trade import TRADE_KEY
from candlelake.util import first_line

log = logging.getLogger("candlelake.stream")

LAKE_PARTITIONS = ["exchange", "trade_date"]
# Copies within a minute of the first (twice this, Spark's dropDuplicatesWithinWatermark) are dropped: a
# producer's reconnect resending. Older ones are left to the readers' dedupe: every batch scans this state.
LAKE_DEDUPE_WINDOW = "30 seconds"
# A restart after a long pause must not read days of trades into one micro-batch (the driver has about
# 1 GiB); under load, bigger batches keep up where small ones fall behind (each pays a fixed cost).
CANDLES_MAX_OFFSETS_PER_TRIGGER = 400_000
LAKE_MAX_OFFSETS_PER_TRIGGER = 600_000
LAKE_TRIGGER = "10 seconds"
# Price points come a few a minute per market; a poller asking again before its source updated sends the
# same point, so copies within ten minutes of the first are dropped (processing time: never a late one).
PRICES_TRIGGER = "10 seconds"
PRICES_DEDUPE_WINDOW = "10 minutes"
PRICES_PARTITIONS = ["exchange", "price_date"]
# How often the main loop copies finished micro-batches into stream_progress and checks the queries. An
# idle query is reported every 5 s (ProgressPoller's default), well inside the health check's 30 s.
PROGRESS_POLL_S = 0.5


def stream_conf(settings: Settings) -> dict[str, str]:
    """The stream's Spark settings on top of the shared session's exact decimals and UTC (build_session)."""
    return {
        # Tasks per stateful stage. One each on two cores: the candles query and the lake query then
        # run side by side, and a 1,000 trades/s micro-batch took 0.54 s instead of 0.68 s with two.
        # Fixed at a checkpoint's first run (Spark restores it from the checkpoint afterwards).
        "spark.sql.shuffle.partitions": str(settings.stream_partitions),
        # Without Hadoop's native library, its local file system forks `chmod` and `readlink` for every
        # file it creates or renames; with Spark's default FileContext checkpoint manager that cost
        # 50-200 ms per checkpoint file and state-store commit (three or more per micro-batch). The
        # FileSystem-based manager renames with java.io (atomic on a local or POSIX file system), and the
        # raw local file system skips the .crc side files (each one another fork). Together they took a
        # micro-batch at 1,000 trades/s from 1.3 s to 0.7 s.
        "spark.sql.streaming.checkpointFileManagerClass": (
            "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"
        ),
        "spark.hadoop.fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem",
        # With it on, Spark prunes `from_json` to one field per column for the validity filter and parses
        # each Kafka record eight times: 21 us a record instead of 9 (parse + validate, one core).
        "spark.sql.optimizer.enableJsonExpressionOptimization": "false",
        "spark.ui.port": str(settings.spark_ui_port),
        # State on local disk (RocksDB) instead of the JVM heap, so a burst of trade ids cannot run the
        # driver out of memory; each batch checkpoints only its changes (changelog).
        "spark.sql.streaming.stateStore.providerClass": (
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
        ),
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        # Counting the state's rows costs a read before every write; the dedupe state does one lookup and
        # one write per trade, so the count would be a third RocksDB call per trade. The count only feeds
        # the progress metric numRowsTotal, which then reads 0.
        "spark.sql.streaming.stateStore.rocksdb.trackTotalNumberOfRows": "false",
    }


def candles_session(spark: SparkSession, settings: Settings) -> SparkSession:
    """A session for the candles query: its state and code generation as CANDLELAKE_CANDLES_* say.

    Only this query may keep its state in the heap: its state is bounded by event time (the watermark),
    while the lake query's dedupe is processing time and fills as fast as Spark reads. A checkpoint keeps
    the provider it was created with.
    """
    session = spark.newSession()
    if settings.candles_codegen == "off":
        # The operators carry the watermark as a literal, so generated code is compiled anew every
        # micro-batch; interpreted is cheaper only with a short watermark.
        session.conf.set("spark.sql.codegen.wholeStage", "false")
        session.conf.set("spark.sql.codegen.factoryMode", "NO_CODEGEN")
    if settings.candles_state_store == "memory":
        session.conf.set(
            "spark.sql.streaming.stateStore.providerClass",
            "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider",
        )
    return session


def read_trades(spark: SparkSession, settings: Settings, max_offsets_per_trigger: int) -> DataFrame:
    """The `trades` topic as typed, complete trades (each query that uses it gets its own consumer)."""
    kafka = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
        .option("subscribe", settings.trades_topic)
        .option("startingOffsets", "earliest")
        # Offsets that vanished before we read them (retention, a recreated topic) are trades lost
        # for good; stop and say so instead of skipping them silently. To accept the loss, delete
        # this job's checkpoints and restart.
        .option("failOnDataLoss", "true")
        .option("maxOffsetsPerTrigger", max_offsets_per_trigger)
        .load()
    )
    # The producer already dead-letters malformed input; a record that still fails to parse here is
    # skipped rather than allowed to stop both queries.
    return transforms.valid_trades(transforms.parse_trades(kafka))


def start_lake_query(trades: DataFrame, settings: Settings) -> StreamingQuery:
    """Append deduplicated trades to the Parquet lake, partitioned by exchange and UTC trade date."""
    deduped = (
        transforms.with_trade_date(trades)
        # The batch's own time as the dedupe clock: it only moves forward, so no row is ever late.
        .withColumn("_seen_at", F.current_timestamp())
        .withWatermark("_seen_at", LAKE_DEDUPE_WINDOW)
        .dropDuplicatesWithinWatermark(list(TRADE_KEY))
        .drop("_seen_at")
    )
    table = settings.lake_dir / "trades"
    parquet_lake.retire_file_sink_log(table)

    def write(batch: DataFrame, batch_id: int) -> None:
        # One task: one file per partition per batch, not one per Kafka partition.
        parquet_lake.write_batch(batch.coalesce(1), batch_id, table, LAKE_PARTITIONS)

    return (
        deduped.writeStream.queryName(LAKE_QUERY)
        .foreachBatch(write)
        .option("checkpointLocation", str(settings.checkpoint_dir / "lake"))
        .outputMode("append")
        .trigger(processingTime=LAKE_TRIGGER)
        .start()
    )


def start_candles_query(trades: DataFrame, settings: Settings) -> StreamingQuery:
    """Deduplicate, aggregate into candles and upsert every micro-batch into PostgreSQL as 'live'."""
    # The key includes trade_time (a trade's copies all carry the same one), so Spark keeps it only until
    # the watermark passes that time: a copy arriving later is dropped as late, never counted twice.
    # dropDuplicatesWithinWatermark would keep each key for twice the delay, doubling the state that
    # every batch scans.
    deduped = trades.withWatermark("trade_time", settings.watermark_delay).dropDuplicates([*TRADE_KEY, "trade_time"])
    live = transforms.candles(deduped, settings.candle_interval)
    dsn = settings.pg_dsn()

    def upsert(batch: DataFrame, batch_id: int) -> None:
        count = upsert_candles_df(batch, dsn, "live")
        log.debug("batch %d: upserted %d candles", batch_id, count)

    return (
        live.writeStream.queryName(CANDLES_QUERY)
        .outputMode("update")
        .foreachBatch(upsert)
        .option("checkpointLocation", str(settings.checkpoint_dir / "candles"))
        .trigger(processingTime=settings.trigger_interval)
        .start()
    )


def read_prices(spark: SparkSession, settings: Settings) -> DataFrame:
    """The `prices` topic as typed, complete price points."""
    kafka = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
        .option("subscribe", settings.prices_topic)
        .option("startingOffsets", "earliest")
        .option("failOnDataLoss", "true")  # as for the trades: points that vanished unread are named
        .load()
    )
    return prices.parse_prices(kafka)


def start_prices_query(points: DataFrame, settings: Settings, publisher: price_kpis.KpiPublisher) -> StreamingQuery:
    """Land price points in the lake and PostgreSQL, recompute the KPI windows they touch, publish those
    (with `publisher`, which the caller closes once the query stopped)."""
    deduped = prices.dedupe_points(points, PRICES_DEDUPE_WINDOW)
    table = settings.lake_dir / "prices"
    dsn = settings.pg_dsn()

    def land(batch: DataFrame, batch_id: int) -> None:
        # The lake first, then PostgreSQL, then the topic: each idempotent, so a batch cut short anywhere
        # is re-run whole by Spark with the same id.
        dated = prices.with_price_date(batch).coalesce(1)
        parquet_lake.write_batch(dated, batch_id, table, PRICES_PARTITIONS)
        kpis = price_kpis.land_points_dsn(dsn, price_kpis.point_rows(batch))
        log.debug("batch %d: %d price KPI rows published", batch_id, publisher.publish(kpis))

    return (
        deduped.writeStream.queryName(PRICES_QUERY)
        .foreachBatch(land)
        .option("checkpointLocation", str(settings.checkpoint_dir / "prices"))
        .outputMode("append")
        .trigger(processingTime=PRICES_TRIGGER)
        .start()
    )


def check_checkpoints(settings: Settings) -> None:
    """Both queries' checkpoints must match the output they already wrote (see candlelake.stream.guard)."""
    import psycopg2

    stream_guard.check_lake(settings.lake_dir / "trades", settings.checkpoint_dir / "lake")
    with psycopg2.connect(settings.pg_dsn(), connect_timeout=10) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM (SELECT 1 FROM candles WHERE state IN ('live', 'closed') LIMIT 1000) AS s")
        streamed = int(cur.fetchone()[0])
    conn.close()
    stream_guard.check_candles(streamed, settings.checkpoint_dir / "candles")


def main() -> int:
    """Start both queries and block until a signal arrives or a query ends; return the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("py4j").setLevel(logging.WARNING)  # one INFO line per callback otherwise
    settings = load_settings()
    try:
        check_checkpoints(settings)
    except stream_guard.CheckpointMismatch as exc:
        log.error("refusing to start: %s", exc)
        return 2
    spark = build_session(settings, "candlelake-stream", stream_conf(settings), batch=False)
    spark.sparkContext.setLogLevel("WARN")
    candles_spark = candles_session(spark, settings)
    recorder = ProgressRecorder(settings.pg_dsn())
    poller = ProgressPoller(recorder)

    kpi_publisher = price_kpis.KpiPublisher(settings.kafka_bootstrap, settings.price_kpis_topic)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping the queries", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    queries = [
        start_lake_query(read_trades(spark, settings, LAKE_MAX_OFFSETS_PER_TRIGGER), settings),
        start_candles_query(read_trades(candles_spark, settings, CANDLES_MAX_OFFSETS_PER_TRIGGER), settings),
        start_prices_query(read_prices(spark, settings), settings, kpi_publisher),
    ]
    log.info(
        "streaming from %s topic %s; lake %s; UI port %d",
        settings.kafka_bootstrap,
        settings.trades_topic,
        settings.lake_dir,
        settings.spark_ui_port,
    )
    failed = False
    try:
        while not stopping.wait(PROGRESS_POLL_S):
            poller.poll(queries)
            ended = [q for q in queries if not q.isActive]
            if ended:
                # Nothing but a signal should end a query; one that ended by itself is a failure.
                for query in ended:
                    error = query.exception()
                    reason = first_line(error) if error and str(error).strip() else "no error given"
                    log.error("query %s ended on its own (%s); stopping", query.name, reason)
                failed = True
                break
        poller.poll(queries)  # the batches that finished since the last poll
    except Exception as exc:
        log.error("the streaming job failed: %s", first_line(exc))
        failed = True
    finally:
        for query in queries:
            # The JVM may already be going down with the same signal.
            with contextlib.suppress(Exception):
                query.stop()
        recorder.close()
        with contextlib.suppress(Exception):  # flushes nothing new: each batch flushed its own KPIs
            kpi_publisher.close()
        with contextlib.suppress(Exception):
            spark.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
