"""The integration tier's services: the platform's PostgreSQL and Kafka, nothing else.

Started once for the tier the way `candlelake up --only postgres,kafka` starts them (schema and topics
included), unless they already run; whatever was started here is stopped at the end. A test here
never skips because a service is down: in CI that would turn a broken set-up into a green run.
Spark, Airflow and the streaming job are started by the tests that need them, with settings of their
own (a database, topics or folders per test) so that they cannot disturb one another.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from candlelake.config import Settings, load_settings
from candlelake.platform.kafka import KafkaComponent
from candlelake.platform.orchestrator import up
from candlelake.platform.postgres import PostgresComponent


@pytest.fixture(scope="package", autouse=True)
def services() -> Iterator[Settings]:
    settings = load_settings()
    parts = [PostgresComponent(settings), KafkaComponent(settings)]
    started = [p for p in parts if not (p.pid() and p.healthy())]
    up(parts, lambda _: None)  # also applies the schema and topics to parts already running
    yield settings
    for part in reversed(started):
        part.stop()
