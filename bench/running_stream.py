"""The settings the running streaming job was started with, for the benchmarks' result files.

A benchmark runs in its own process; the job may have been started (`candlelake up`) with other
CANDLELAKE_* variables than the benchmark sees. Its environment is read back from /proc, so a result
names the trigger, watermark and stores the job really ran with.
"""

from __future__ import annotations

from pathlib import Path

from candlelake.config import Settings, load_settings
from candlelake.platform import runtime


def stream_settings(settings: Settings) -> Settings:
    """The running stream's settings, or `settings` when it is not running or /proc cannot be read."""
    pid = runtime.running_pid(settings, "stream")
    if pid is None:
        return settings
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return settings
    env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
    return load_settings(env)


def stream_settings_record(settings: Settings) -> dict[str, object]:
    """The job's speed settings as a result file records them."""
    s = stream_settings(settings)
    return {
        "trigger": s.trigger_interval,
        "watermark_delay": s.watermark_delay,
        "candles_state_store": s.candles_state_store,
        "candles_codegen": s.candles_codegen,
        "stream_partitions": s.stream_partitions,
        "spark_master": s.spark_master,
        "driver_memory": s.spark_driver_memory,
    }
