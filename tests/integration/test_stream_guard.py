"""The real streaming job refuses a missing checkpoint while its output exists, and says what to do."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg2
import pytest

from candlelake.config import load_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "candlelake")


def run_job(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "stream_candles.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )


@pytest.fixture(scope="module")
def streamed_candle():
    """PostgreSQL up (idempotent), holding at least one live candle, removed afterwards."""
    assert subprocess.run([CLI, "up", "--only", "postgres"], capture_output=True, check=False).returncode == 0
    settings = load_settings()
    exchange = f"guard{uuid.uuid4().hex[:8]}"
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO candles (exchange, symbol, open_time, close_time, open, high, low, close, volume, "
            "quote_volume, trades, taker_buy_volume, taker_buy_quote_volume, state) VALUES "
            "(%s, 'X', '2026-01-01T00:00Z', '2026-01-01T00:00:59.999Z', 1, 1, 1, 1, 1, 1, 1, 0, 0, 'live')",
            (exchange,),
        )
    yield settings
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM candles WHERE exchange = %s", (exchange,))
    conn.close()


def test_missing_candle_checkpoint_with_streamed_candles_is_refused(streamed_candle, tmp_path: Path) -> None:
    result = run_job(CANDLELAKE_CHECKPOINT_DIR=str(tmp_path / "cp"), CANDLELAKE_LAKE_DIR=str(tmp_path / "lake"))
    assert result.returncode == 2
    assert "refusing to start" in result.stderr and "Restore the checkpoint" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "cp").exists()  # nothing was started, nothing written


def test_missing_lake_checkpoint_with_lake_output_is_refused(streamed_candle, tmp_path: Path) -> None:
    folder = tmp_path / "lake" / "trades" / "exchange=binance" / "trade_date=2026-11-22"
    folder.mkdir(parents=True)
    (folder / "batch-000000000004-0000.parquet").write_bytes(b"PAR1")
    result = run_job(CANDLELAKE_CHECKPOINT_DIR=str(tmp_path / "cp"), CANDLELAKE_LAKE_DIR=str(tmp_path / "lake"))
    assert result.returncode == 2
    assert "holds output up to micro-batch 4" in result.stderr and "move" in result.stderr
