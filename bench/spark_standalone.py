"""The batch recompute on a Spark standalone cluster (one worker, 2 cores) against local[2], in one run.

    .venv/bin/python bench/spark_standalone.py [--trades 5000000] [--duplicates 0.01] [--repeat 1]

The lake is bench/batch_recompute.py's (the seeded simulator's block of 3 markets repeated over one UTC
day, plus a fraction of late copies), written once into a temporary folder. The cluster is
candlelake.platform.spark_standalone's: a master and one worker offering 2 cores and the driver memory
(so the executor's heap for tasks equals local mode's driver heap), started before the runs and stopped
after them, its logs in `<runtime>/bench-spark-standalone/logs/`.

Each measurement is a process and a JVM of its own (`--one MASTER`): the session as the jobs build it
(candlelake.spark.session.build_session) on that master; on the cluster it first waits until the
executor registered (reported apart, as `executor_wait_seconds`). Then what jobs/batch_candles.py does is
timed: count the trades read, recompute the candles, materialized in full. Runs alternate local,
standalone (`--repeat` times); the ratio is of the median recompute seconds. Peak resident memory is the
driver JVM's and, on the cluster, the executor JVM's (VmHWM). Writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import batch_recompute as recompute_bench  # noqa: E402 - bench/ is sys.path[0] when run as a script

from candlelake.config import load_settings  # noqa: E402
from candlelake.platform.spark_standalone import StandaloneSpec, standalone_cluster  # noqa: E402

LOCAL = "local[2]"
CORES = 2
EXECUTOR_WAIT_S = 120.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def executor_peak_mib() -> float | None:
    """VmHWM of this machine's Spark executor JVM (the cluster runs one at a time), if any."""
    for stat in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"CoarseGrainedExecutorBackend" in stat.read_bytes():
                return recompute_bench.vm_hwm_mib(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return None


def measure_one(master: str, lake: Path, end: datetime, driver_memory: str) -> dict[str, Any]:
    """One recompute of the lake on `master`, in this process (run by `--one`)."""
    from candlelake.nightly import recompute as batch
    from candlelake.spark.session import build_session

    began = time.monotonic()
    spark = build_session(
        load_settings(),
        "candlelake-bench-standalone",
        {"spark.master": master, "spark.driver.memory": driver_memory, "spark.executor.memory": driver_memory},
    )
    spark.sparkContext.setLogLevel("WARN")
    session_s = time.monotonic() - began
    sc = spark.sparkContext
    jvm_pid = int(sc._jvm.ProcessHandle.current().pid())  # type: ignore[union-attr]
    waited = time.monotonic()
    if not master.startswith("local"):
        # The driver's own entry is always there; an executor adds one once it registered.
        while len(sc._jsc.sc().statusTracker().getExecutorInfos()) < 2:  # type: ignore[union-attr]
            if time.monotonic() - waited > EXECUTOR_WAIT_S:
                raise SystemExit(f"no executor registered with {master} within {EXECUTOR_WAIT_S:.0f} s")
            time.sleep(0.1)
    executor_wait_s = time.monotonic() - waited
    day = recompute_bench.DAY_START
    try:
        started = time.monotonic()
        trades_read = batch.read_lake_trades(spark, lake, "simulator", None, day, end).count()
        seen = [(int(day.timestamp()) * 1_000_000, int(end.timestamp() * 1_000_000))]
        covered = {("simulator", s): seen for s in recompute_bench.SYMBOLS}
        result = batch.recompute(spark, lake, "simulator", None, day, end, "1 minute", covered=covered).persist()
        result.count()  # every column: the cache holds whole rows
        summary = batch.summarize(result, trades_read, started)
        spark.catalog.clearCache()
        driver_peak = recompute_bench.vm_hwm_mib(jvm_pid)
        executor_peak = None if master.startswith("local") else executor_peak_mib()
    finally:
        spark.stop()
    return {
        "master": master,
        "session_seconds": round(session_s, 1),
        "executor_wait_seconds": round(executor_wait_s, 1),
        **summary.as_dict(),
        "peak_rss_driver_jvm_mib": round(driver_peak, 1),
        "peak_rss_executor_jvm_mib": round(executor_peak, 1) if executor_peak is not None else None,
    }


def run_one(master: str, lake: Path, end: datetime, driver_memory: str) -> dict[str, Any]:
    """`measure_one` in a fresh process (its own JVM), its JSON line read back."""
    argv = [sys.executable, __file__, "--one", master, "--lake", str(lake), "--end", end.isoformat()]
    argv += ["--driver-memory", driver_memory]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the run on {master} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result), file=sys.stderr)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=5_000_000)
    parser.add_argument("--duplicates", type=float, default=0.01, help="fraction of trades written twice")
    parser.add_argument("--repeat", type=int, default=1, help="local and standalone runs each")
    parser.add_argument("--driver-memory", default=load_settings().spark_driver_memory)
    parser.add_argument("--one", metavar="MASTER", help=argparse.SUPPRESS)
    parser.add_argument("--lake", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--end", type=datetime.fromisoformat, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.lake, args.end, args.driver_memory)))
        return 0

    settings = load_settings()
    home = settings.runtime_dir / "bench-spark-standalone"
    spec = StandaloneSpec(
        port=free_port(),
        webui_port=free_port(),
        worker_webui_port=free_port(),
        cores=CORES,
        memory=args.driver_memory,
        work_dir=home / "work",
    )
    with tempfile.TemporaryDirectory(prefix="candlelake-bench-") as folder:
        lake = Path(folder)
        print(f"{args.trades:,} trades:", file=sys.stderr)
        generated = time.monotonic()
        written, end = recompute_bench.write_lake(lake, args.trades, args.duplicates)
        generate_s = time.monotonic() - generated
        runs: list[dict[str, Any]] = []
        with standalone_cluster(dataclasses.replace(settings, runtime_dir=home), spec) as cluster:
            print(f"cluster {cluster.master_url} up in {cluster.startup_s:.1f} s", file=sys.stderr)
            for _ in range(args.repeat):
                runs.append(run_one(LOCAL, lake, end, args.driver_memory))
                runs.append(run_one(cluster.master_url, lake, end, args.driver_memory))
            startup_s = cluster.startup_s
    local = statistics.median(r["seconds"] for r in runs if r["master"] == LOCAL)
    standalone = statistics.median(r["seconds"] for r in runs if r["master"] != LOCAL)
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "trades": written,
        "duplicates": args.duplicates,
        "generate_seconds": round(generate_s, 1),
        "driver_memory": args.driver_memory,
        "cluster": {"workers": 1, "cores": CORES, "executor_memory": args.driver_memory},
        "cluster_startup_seconds": round(startup_s, 1),
        "runs": runs,
        "median_seconds": {"local": local, "standalone": standalone},
        "ratio_standalone_to_local": round(standalone / local, 2),
    }
    out = ROOT / "bench" / "results" / f"spark_standalone-{result['when']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        "| master | trades read | candles | session s | executor wait s | recompute s | trades/s | driver MiB |", end=""
    )
    print(" executor MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        name = "standalone, 1 worker x 2 cores" if r["master"] != LOCAL else LOCAL
        print(
            f"| {name} | {r['trades_read']:,} | {r['candles_written']:,} | {r['session_seconds']} "
            f"| {r['executor_wait_seconds']} | {r['seconds']} | {r['trades_per_second']:,.0f} "
            f"| {r['peak_rss_driver_jvm_mib']} | {r['peak_rss_executor_jvm_mib'] or '-'} |"
        )
    print(f"standalone / local[2] (median recompute seconds): {result['ratio_standalone_to_local']}")
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
