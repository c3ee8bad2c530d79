-- Candles at any bucket for one market, with Binance's empty intervals filled where coverage says they
-- were quiet (see include/candlelake/rollups.py, which runs it). The parts placeholder (in braces) is
-- replaced by one of rollups.py's fixed sub-selects (never user input): one row per bucket `t` that has
-- stored parts, the rows of a stored level as they are, or aggregated from base candles and
-- candle_rollups levels. Every value is a bound parameter: exchange, symbol, first/last (bucket open
-- times in range), stop (end of the last bucket), step (bucket interval), origin (the epoch, or a Monday
-- for weeks), base, base_s, per_bucket (base intervals in a bucket), and level/span/tail of each level read.
WITH bounds AS MATERIALIZED (
    SELECT (SELECT min(open_time) FROM candles
             WHERE exchange = %(exchange)s AND symbol = %(symbol)s AND trades > 0) AS first_time,
           (SELECT max(open_time) FROM candles
             WHERE exchange = %(exchange)s AND symbol = %(symbol)s) AS last_time,
           -- the last candle with trades before the range: quiet buckets at its start repeat its close
           (SELECT max(open_time) FROM candles
             WHERE exchange = %(exchange)s AND symbol = %(symbol)s AND trades > 0
               AND open_time < %(first)s) AS carry_time
), covered AS MATERIALIZED (
    -- The market's coverage (less trade gaps of known times) from that candle to the end of the range,
    -- computed once: every bucket below is judged by one containment test against it.
    SELECT market_coverage(%(exchange)s, %(symbol)s, least(carry_time, %(first)s::timestamptz),
                           %(stop)s::timestamptz) AS m
      FROM bounds
), agg AS ({parts}
), joined AS (
    SELECT b.t, a.open, a.high, a.low, a.close, a.volume, a.quote_volume, a.trades,
           a.taker_buy_volume, a.taker_buy_quote_volume, coalesce(a.base_rows, 0) AS base_rows, a.state_rank,
           bounds.first_time, bounds.last_time
      FROM bounds
     CROSS JOIN LATERAL generate_series(
               greatest(%(first)s::timestamptz, date_bin(%(step)s, first_time, %(origin)s)),
               least(%(last)s::timestamptz, date_bin(%(step)s, last_time, %(origin)s)),
               %(step)s) AS b(t)
      LEFT JOIN agg a ON a.t = b.t
     WHERE first_time IS NOT NULL  -- greatest()/least() skip NULLs: no market, no buckets
), priced AS (
    -- Each lookup below is one index probe (candles_with_trades), made only for the buckets that need it.
    SELECT j.*,
           CASE WHEN j.trades > 0 THEN coalesce(j.open, (
               SELECT open FROM candles
                WHERE exchange = %(exchange)s AND symbol = %(symbol)s AND trades > 0
                  AND open_time >= j.t AND open_time < j.t + %(step)s
                ORDER BY open_time LIMIT 1)) END AS first_open,
           CASE WHEN j.trades > 0 THEN coalesce(j.close, (
               SELECT close FROM candles
                WHERE exchange = %(exchange)s AND symbol = %(symbol)s AND trades > 0
                  AND open_time >= j.t AND open_time < j.t + %(step)s
                ORDER BY open_time DESC LIMIT 1)) END AS last_close,
           p.close AS previous, p.open_time AS previous_time
      FROM joined j
      -- A bucket without trades repeats the previous close, which may lie before the range.
      LEFT JOIN LATERAL (
           SELECT close, open_time FROM candles
            WHERE coalesce(j.trades, 0) = 0  -- evaluated before the probe: only empty buckets look
              AND exchange = %(exchange)s AND symbol = %(symbol)s AND trades > 0 AND open_time < j.t
            ORDER BY open_time DESC LIMIT 1) p ON true
)
SELECT to_char(c.t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
       trim_scale(coalesce(c.first_open, c.previous))::text,
       trim_scale(coalesce(c.high, c.previous))::text,
       trim_scale(coalesce(c.low, c.previous))::text,
       trim_scale(coalesce(c.last_close, c.previous))::text,
       trim_scale(coalesce(c.volume, 0))::text,
       trim_scale(coalesce(c.quote_volume, 0))::text,
       coalesce(c.trades, 0)::bigint,
       trim_scale(coalesce(c.taker_buy_volume, 0))::text,
       trim_scale(coalesce(c.taker_buy_quote_volume, 0))::text,
       trim_scale(c.quote_volume / nullif(c.volume, 0))::text,
       (ARRAY['live', 'closed', 'curated'])[1 + least(
           coalesce(c.state_rank, 1),
           -- base intervals of this bucket the market has passed through but nobody stored: generated
           -- (only the first and the last bucket can hold fewer than per_bucket such intervals)
           CASE WHEN c.base_rows >= %(per_bucket)s THEN 2
                WHEN c.base_rows < extract(epoch FROM least(c.t + %(step)s, c.last_time + %(base)s)
                                                     - greatest(c.t, c.first_time)) / %(base_s)s
                THEN 1 ELSE 2 END)],
       CASE WHEN c.base_rows = 0 THEN 'true' ELSE 'false' END,
       CASE WHEN (SELECT m FROM covered) @> tstzrange(c.t, c.t + %(step)s) THEN 'complete' ELSE 'partial' END
  FROM priced c
 -- A bucket with trades is a candle, whatever was missed around them. One without is a quiet candle only
 -- when the base candle whose close it repeats carries it: the covered time from that candle's open to
 -- the bucket's end is one unbroken stretch reaching into the candle (a watch that began inside it saw
 -- its last trade; one lost and found again inside it may not have), so no unseen trade can have moved
 -- the price since: the nightly batch's rule (candlelake.coverage.carriers). Anything else is unknown,
 -- and unknown is no row. (The multirange is read as a one-off parameter, not joined: a join would carry
 -- it through every sort.)
 WHERE c.trades > 0
    OR (c.previous_time IS NOT NULL AND EXISTS (
        SELECT 1
          FROM (SELECT (SELECT m FROM covered) * tstzmultirange(tstzrange(c.previous_time, c.t + %(step)s)) AS r) q
         WHERE q.r = tstzmultirange(range_merge(q.r))
           AND upper(range_merge(q.r)) = c.t + %(step)s
           AND lower(range_merge(q.r)) < c.previous_time + %(base)s))
 ORDER BY c.t
