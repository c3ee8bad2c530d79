"""Time the Markets page over a year of 1-minute candles: the first render and each refresh, per bucket.

    .venv/bin/python bench/dashboard_render.py [--runs 10] [--keep]

Loads 525,600 synthetic 1m candles (one year, one symbol) as bench/rollup_query.py does, then renders the
page with `streamlit.testing`'s AppTest for each (lookback, bucket) view below: the page script itself,
its queries through the read-only role, the figures, the alerts and the Plotly figure serialised for the
browser; not the browser's own drawing (bench/dashboard_memory.py opens the page in Chromium).

- first render: a new session (a fresh AppTest) with Streamlit's data caches empty;
- refresh: the same session rerun after its cached rows expired, as a live refresh does every 5 s;
- cached refresh: a rerun within the cache's 2 s, as a second viewer of the same view gets.

Prints a Markdown table, writes the figures as JSON to bench/results/, and deletes its rows (unless --keep).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import rollup_query as rollup_bench  # noqa: E402 - bench/ is sys.path[0] when run as a script
import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from candlelake.config import load_settings  # noqa: E402

APP = str(ROOT / "dashboard" / "app.py")
# (lookback preset, bucket asked): each view draws at most 5,000 candles; "1m over 1y" is raised to 2h.
VIEWS = (
    ("24h", "1m"),
    ("7d", "5m"),
    ("30d", "15m"),
    ("30d", "45m"),
    ("90d", "1h"),
    ("1y", "4h"),
    ("1y", "1d"),
    ("1y", "1w"),
    ("1y", "1m"),
)


def render(at: AppTest) -> float:
    started = time.perf_counter()
    at.run()
    took = time.perf_counter() - started
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == 1
    return took


def candles_drawn(at: AppTest) -> int:
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    volume = next(t for t in spec["data"] if t.get("name") == "volume")
    return len(volume["x"])  # times travel as a list of strings (typed arrays are for numbers)


def p(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1] if len(samples) > 1 else samples[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="first renders and refreshes per view")
    parser.add_argument("--keep", action="store_true", help="leave the bench rows in place")
    args = parser.parse_args()
    settings = load_settings()
    exchange = f"benchdash{uuid.uuid4().hex[:6]}"
    writer = psycopg2.connect(settings.pg_dsn(), application_name="candlelake-bench")
    results: dict[str, object] = {"exchange": exchange, "base_rows": rollup_bench.MINUTES, "runs": args.runs}
    rows = []
    try:
        with writer, writer.cursor() as cur:
            cur.copy_expert(
                f"COPY candles ({rollup_bench.COPY_COLUMNS}) FROM STDIN", rollup_bench.year_of_candles(exchange)
            )
        writer.autocommit = True
        with writer.cursor() as cur:
            cur.execute("VACUUM (ANALYZE) candles, candle_rollups")
        params = {"exchange": exchange, "symbol": rollup_bench.SYMBOL}
        for lookback, bucket in VIEWS:
            first, refresh, cached = [], [], []
            drawn = 0
            for _ in range(args.runs):
                st.cache_data.clear()
                at = AppTest.from_file(APP, default_timeout=120)
                for key, value in {**params, "lookback": lookback, "bucket": bucket}.items():
                    at.query_params[key] = value
                first.append(render(at))
                drawn = candles_drawn(at)
                cached.append(render(at))
                st.cache_data.clear()
                refresh.append(render(at))
            row = {
                "lookback": lookback,
                "bucket": bucket,
                "candles": drawn,
                "first_p50_s": round(statistics.median(first), 3),
                "first_p95_s": round(p(first, 95), 3),
                "refresh_p50_s": round(statistics.median(refresh), 3),
                "refresh_p95_s": round(p(refresh, 95), 3),
                "cached_refresh_p50_s": round(statistics.median(cached), 3),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        results["views"] = rows
    finally:
        if not args.keep:
            writer.autocommit = True
            with writer.cursor() as cur:
                cur.execute("DELETE FROM candles WHERE exchange = %s", (exchange,))
        writer.close()
    print(
        "\n| lookback | bucket asked | candles drawn | first render p50 / p95 s | refresh p50 / p95 s | cached p50 s |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['lookback']} | {r['bucket']} | {r['candles']:,} | {r['first_p50_s']} / {r['first_p95_s']} | "
            f"{r['refresh_p50_s']} / {r['refresh_p95_s']} | {r['cached_refresh_p50_s']} |"
        )
    out = ROOT / "bench" / "results" / f"dashboard_render-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
