"""The batch SparkSession: what correctness needs (exact decimals, UTC) and a small footprint.

The streaming job (jobs/stream_candles.py) builds its own session with streaming state settings on
top of the same two correctness settings; batch jobs and benchmarks build theirs here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pyspark.sql import SparkSession

from candlelake.config import Settings
from candlelake.spark import transforms


def build_session(
    settings: Settings, app_name: str = "candlelake-batch", conf: Mapping[str, str] | None = None
) -> SparkSession:
    """A SparkSession on `settings.spark_master` (unless spark-submit chose one) with exact decimals in UTC."""
    builder = (
        SparkSession.builder.appName(app_name)
        # Exact decimal products: see candlelake.spark.transforms for why `true` would round quote volumes.
        .config(transforms.PRECISION_LOSS_CONF, "false")
        .config("spark.sql.session.timeZone", "UTC")
        # Two cores by default: more shuffle partitions than that only add task overhead.
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        # A batch job's stdout/stderr go to logs: no console progress bars.
        .config("spark.ui.showConsoleProgress", "false")
    )
    # spark-submit starts the JVM first and passes its gateway; its --master and memory then hold.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(settings.spark_master).config("spark.driver.memory", settings.spark_driver_memory)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
