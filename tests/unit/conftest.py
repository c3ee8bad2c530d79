"""Shared fixtures for the unit tier. The Spark session starts only when a test asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.spark import local_session


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """A small local SparkSession configured like the jobs' (UTC, exact decimals), shared by the session."""
    with local_session("candlelake-unit-tests", cores=2) as session:
        yield session
