"""The `backfill` DAG's files path for real: a data.binance.vision day file into Kafka, and its coverage.

`candlelake.runs.range_backfill.run_request` with `source=files` replays the file through the
producer's validation into the platform's Kafka (started for the tier) and records what it covered in
PostgreSQL: the file's day, cut to the form's start..end, less where the file's ids skip.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pytest

from candlelake.config import ConfigError, Settings
from candlelake.runs.range_backfill import parse_request, run_request
from candlelake.util import to_us

pytestmark = pytest.mark.integration

TRADES = Path(__file__).resolve().parents[1] / "fixtures" / "binance-spot-xrpeth-2019-10" / "aggtrades.json.gz"
NAME = "XRPETH-aggTrades-2019-10-11.csv"
START, END = datetime(2019, 10, 11, 6, tzinfo=UTC), datetime(2019, 10, 11, 18, tzinfo=UTC)
REMOVED = 20  # the 20th to 29th trade after START are not in the file


@pytest.fixture
def day_file(tmp_path: Path, services: Settings) -> Iterator[tuple[Path, list[dict]]]:
    """The recording's 2019-10-11 aggTrades as the exchange's day file, ten of them left out."""
    with gzip.open(TRADES, "rt") as f:
        day = [r["info"] for r in json.load(f) if r["datetime"].startswith("2019-10-11")]
    inside = [i for i, r in enumerate(day) if to_us(START) <= r["T"] * 1000 < to_us(END)]
    left_out = set(inside[REMOVED : REMOVED + 10])
    path = tmp_path / NAME
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        for i, r in enumerate(day):
            if i not in left_out:
                writer.writerow([r["a"], r["p"], r["q"], r["f"], r["l"], r["T"], r["m"], r["M"]])
    kept = [r for i, r in enumerate(day) if i not in left_out]
    yield path, kept
    with psycopg2.connect(services.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM coverage WHERE source = %s", (f"replay:{NAME}",))
    conn.close()


def test_a_day_file_covers_the_forms_range_less_where_its_ids_skip(services: Settings, day_file) -> None:
    path, kept = day_file
    request = parse_request("binance", [], START.isoformat(), END.isoformat(), "files", str(path))
    said: list[str] = []
    outcome = run_request(services, request, said.append)

    inside = [r for r in kept if to_us(START) <= r["T"] * 1000 < to_us(END)]
    assert (outcome.sent, outcome.outside, outcome.errors) == (len(inside), len(kept) - len(inside), [])
    assert sorted(d.isoformat() for d in outcome.days) == ["2019-10-11"] and outcome.offsets
    # Covered: 06:00 to 18:00, but not from the trade before the ten left out to the one after them.
    before, after = inside[REMOVED - 1], inside[REMOVED]
    with psycopg2.connect(services.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT kind, (extract(epoch FROM started_at) * 1e6)::bigint, (extract(epoch FROM ended_at) * 1e6)::bigint "
            "FROM coverage WHERE source = %s ORDER BY started_at",
            (f"replay:{NAME}",),
        )
        assert cur.fetchall() == [
            ("replay", to_us(START), before["T"] * 1000),
            ("replay", after["T"] * 1000 + 1, to_us(END)),
        ]
    conn.close()


def test_the_form_is_checked_before_anything_is_sent(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="source files needs start and end"):
        parse_request("binance", [], "", "", "files", str(tmp_path))
    with pytest.raises(ConfigError, match="no such file or folder"):
        parse_request("binance", [], "2019-10-11", "2019-10-12", "files", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="end '2019-10-10' must be after start"):
        parse_request("binance", [], "2019-10-11", "2019-10-10", "files", str(tmp_path))
