-- Candles at any bucket for one market, rolled up from base candles or from candle_rollups, with
-- Binance's empty intervals filled (see include/candlelake/rollups.py, which runs it).
-- The parts placeholder (braces) is replaced by one of rollups.py's two fixed sub-selects (never user input); every value
-- is a bound parameter: exchange, symbol, first/last (bucket open times in range), stop (end of the
-- last bucket), step (bucket interval), origin (the epoch, or a Monday for weeks), level, base, base_s.
WITH bounds AS (
    SELECT (SELECT min(open_time) FROM candles
             WHERE exchange = %(exchange)s AND symbol = %(symbol)s AND trades > 0) AS first_time,
           (SELECT max(open_time) FROM candles
             WHERE exchange = %(exchange)s AND symbol = %(symbol)s) AS last_time
), buckets AS (
    SELECT t
      FROM bounds, generate_series(
               greatest(%(first)s::timestamptz, date_bin(%(step)s, first_time, %(origin)s)),
               least(%(last)s::timestamptz, date_bin(%(step)s, last_time, %(origin)s)),
               %(step)s) AS t
     WHERE first_time IS NOT NULL  -- greatest()/least() skip NULLs: no market, no buckets
), agg AS (
    -- Plain aggregates only, no per-bucket sort: the open is the price paired with the smallest
    -- open_time among the parts with trades (arrays compare element by element), the close the largest.
    SELECT date_bin(%(step)s, open_time, %(origin)s) AS t,
           (min(ARRAY[extract(epoch FROM open_time), open]) FILTER (WHERE trades > 0))[2] AS open,
           max(high) FILTER (WHERE trades > 0) AS high,
           min(low) FILTER (WHERE trades > 0) AS low,
           (max(ARRAY[extract(epoch FROM open_time), close]) FILTER (WHERE trades > 0))[2] AS close,
           sum(volume) AS volume, sum(quote_volume) AS quote_volume, sum(trades) AS trades,
           sum(taker_buy_volume) AS taker_buy_volume, sum(taker_buy_quote_volume) AS taker_buy_quote_volume,
           sum(base_rows) AS base_rows, min(state_rank) AS state_rank
      FROM ({parts}) p
     GROUP BY 1
), joined AS (
    SELECT b.t, a.open, a.high, a.low, a.close, a.volume, a.quote_volume, a.trades,
           a.taker_buy_volume, a.taker_buy_quote_volume, coalesce(a.base_rows, 0) AS base_rows, a.state_rank,
           count(a.close) OVER (ORDER BY b.t) AS grp
      FROM buckets b
      LEFT JOIN agg a USING (t)
), carried AS (
    -- The close carried into empty buckets: the last close before them, from before the range if need be.
    SELECT j.*,
           coalesce(first_value(j.close) OVER (PARTITION BY j.grp ORDER BY j.t),
                    (SELECT close FROM candles
                      WHERE exchange = %(exchange)s AND symbol = %(symbol)s AND trades > 0
                        AND open_time < %(first)s
                      ORDER BY open_time DESC LIMIT 1)) AS carry
      FROM joined j
)
SELECT to_char(c.t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
       trim_scale(coalesce(c.open, c.carry))::text,
       trim_scale(coalesce(c.high, c.carry))::text,
       trim_scale(coalesce(c.low, c.carry))::text,
       trim_scale(coalesce(c.close, c.carry))::text,
       trim_scale(coalesce(c.volume, 0))::text,
       trim_scale(coalesce(c.quote_volume, 0))::text,
       coalesce(c.trades, 0)::bigint,
       trim_scale(coalesce(c.taker_buy_volume, 0))::text,
       trim_scale(coalesce(c.taker_buy_quote_volume, 0))::text,
       trim_scale(c.quote_volume / nullif(c.volume, 0))::text,
       (ARRAY['live', 'closed', 'curated'])[1 + least(
           coalesce(c.state_rank, 1),
           -- base intervals of this bucket the market has passed through but nobody stored: generated
           CASE WHEN c.base_rows < extract(epoch FROM least(c.t + %(step)s, (SELECT last_time FROM bounds) + %(base)s)
                                               - greatest(c.t, (SELECT first_time FROM bounds))) / %(base_s)s
                THEN 1 ELSE 2 END)],
       CASE WHEN c.base_rows = 0 THEN 'true' ELSE 'false' END
  FROM carried c
 ORDER BY c.grp, c.t  -- the same order as by t alone (grp never decreases), and no extra sort
