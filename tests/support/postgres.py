"""One query's rows from the platform's PostgreSQL, for tests that check what a part wrote."""

from __future__ import annotations

from typing import Any

import psycopg2

from candlelake.config import Settings


def rows(settings: Settings, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg2.connect(settings.pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        result = list(cur.fetchall())
    conn.close()
    return result
