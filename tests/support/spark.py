"""The tests' local Spark session: the jobs' own (candlelake.spark.session: exact decimals, UTC), sized
for the few thousand rows a test holds.

One place for what every tier's fixture needs: the venv's interpreter for Python workers, the
loopback address (a test never needs the machine's other interfaces), as many shuffle partitions as
cores, and a JVM tuned for seconds-long jobs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

# Test JVMs live for seconds: compiling with C1 only halved a compaction job's start-to-end time here.
FAST_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


@contextmanager
def local_session(app: str, *, cores: int = 1, conf: Mapping[str, str] | None = None) -> Iterator[Any]:
    """A local SparkSession on `cores` cores, stopped afterwards; `conf` adds or overrides settings."""
    from candlelake.config import load_settings
    from candlelake.spark.session import build_session

    # Python workers must run this venv's interpreter, not whatever `python3` is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    settings = {
        "spark.master": f"local[{cores}]",
        "spark.sql.shuffle.partitions": str(cores),
        "spark.default.parallelism": str(cores),
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.extraJavaOptions": FAST_JVM,
        **(conf or {}),
    }
    session = build_session(load_settings(), app, settings)
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


@contextmanager
def lent(session: Any) -> Iterator[None]:
    """Lend a shared `session` to code that builds its own (getOrCreate returns `session` then) and stops it
    at its end, as a job's main() does: stop() does nothing meanwhile, and the runtime settings the
    builder changed (a job's batch settings) and the log level are put back afterwards."""
    before = dict(session.conf.getAll)
    session.stop = lambda: None  # an instance attribute: shadows the method until deleted below
    try:
        yield
    finally:
        del session.stop
        after = dict(session.conf.getAll)
        for key in after.keys() - before.keys():
            session.conf.unset(key)
        for key, value in before.items():
            if after.get(key) != value:
                session.conf.set(key, value)
        session.sparkContext.setLogLevel("ERROR")
