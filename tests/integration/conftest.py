"""The integration tier's services: the platform's PostgreSQL and Kafka, nothing else.

Started once for the tier the way `candlelake up --only postgres,kafka` starts them (schema and topics
included), unless they already run; whatever was started here is stopped at the end. A test here
never skips because a service is down: in CI that would turn a broken set-up into a green run.
Airflow and the streaming job are started by the tests that need them, with settings of their own (a
database, topics or folders per test) so that they cannot disturb one another. Spark tests share one
local session (`spark`), and tests that write under an exchange name take one of their own
(`exchange`, `module_exchange`) whose rows are deleted afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

from candlelake.config import Settings, load_settings
from candlelake.platform.kafka import KafkaComponent
from candlelake.platform.orchestrator import up
from candlelake.platform.postgres import PostgresComponent
from tests.support.spark import local_session


@pytest.fixture(scope="package", autouse=True)
def services() -> Iterator[Settings]:
    settings = load_settings()
    parts = [PostgresComponent(settings), KafkaComponent(settings)]
    started = [p for p in parts if not (p.pid() and p.healthy())]
    up(parts, lambda _: None)  # also applies the schema and topics to parts already running
    yield settings
    for part in reversed(started):
        part.stop()


@pytest.fixture(scope="package")
def spark() -> Iterator[Any]:
    """One local SparkSession for every Spark test of the tier (one JVM start, not one per module), sized
    like the unit tier's; it stops when the tier ends. A test that lends it to code which stops its
    session uses tests.support.spark.lent."""
    with local_session("candlelake-integration-tests", cores=2) as session:
        yield session


# Every table a test writes under an exchange name of its own. Deleting the candles also runs the rollups'
# DELETE trigger (test_rollups relies on that); corrections go with their curated load (ON DELETE CASCADE).
EXCHANGE_TABLES = (
    "candles",
    "coverage",
    "trade_gaps",
    "quality_runs",
    "curated_loads",
    "lake_compactions",
    "alerts",
    "alert_rules",
)


def _own_exchange(settings: Settings, request: pytest.FixtureRequest) -> Iterator[str]:
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "")
    name = f"{module}{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        for table in EXCHANGE_TABLES:
            cur.execute(f"DELETE FROM {table} WHERE exchange = %s", (name,))
    conn.close()


@pytest.fixture
def exchange(services: Settings, request: pytest.FixtureRequest) -> Iterator[str]:
    """An exchange name no other test uses (the module's name and a random suffix); its rows in the
    platform database (EXCHANGE_TABLES) are deleted after the test."""
    yield from _own_exchange(services, request)


@pytest.fixture(scope="module")
def module_exchange(services: Settings, request: pytest.FixtureRequest) -> Iterator[str]:
    """`exchange` for a whole module, whose module-scoped fixtures build one exchange's data."""
    yield from _own_exchange(services, request)
