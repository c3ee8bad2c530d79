"""Measure the platform's start-up time and each part's memory at idle.

    .venv/bin/python bench/platform_footprint.py [--idle 60] [--cold-runtime]

Stops the platform, starts it with `candlelake up` (timing it), lets it run idle on the simulator for
`--idle` seconds, then reads every part's resident memory (the process and its children) from
`candlelake status --json`. `--cold-runtime` first deletes `.runtime/` (a first start: initdb, Kafka
format, Airflow's database migration) but keeps the downloaded jars in `.cache/`. Prints a Markdown
table and writes the figures as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "candlelake")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, check=False, cwd=ROOT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=60.0, help="seconds to idle before reading memory")
    parser.add_argument("--cold-runtime", action="store_true", help="delete .runtime/ first")
    args = parser.parse_args()

    run("down")
    if args.cold_runtime:
        shutil.rmtree(ROOT / ".runtime", ignore_errors=True)
    started = time.monotonic()
    up = run("up")
    up_s = time.monotonic() - started
    if up.returncode != 0:
        print(up.stdout, up.stderr, sep="\n")
        return 1
    time.sleep(args.idle)
    parts = json.loads(run("status", "--json").stdout)
    total = sum(p["rss_kib"] for p in parts) / 1024
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cold_runtime": args.cold_runtime,
        "up_seconds": round(up_s, 1),
        "idle_seconds": args.idle,
        "rss_mib": {p["name"]: round(p["rss_kib"] / 1024) for p in parts},
        "rss_total_mib": round(total),
    }
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"platform_footprint-{result['when']}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"`candlelake up`: {up_s:.1f} s ({'cold runtime' if args.cold_runtime else 'warm'})\n")
    print(f"| part | RSS at idle after {args.idle:.0f} s (MiB) |\n|---|---:|")
    for name, mib in result["rss_mib"].items():
        print(f"| {name} | {mib} |")
    print(f"| **total** | **{result['rss_total_mib']}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
