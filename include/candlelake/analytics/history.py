"""The curated 1m candles of PostgreSQL as the models' history: each market's bars, in time order.

Training learns from curated candles only: the nightly batch's, recomputed from every trade (late ones
included) and validated. A curated candle whose minute was not wholly watched (`coverage = 'partial'`)
holds only the trades that were seen, so it is left out, and the features whose windows touch it are
unknown rather than computed from a wrong volume. A quiet minute (no trade, watched) is a bar.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

import psycopg2

from candlelake.analytics.features import Bar
from candlelake.util import to_us

HISTORY_SQL = """
SELECT exchange, symbol, open_time, close, volume, trades
FROM candles
WHERE state = 'curated' AND coverage IS DISTINCT FROM 'partial' AND open_time >= %s AND open_time < %s
  AND (%s::text[] IS NULL OR exchange = ANY(%s::text[]))
ORDER BY exchange, symbol, open_time
"""


def load_history(
    dsn: str, start: datetime, end: datetime, exchanges: Sequence[str] | None = None
) -> dict[str, list[Bar]]:
    """Each market's ("exchange:symbol") curated bars opening in [start, end), in time order; of the
    named exchanges only, when given."""
    bars: dict[str, list[Bar]] = defaultdict(list)
    with psycopg2.connect(dsn) as conn, conn.cursor(name="history") as cur:
        cur.itersize = 50_000  # a server-side cursor: a year of ten markets is five million rows
        wanted = list(exchanges) if exchanges else None
        cur.execute(HISTORY_SQL, (start, end, wanted, wanted))
        for exchange, symbol, open_time, close, volume, trades in cur:
            bars[f"{exchange}:{symbol}"].append(Bar(to_us(open_time), close, volume, trades))
    conn.close()
    return dict(bars)
