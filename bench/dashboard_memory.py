"""The dashboard server's memory over an hour of live refreshes in a real browser.

    .venv/bin/python bench/dashboard_memory.py [--minutes 60] [--keep]

Starts the dashboard exactly as the platform does (DashboardComponent's command line) on a free port,
opens it in headless Chromium (Debian's chromium and chromedriver) in two tabs: the Markets page of a
market with a year of 1m candles (24h at 1m, redrawn every 5 s) and the Pipeline
page (every 10 s). Meanwhile a writer upserts that market's current minute every second, as the stream
does, so every refresh reads new data and the window moves each minute (new cache keys, as in service).
The server's RSS (with its children) is sampled every 30 s. Prints the samples at 1, 5, 10, 30 and 60
minutes and the growth over the second half, writes JSON to bench/results/, deletes its rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import rollup_query as rollup_bench  # noqa: E402 - bench/ is sys.path[0] when run as a script

from candlelake.config import load_settings  # noqa: E402
from candlelake.platform.dashboard import DashboardComponent  # noqa: E402

UPSERT = """
    INSERT INTO candles (exchange, symbol, open_time, close_time, open, high, low, close, volume, quote_volume,
                         trades, taker_buy_volume, taker_buy_quote_volume, vwap, state)
    VALUES (%(exchange)s, %(symbol)s, %(open_time)s, %(close_time)s, %(price)s, %(price)s, %(price)s, %(price)s,
            %(volume)s, %(quote)s, %(trades)s, 0, 0, %(price)s, 'live')
    ON CONFLICT (exchange, symbol, open_time) DO UPDATE SET
        high = greatest(candles.high, EXCLUDED.high), low = least(candles.low, EXCLUDED.low),
        close = EXCLUDED.close, volume = candles.volume + EXCLUDED.volume,
        quote_volume = candles.quote_volume + EXCLUDED.quote_volume, trades = candles.trades + 1,
        vwap = (candles.quote_volume + EXCLUDED.quote_volume) / (candles.volume + EXCLUDED.volume),
        updated_at = now()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    """RSS of a process and its children, from /proc."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total / 1024


def writer(dsn: str, exchange: str, symbol: str, stop: threading.Event) -> None:
    conn = psycopg2.connect(dsn, application_name="candlelake-bench")
    conn.autocommit = True
    price = Decimal("60000")
    i = 0
    while not stop.wait(1.0):
        i += 1
        now = datetime.now(UTC)
        minute = now.replace(second=0, microsecond=0)
        price += Decimal((i * 7919) % 21 - 10) / 10
        with conn.cursor() as cur:
            cur.execute(
                UPSERT,
                {
                    "exchange": exchange,
                    "symbol": symbol,
                    "open_time": minute,
                    "close_time": minute + timedelta(seconds=59.999),
                    "price": price,
                    "volume": Decimal("0.01"),
                    "quote": price / 100,
                    "trades": 1,
                },
            )
    conn.close()


def browser(url: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")
    options = Options()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)
    driver.get(url)
    return driver


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    settings = dataclasses.replace(load_settings(), dashboard_port=free_port())
    exchange, symbol = f"benchmem{uuid.uuid4().hex[:6]}", rollup_bench.SYMBOL
    conn = psycopg2.connect(settings.pg_dsn(), application_name="candlelake-bench")
    # A year of candles ending at the current minute, so the live minutes continue it.
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    rollup_bench.START = now - timedelta(minutes=rollup_bench.MINUTES)
    with conn, conn.cursor() as cur:
        cur.copy_expert(
            f"COPY candles ({rollup_bench.COPY_COLUMNS}) FROM STDIN", rollup_bench.year_of_candles(exchange)
        )
    log = open(ROOT / ".runtime" / "logs" / "bench-dashboard.log", "w")  # noqa: SIM115
    server = subprocess.Popen(DashboardComponent(settings).argv(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    stop = threading.Event()
    samples: list[tuple[float, float]] = []
    driver = None
    drawn = None
    try:
        for _ in range(120):
            if DashboardComponent(settings).healthy():
                break
            time.sleep(0.5)
        base = settings.dashboard_url
        driver = browser(f"{base}/?exchange={exchange}&symbol={symbol}&lookback=24h&bucket=1m")
        driver.switch_to.new_window("tab")
        driver.get(f"{base}/pipeline")
        thread = threading.Thread(target=writer, args=(settings.pg_dsn(), exchange, symbol, stop), daemon=True)
        thread.start()
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < args.minutes * 60:
            samples.append((round(elapsed / 60, 2), round(rss_mib(server.pid), 1)))
            print(f"{samples[-1][0]:6.2f} min  {samples[-1][1]:7.1f} MiB", flush=True)
            time.sleep(30)
        samples.append((round((time.monotonic() - started) / 60, 2), round(rss_mib(server.pid), 1)))
        # Proof that the tab was live to the end: the chart holds the newest minute the writer made.
        driver.switch_to.window(driver.window_handles[0])
        drawn = driver.execute_script(
            "const p = document.querySelector('.js-plotly-plot');"
            "return p ? p.data.filter(t => t.name === 'volume').map(t => [t.x.length, t.x[t.x.length - 1]])[0] : null;"
        )
        driver.save_screenshot(str(ROOT / "bench" / "results" / "dashboard_memory-end.png"))
    finally:
        stop.set()
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(30)
        if not args.keep:
            with conn, conn.cursor() as cur:
                cur.execute("DELETE FROM candles WHERE exchange = %s", (exchange,))
        conn.close()

    def at(minute: float) -> float | None:
        close = [s for s in samples if s[0] <= minute + 0.01]
        return close[-1][1] if close else None

    half = [s for s in samples if s[0] >= args.minutes / 2]
    growth = (half[-1][1] - half[0][1]) / max(half[-1][0] - half[0][0], 1e-9) * 60 if len(half) > 1 else None
    result = {
        "minutes": args.minutes,
        "samples": samples,
        "rss_at": {m: at(m) for m in (1, 5, 10, 30, 60) if m <= args.minutes},
        "peak_mib": max(s[1] for s in samples),
        "chart_at_end": drawn,
        "growth_second_half_mib_per_hour": None if growth is None else round(growth, 1),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    out = ROOT / "bench" / "results" / f"dashboard_memory-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
