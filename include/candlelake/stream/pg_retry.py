"""One PostgreSQL transaction from the streaming job, retried while the database cannot be reached.

A micro-batch's writes must not fail the query because PostgreSQL restarts: a query that fails stops
the job. A connection refused or lost is retried with growing waits (about half a minute in all), then
raised; a bad statement is raised at once. The work runs in one transaction, committed when it returns
(rolled back when it raises).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import psycopg2
import psycopg2.extensions

from candlelake.util import first_line

log = logging.getLogger(__name__)

RETRY_DELAYS_S: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 15.0)

T = TypeVar("T")


def in_transaction(
    dsn: str,
    work: Callable[[psycopg2.extensions.connection], T],
    what: str,
    delays: Sequence[float] = RETRY_DELAYS_S,
    application_name: str = "candlelake-stream",
) -> T:
    """`work(conn)` in one transaction on a new connection, retried on OperationalError; its result."""
    attempt = 0
    while True:
        try:
            conn = psycopg2.connect(dsn, connect_timeout=5, application_name=application_name)
            try:
                result = work(conn)
                conn.commit()  # a no-op when `work` committed itself (`with conn:` inside it)
                return result
            finally:
                conn.close()  # without the commit above: rolled back
        except psycopg2.OperationalError as exc:  # connection refused/lost; not a bad statement
            if attempt >= len(delays):
                raise
            log.warning("PostgreSQL unavailable (%s); retrying %s in %.0fs", first_line(exc), what, delays[attempt])
            time.sleep(delays[attempt])
            attempt += 1
