"""Every job's SparkSession: what correctness needs (exact decimals, UTC), and for a batch job a small footprint.

Batch jobs, tests and benchmarks take the batch footprint; the streaming job (jobs/stream_candles.py)
takes only the correctness settings and adds its own (state store, checkpoints, UI port).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from pyspark.sql import SparkSession

from candlelake.config import Settings
from candlelake.spark import transforms

EXACT_CONF: dict[str, str] = {
    # Exact decimal products: see candlelake.spark.transforms for why `true` would round quote volumes.
    transforms.PRECISION_LOSS_CONF: "false",
    "spark.sql.session.timeZone": "UTC",
}
BATCH_CONF: dict[str, str] = {
    # Two cores by default: more shuffle partitions than that only add task overhead.
    "spark.sql.shuffle.partitions": "4",
    "spark.ui.enabled": "false",
    # A batch job's stdout/stderr go to logs: no console progress bars.
    "spark.ui.showConsoleProgress": "false",
}


def build_session(
    settings: Settings,
    app_name: str = "candlelake-batch",
    conf: Mapping[str, str] | None = None,
    *,
    batch: bool = True,
) -> SparkSession:
    """A SparkSession on `settings.spark_master` (unless spark-submit chose one) with exact decimals in UTC.

    `batch` adds BATCH_CONF (a streaming job sizes itself); `conf` adds or overrides settings.
    """
    # Executors run Python too (e.g. the rows of createDataFrame), with the interpreter the driver names in
    # PYSPARK_PYTHON or else whatever `python3` their PATH finds: on a cluster's workers, not this one.
    # spark-submit sets it from spark.pyspark.python; otherwise this interpreter (on a cluster: the same
    # venv path on every host) is named.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    for key, value in {**EXACT_CONF, **(BATCH_CONF if batch else {})}.items():
        builder = builder.config(key, value)
    # spark-submit starts the JVM first and passes its gateway; its --master and memory then hold.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(settings.spark_master).config("spark.driver.memory", settings.spark_driver_memory)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
