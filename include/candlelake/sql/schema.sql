-- candlelake platform schema. Applied on every `candlelake up`; every statement is idempotent.

-- Candles at the base interval, keyed by market and bucket start (UTC). Values are exact NUMERIC.
-- state: live (still changing), closed (watermark passed), curated (nightly batch, validated).
CREATE TABLE IF NOT EXISTS candles (
    exchange                text        NOT NULL,
    symbol                  text        NOT NULL,
    open_time               timestamptz NOT NULL,
    close_time              timestamptz NOT NULL,
    open                    numeric     NOT NULL,
    high                    numeric     NOT NULL,
    low                     numeric     NOT NULL,
    close                   numeric     NOT NULL,
    volume                  numeric     NOT NULL,
    quote_volume            numeric     NOT NULL,
    trades                  bigint      NOT NULL,
    taker_buy_volume        numeric     NOT NULL,
    taker_buy_quote_volume  numeric     NOT NULL,
    vwap                    numeric,
    first_trade_id          bigint,
    last_trade_id           bigint,
    state                   text        NOT NULL DEFAULT 'live' CHECK (state IN ('live', 'closed', 'curated')),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (exchange, symbol, open_time)
);
-- coverage: what the nightly batch knew of the candle's interval when it curated it (include/candlelake/
-- coverage.py): 'complete' (every instant covered by a feed, a replay or a backfill, so trades = 0 means a
-- quiet market) or 'partial' (some of it unseen: the values hold only the trades that were seen). NULL on
-- live and closed candles, which the read path judges against the `coverage` table itself.
ALTER TABLE candles ADD COLUMN IF NOT EXISTS coverage text CHECK (coverage IN ('complete', 'partial'));

-- Coverage: the intervals in which candlelake saw every trade of a market, per source (include/candlelake/
-- coverage.py). Written by the code paths that write the trades: a live feed's connected sessions (ended at
-- each disconnect, extended on every health beat), a replayed file's span (a data.binance.vision day or
-- month file spans its whole day or month; a capture spans its first to last trade), a REST backfill's
-- fetched range, the simulator's run. One row per (exchange, symbol, source, started_at): recording the same
-- interval again (a second replay of a file) changes nothing. Overlaps are fine; readers take the union.
CREATE TABLE IF NOT EXISTS coverage (
    exchange    text        NOT NULL,
    symbol      text        NOT NULL,
    source      text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('live', 'replay', 'backfill', 'simulator')),
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CHECK (ended_at >= started_at),
    PRIMARY KEY (exchange, symbol, source, started_at)
);
CREATE INDEX IF NOT EXISTS coverage_market ON coverage (exchange, symbol, ended_at);


-- One row per streaming micro-batch, written by the streaming job's query listener. A run that has
-- been idle since it started records batch_id = -1, refreshed while idle, so freshness is always known.
CREATE TABLE IF NOT EXISTS stream_progress (
    query_name                  text        NOT NULL,
    run_id                      text        NOT NULL,
    batch_id                    bigint      NOT NULL,
    batch_time                  timestamptz NOT NULL,
    num_input_rows              bigint      NOT NULL,
    input_rows_per_second       double precision,
    processed_rows_per_second   double precision,
    rows_dropped_by_watermark   bigint      NOT NULL DEFAULT 0,
    watermark                   timestamptz,
    duration_ms                 bigint,
    recorded_at                 timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (query_name, run_id, batch_id)
);
-- Added after the first release: Spark's per-phase durations of the batch (JSON object of milliseconds).
ALTER TABLE stream_progress ADD COLUMN IF NOT EXISTS durations jsonb;
CREATE INDEX IF NOT EXISTS stream_progress_recent ON stream_progress (query_name, recorded_at DESC);

-- The producer's counters, one row per running producer, refreshed every few seconds.
CREATE TABLE IF NOT EXISTS producer_health (
    producer         text        PRIMARY KEY,
    source           text        NOT NULL,
    pid              integer,
    started_at       timestamptz NOT NULL,
    heartbeat_at     timestamptz NOT NULL,
    received         bigint      NOT NULL DEFAULT 0,
    produced         bigint      NOT NULL DEFAULT 0,
    rejected         bigint      NOT NULL DEFAULT 0,
    duplicates       bigint      NOT NULL DEFAULT 0,
    delivery_failures bigint     NOT NULL DEFAULT 0,
    last_trade_time  jsonb       NOT NULL DEFAULT '{}'::jsonb
);

-- Added with the live connectors: gaps found and filled, reconnects, price points, the last price seen.
ALTER TABLE producer_health ADD COLUMN IF NOT EXISTS gaps bigint NOT NULL DEFAULT 0;
ALTER TABLE producer_health ADD COLUMN IF NOT EXISTS missing_ids bigint NOT NULL DEFAULT 0;
ALTER TABLE producer_health ADD COLUMN IF NOT EXISTS backfilled bigint NOT NULL DEFAULT 0;
ALTER TABLE producer_health ADD COLUMN IF NOT EXISTS reconnects bigint NOT NULL DEFAULT 0;
ALTER TABLE producer_health ADD COLUMN IF NOT EXISTS prices bigint NOT NULL DEFAULT 0;
ALTER TABLE producer_health ADD COLUMN IF NOT EXISTS last_price jsonb NOT NULL DEFAULT '{}'::jsonb;

-- The gap ledger (include/candlelake/ingest/gaps.py): every trade-id discontinuity per market and every
-- interval a feed had no connection, with its cause. Id gaps stay 'open' until the backfill has fetched
-- them from the exchange ('filled'), or found that some ids do not exist there ('unfillable', with how
-- many in not_found); disconnect intervals are 'recorded' as they happen.
CREATE TABLE IF NOT EXISTS trade_gaps (
    gap_id          bigserial   PRIMARY KEY,
    exchange        text        NOT NULL,
    symbol          text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('trade_ids', 'delivery', 'disconnect')),
    first_id        bigint,
    last_id         bigint,
    started_at      timestamptz,
    ended_at        timestamptz,
    cause           text        NOT NULL,
    source          text        NOT NULL,
    status          text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'filled', 'unfillable', 'recorded')),
    detected_at     timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz,
    filled          bigint,
    not_found       bigint,
    attempts        integer     NOT NULL DEFAULT 0,
    last_attempt_at timestamptz,
    note            text,
    CHECK ((kind = 'disconnect') = (first_id IS NULL)),
    CHECK (first_id IS NULL OR last_id >= first_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS trade_gaps_range ON trade_gaps (exchange, symbol, kind, first_id, last_id)
    WHERE first_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS trade_gaps_open ON trade_gaps (detected_at) WHERE status = 'open';

-- The covered part of [t0, t1) for one market: the union of its coverage intervals, less the id gaps whose
-- times are known and that no backfill closed. One multirange, so "is this bucket covered" is a single
-- containment test (`market_coverage(...) @> tstzrange(open, close)`).
CREATE OR REPLACE FUNCTION market_coverage(ex text, sy text, t0 timestamptz, t1 timestamptz)
RETURNS tstzmultirange LANGUAGE sql STABLE AS $fn$
    SELECT (coalesce((SELECT range_agg(tstzrange(c.started_at, c.ended_at, '[)'))
                        FROM coverage c
                       WHERE c.exchange = ex AND c.symbol = sy AND c.ended_at > t0 AND c.started_at < t1),
                     '{}'::tstzmultirange)
          - coalesce((SELECT range_agg(tstzrange(g.started_at, g.ended_at, '[]'))
                        FROM trade_gaps g
                       WHERE g.exchange = ex AND g.symbol = sy AND g.kind <> 'disconnect'
                         AND g.status IN ('open', 'unfillable')
                         AND g.started_at IS NOT NULL AND g.ended_at IS NOT NULL
                         AND g.ended_at >= t0 AND g.started_at < t1),
                     '{}'::tstzmultirange))
           * tstzmultirange(tstzrange(t0, t1, '[)'))
$fn$;

-- The highest trade id a live producer has sent per market, so a restarted producer knows which ids it
-- missed while it was down.
CREATE TABLE IF NOT EXISTS ingest_positions (
    exchange      text        NOT NULL,
    symbol        text        NOT NULL,
    last_trade_id bigint      NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (exchange, symbol)
);

-- Every health check the platform_health DAG (and later the supervisor) runs.
CREATE TABLE IF NOT EXISTS health_checks (
    id          bigserial   PRIMARY KEY,
    run_id      text        NOT NULL,
    component   text        NOT NULL,
    healthy     boolean     NOT NULL,
    detail      text        NOT NULL,
    checked_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS health_checks_recent ON health_checks (component, checked_at DESC);

-- Rollups: candles at any bucket are served from `candles` by include/candlelake/rollups.py. So that a
-- year at 1d or 1w does not aggregate half a million base rows per read, the same aggregates are kept
-- pre-computed at 5 minutes, 15 minutes, 1 hour and 1 day (bucket_seconds 300, 900, 3600, 86400; each
-- level built from the one before, which divides it), always in step with
-- `candles`: statement-level triggers recompute every bucket an INSERT, UPDATE (the stream's upsert)
-- or DELETE touched. A bucket is recomputed from its parts, never incremented, so replaying an upsert
-- leaves the rollups as they were, exactly like the base rows.
-- open/high/low/close are over parts with trades only (NULL when none: empty intervals are filled on
-- read); base_rows counts the stored base candles inside; state_rank is the weakest part's state
-- (0 live, 1 closed, 2 curated).
CREATE TABLE IF NOT EXISTS candle_rollups (
    exchange                text        NOT NULL,
    symbol                  text        NOT NULL,
    bucket_seconds          integer     NOT NULL,
    open_time               timestamptz NOT NULL,
    open                    numeric,
    high                    numeric,
    low                     numeric,
    close                   numeric,
    volume                  numeric     NOT NULL,
    quote_volume            numeric     NOT NULL,
    trades                  bigint      NOT NULL,
    taker_buy_volume        numeric     NOT NULL,
    taker_buy_quote_volume  numeric     NOT NULL,
    base_rows               integer     NOT NULL,
    state_rank              smallint    NOT NULL,
    PRIMARY KEY (exchange, symbol, bucket_seconds, open_time)
);

-- The previous close before a requested range: the last base candle that has trades.
CREATE INDEX IF NOT EXISTS candles_with_trades ON candles (exchange, symbol, open_time) WHERE trades > 0;
-- The stream closes live candles as its watermark passes them (sinks/postgres_candles.CLOSE_LIVE_SQL):
-- only the last minutes of each market are live, so this index stays a few pages.
CREATE INDEX IF NOT EXISTS candles_live ON candles (close_time) WHERE state = 'live';

-- Recompute the rollup buckets of size `lvl` seconds starting at ts[i] for market (ex[i], sy[i]), from
-- the base candles (src = 0) or from the rollups of size src (src divides lvl).
CREATE OR REPLACE FUNCTION candle_rollups_rebuild(lvl integer, src integer, ex text[], sy text[], ts timestamptz[])
RETURNS void LANGUAGE plpgsql
-- Freshly written rollup rows have no statistics yet; a sequential scan per key would make a large
-- COPY quadratic. Every lookup here is by primary-key prefix, so the indexes are always right.
SET enable_seqscan = off
AS $fn$
BEGIN
    -- LATERAL: one primary-key range scan per bucket. A plain join lets the planner, blind to the
    -- array parameters, loop over every base row of the market for every bucket (quadratic on COPY).
    IF src = 0 THEN
        INSERT INTO candle_rollups
        SELECT k.exchange, k.symbol, lvl, k.t, a.open, a.high, a.low, a.close, a.volume, a.quote_volume, a.trades,
               a.taker_buy_volume, a.taker_buy_quote_volume, a.base_rows, a.state_rank
          FROM unnest(ex, sy, ts) AS k(exchange, symbol, t)
         CROSS JOIN LATERAL (
        SELECT
               (array_agg(c.open ORDER BY c.open_time) FILTER (WHERE c.trades > 0))[1] AS open,
               max(c.high) FILTER (WHERE c.trades > 0) AS high,
               min(c.low) FILTER (WHERE c.trades > 0) AS low,
               (array_agg(c.close ORDER BY c.open_time DESC) FILTER (WHERE c.trades > 0))[1] AS close,
               sum(c.volume) AS volume, sum(c.quote_volume) AS quote_volume, sum(c.trades) AS trades,
               sum(c.taker_buy_volume) AS taker_buy_volume, sum(c.taker_buy_quote_volume) AS taker_buy_quote_volume,
               count(*) AS base_rows,
               min(CASE c.state WHEN 'curated' THEN 2 WHEN 'closed' THEN 1 ELSE 0 END) AS state_rank
          FROM candles c
         WHERE c.exchange = k.exchange AND c.symbol = k.symbol
           AND c.open_time >= k.t AND c.open_time < k.t + make_interval(secs => lvl)) a
         WHERE a.base_rows > 0
        ON CONFLICT (exchange, symbol, bucket_seconds, open_time) DO UPDATE SET
               open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
               volume = EXCLUDED.volume, quote_volume = EXCLUDED.quote_volume, trades = EXCLUDED.trades,
               taker_buy_volume = EXCLUDED.taker_buy_volume, taker_buy_quote_volume = EXCLUDED.taker_buy_quote_volume,
               base_rows = EXCLUDED.base_rows, state_rank = EXCLUDED.state_rank;
    ELSE
        INSERT INTO candle_rollups
        SELECT k.exchange, k.symbol, lvl, k.t, a.open, a.high, a.low, a.close, a.volume, a.quote_volume, a.trades,
               a.taker_buy_volume, a.taker_buy_quote_volume, a.base_rows, a.state_rank
          FROM unnest(ex, sy, ts) AS k(exchange, symbol, t)
         CROSS JOIN LATERAL (
        SELECT
               (array_agg(c.open ORDER BY c.open_time) FILTER (WHERE c.trades > 0))[1] AS open,
               max(c.high) FILTER (WHERE c.trades > 0) AS high,
               min(c.low) FILTER (WHERE c.trades > 0) AS low,
               (array_agg(c.close ORDER BY c.open_time DESC) FILTER (WHERE c.trades > 0))[1] AS close,
               sum(c.volume) AS volume, sum(c.quote_volume) AS quote_volume, sum(c.trades) AS trades,
               sum(c.taker_buy_volume) AS taker_buy_volume, sum(c.taker_buy_quote_volume) AS taker_buy_quote_volume,
               coalesce(sum(c.base_rows), 0) AS base_rows,
               min(c.state_rank) AS state_rank
          FROM candle_rollups c
         WHERE c.exchange = k.exchange AND c.symbol = k.symbol AND c.bucket_seconds = src
           AND c.open_time >= k.t AND c.open_time < k.t + make_interval(secs => lvl)) a
         WHERE a.base_rows > 0
        ON CONFLICT (exchange, symbol, bucket_seconds, open_time) DO UPDATE SET
               open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
               volume = EXCLUDED.volume, quote_volume = EXCLUDED.quote_volume, trades = EXCLUDED.trades,
               taker_buy_volume = EXCLUDED.taker_buy_volume, taker_buy_quote_volume = EXCLUDED.taker_buy_quote_volume,
               base_rows = EXCLUDED.base_rows, state_rank = EXCLUDED.state_rank;
    END IF;
    -- Buckets whose parts are all gone (a DELETE on candles) go too: found by key, removed by ctid.
    DELETE FROM candle_rollups
     WHERE ctid = ANY (ARRAY(
           SELECT r.ctid
             FROM unnest(ex, sy, ts) AS k(exchange, symbol, t)
            CROSS JOIN LATERAL (
                  SELECT ctid FROM candle_rollups r
                   WHERE r.exchange = k.exchange AND r.symbol = k.symbol AND r.bucket_seconds = lvl
                     AND r.open_time = k.t) r
            WHERE NOT EXISTS (
                  SELECT 1 FROM candles c
                   WHERE c.exchange = k.exchange AND c.symbol = k.symbol
                     AND c.open_time >= k.t AND c.open_time < k.t + make_interval(secs => lvl))));
END
$fn$;

-- Statement-level trigger body: `changed` is the transition table (new rows, or old rows on DELETE).
CREATE OR REPLACE FUNCTION candle_rollups_refresh() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    lvl integer;
    src integer := 0;
    ex text[];
    sy text[];
    ts timestamptz[];
BEGIN
    -- Writers of the same market take turns, so each recomputation sees every committed base row:
    -- two overlapping transactions cannot both miss each other's candles.
    PERFORM pg_advisory_xact_lock(hashtextextended(m.exchange || ':' || m.symbol, 0))
       FROM (SELECT DISTINCT exchange, symbol FROM changed ORDER BY 1, 2) m;
    FOREACH lvl IN ARRAY ARRAY[300, 900, 3600, 86400] LOOP
        -- In market and time order, so that the rows of a market's range lie together on disk.
        SELECT array_agg(d.exchange ORDER BY d.exchange, d.symbol, d.t),
               array_agg(d.symbol ORDER BY d.exchange, d.symbol, d.t),
               array_agg(d.t ORDER BY d.exchange, d.symbol, d.t) INTO ex, sy, ts
          FROM (SELECT DISTINCT exchange, symbol, date_bin(make_interval(secs => lvl), open_time, 'epoch') AS t
                  FROM changed) d;
        IF ex IS NULL THEN
            RETURN NULL;
        END IF;
        PERFORM candle_rollups_rebuild(lvl, src, ex, sy, ts);
        src := lvl;
    END LOOP;
    RETURN NULL;
END
$fn$;

CREATE OR REPLACE TRIGGER candles_rollups_insert AFTER INSERT ON candles
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION candle_rollups_refresh();
CREATE OR REPLACE TRIGGER candles_rollups_update AFTER UPDATE ON candles
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION candle_rollups_refresh();
CREATE OR REPLACE TRIGGER candles_rollups_delete AFTER DELETE ON candles
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION candle_rollups_refresh();

-- Candles written before the rollups (or one of their levels) existed: build the missing levels once,
-- each from the one before it. A no-op once every level has rows: the rollups of a market are written
-- in one transaction, so one market's levels stand for all (two primary-key probes, no scan).
DO $do$
DECLARE
    lvl integer;
    src integer := 0;
    ex text[];
    sy text[];
    ts timestamptz[];
    market record;
BEGIN
    SELECT r.exchange, r.symbol INTO market FROM candle_rollups r LIMIT 1;
    FOREACH lvl IN ARRAY ARRAY[300, 900, 3600, 86400] LOOP
        IF market IS NULL OR NOT EXISTS (
               SELECT 1 FROM candle_rollups r
                WHERE r.exchange = market.exchange AND r.symbol = market.symbol AND r.bucket_seconds = lvl) THEN
            SELECT array_agg(d.exchange ORDER BY d.exchange, d.symbol, d.t),
                   array_agg(d.symbol ORDER BY d.exchange, d.symbol, d.t),
                   array_agg(d.t ORDER BY d.exchange, d.symbol, d.t) INTO ex, sy, ts
              FROM (SELECT DISTINCT exchange, symbol, date_bin(make_interval(secs => lvl), open_time, 'epoch') AS t
                      FROM candles) d;
            IF ex IS NOT NULL THEN
                PERFORM candle_rollups_rebuild(lvl, src, ex, sy, ts);
            END IF;
        END IF;
        src := lvl;
    END LOOP;
END
$do$;

-- TRUNCATE fires no row or transition triggers: empty the rollups with the base table.
CREATE OR REPLACE FUNCTION candle_rollups_clear() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM candle_rollups;
    RETURN NULL;
END
$fn$;
CREATE OR REPLACE TRIGGER candles_rollups_truncate AFTER TRUNCATE ON candles
    FOR EACH STATEMENT EXECUTE FUNCTION candle_rollups_clear();

-- ==== The nightly chain and the supervisor (Airflow DAGs; docs/orchestration.md) ====================

-- One row per compaction of one exchange's UTC day (include/candlelake/lake/compaction.py): the
-- streaming job's small files (bronze) rewritten into the curated area at a target file size.
-- status: running (started, or killed before it finished), switched (the new manifest is in place),
-- skipped (nothing new since the last switch), failed (a check failed; the old manifest stays).
CREATE TABLE IF NOT EXISTS lake_compactions (
    compaction_id      bigserial   PRIMARY KEY,
    run_id             text        NOT NULL,
    exchange           text        NOT NULL,
    trade_date         date        NOT NULL,
    status             text        NOT NULL CHECK (status IN ('running', 'switched', 'skipped', 'failed')),
    started_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    files_before       integer,
    bytes_before       bigint,
    rows_before        bigint,
    duplicates_dropped bigint,
    files_after        integer,
    bytes_after        bigint,
    rows_after         bigint,
    checksum           text,
    covered_batch      bigint,
    seconds            double precision,
    note               text
);
CREATE INDEX IF NOT EXISTS lake_compactions_day ON lake_compactions (exchange, trade_date, started_at DESC);

-- Every Great Expectations validation (include/candlelake/quality/): one row per suite and day.
-- fingerprint identifies the data validated (the staged candles' checksum), so the load publishes
-- exactly what passed.
CREATE TABLE IF NOT EXISTS quality_runs (
    quality_id     bigserial   PRIMARY KEY,
    run_id         text        NOT NULL,
    exchange       text        NOT NULL,
    trade_date     date        NOT NULL,
    suite          text        NOT NULL,
    success        boolean     NOT NULL,
    evaluated      integer     NOT NULL,
    failed         integer     NOT NULL,
    rows_validated bigint,
    fingerprint    text,
    failures       jsonb       NOT NULL DEFAULT '[]'::jsonb,
    docs_path      text,
    validated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS quality_runs_day ON quality_runs (exchange, trade_date, suite, validated_at DESC);

-- Every publish of curated candles (include/candlelake/curated_load.py) and what it changed: candles
-- whose values differ from what PostgreSQL held before are the late-data corrections.
CREATE TABLE IF NOT EXISTS curated_loads (
    load_id      bigserial   PRIMARY KEY,
    run_id       text        NOT NULL,
    exchange     text        NOT NULL,
    trade_date   date        NOT NULL,
    fingerprint  text        NOT NULL,
    candles      bigint      NOT NULL,
    inserted     bigint      NOT NULL,
    changed      bigint      NOT NULL,
    unchanged    bigint      NOT NULL,
    loaded_at    timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE curated_loads ADD COLUMN IF NOT EXISTS withdrawn bigint NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS curated_loads_day ON curated_loads (exchange, trade_date, loaded_at DESC);
CREATE TABLE IF NOT EXISTS candle_corrections (
    load_id    bigint      NOT NULL REFERENCES curated_loads (load_id) ON DELETE CASCADE,
    exchange   text        NOT NULL,
    symbol     text        NOT NULL,
    open_time  timestamptz NOT NULL,
    was_state  text        NOT NULL,
    before     jsonb       NOT NULL,
    after      jsonb       NOT NULL,
    PRIMARY KEY (load_id, exchange, symbol, open_time)
);

-- Curated 1m candles compared with the exchange's own klines, per market and day.
CREATE TABLE IF NOT EXISTS kline_reconciliations (
    reconcile_id     bigserial   PRIMARY KEY,
    run_id           text        NOT NULL,
    exchange         text        NOT NULL,
    symbol           text        NOT NULL,
    trade_date       date        NOT NULL,
    source           text        NOT NULL,
    klines           integer     NOT NULL,
    candles          integer     NOT NULL,
    matched          integer     NOT NULL,
    mismatched       integer     NOT NULL,
    missing_candles  integer     NOT NULL,
    missing_klines   integer     NOT NULL,
    match_rate       double precision NOT NULL,
    examples         jsonb       NOT NULL DEFAULT '[]'::jsonb,
    checked_at       timestamptz NOT NULL DEFAULT now()
);
-- Minutes not judged against the exchange: partial candles (part of the minute unseen, so values are of the
-- trades seen) and klines of minutes nothing covered (no candle is right there). Neither is a mismatch.
ALTER TABLE kline_reconciliations ADD COLUMN IF NOT EXISTS partial integer NOT NULL DEFAULT 0;
ALTER TABLE kline_reconciliations ADD COLUMN IF NOT EXISTS not_covered integer NOT NULL DEFAULT 0;

-- What the user asked for (start_stream / stop_stream): the supervisor restarts only what should run.
CREATE TABLE IF NOT EXISTS stream_control (
    component   text        PRIMARY KEY CHECK (component IN ('producer', 'stream')),
    desired     text        NOT NULL CHECK (desired IN ('running', 'stopped')),
    options     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    changed_by  text,
    changed_at  timestamptz NOT NULL DEFAULT now()
);

-- Every check of the stream_supervisor DAG: what it saw and what it did.
CREATE TABLE IF NOT EXISTS supervisor_checks (
    check_id    bigserial   PRIMARY KEY,
    run_id      text        NOT NULL,
    component   text        NOT NULL CHECK (component IN ('producer', 'stream')),
    state       text        NOT NULL CHECK (state IN ('healthy', 'dead', 'stuck', 'stopped')),
    action      text        NOT NULL CHECK (action IN ('none', 'restarted', 'restart_failed')),
    detail      text        NOT NULL,
    metrics     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    checked_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS supervisor_checks_recent ON supervisor_checks (component, checked_at DESC);

-- Added with the supervisor: the Kafka offsets a micro-batch read up to ({"topic": {"partition": offset}}),
-- so the lag behind the topic's end is known without asking Spark.
ALTER TABLE stream_progress ADD COLUMN IF NOT EXISTS end_offsets jsonb;

-- Dead letters per UTC day, source and reason class (Rejection.code), for the dashboard, which reads
-- PostgreSQL only and cannot count the dead-letter topic. Each process adds the deltas it counted since
-- its last flush (dead_letter.DeadLetterSink.flush_counts); the topic stays the record of every dead letter.
CREATE TABLE IF NOT EXISTS dead_letter_counts (
    day          date        NOT NULL,
    source       text        NOT NULL,
    code         text        NOT NULL,
    count        bigint      NOT NULL,
    last_reason  text        NOT NULL,
    last_raw     text,       -- the latest example's raw input, its first 500 characters
    first_at     timestamptz,
    last_at      timestamptz,
    PRIMARY KEY (day, source, code)
);

-- Price points from the `prices` topic (Binance REST tickers, CoinGecko): prices without trades, so never
-- candles. NUMERIC without a scale keeps every digit CoinGecko sends (`precision=full`: up to 18
-- fractional digits for the smallest coins). A poll that repeats an unchanged point writes nothing.
CREATE TABLE IF NOT EXISTS price_points (
    exchange     text        NOT NULL,
    symbol       text        NOT NULL,
    source       text        NOT NULL,
    time         timestamptz NOT NULL,  -- when the source says the price held
    price        numeric     NOT NULL CHECK (price > 0),
    landed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (exchange, symbol, source, time)
);

-- Sliding-window KPIs of the price points, per market: windows of 1 minute every 10 seconds and of
-- 5 minutes every minute (candlelake.spark.prices.KPI_WINDOWS). The stream rewrites a window's row
-- whenever a point lands in it, so the row holds every point the stream has seen for it.
CREATE TABLE IF NOT EXISTS price_kpis (
    exchange        text        NOT NULL,
    symbol          text        NOT NULL,
    window_minutes  smallint    NOT NULL,
    window_start    timestamptz NOT NULL,
    window_end      timestamptz NOT NULL,
    avg_price       numeric     NOT NULL,
    min_price       numeric     NOT NULL,
    max_price       numeric     NOT NULL,
    spread          numeric     NOT NULL,  -- max - min
    points          integer     NOT NULL CHECK (points > 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (exchange, symbol, window_minutes, window_start),
    CHECK (min_price <= avg_price AND avg_price <= max_price AND spread = max_price - min_price)
);
CREATE INDEX IF NOT EXISTS price_kpis_recent ON price_kpis (exchange, symbol, window_minutes, window_end DESC);

-- Price-threshold alert rules, evaluated by the platform's scorer (candlelake.alerts): "tell me when
-- binance:BTCUSDT crosses above 100000". Created with `candlelake alerts add` or in the dashboard (through
-- the alert editor role, which may change this table and nothing else).
CREATE TABLE IF NOT EXISTS alert_rules (
    id          bigserial   PRIMARY KEY,
    exchange    text        NOT NULL,
    symbol      text        NOT NULL,
    direction   text        NOT NULL CHECK (direction IN ('above', 'below')),
    level       numeric     NOT NULL CHECK (level > 0),
    note        text        NOT NULL DEFAULT '',
    created_by  text        NOT NULL DEFAULT 'cli',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (exchange, symbol, direction, level)
);

-- Every alert the platform raised: anomalies of closed 1m candles (`type` 'anomaly': the z-score rules or
-- the learned detector) and crossed price rules (`type` 'price'). Each is also a record on the `alerts`
-- topic and, when CANDLELAKE_ALERT_WEBHOOK_URL is set, a POST to it. One row per market, time, type and
-- detector (or rule): a restarted scorer that scores a candle again raises nothing twice.
CREATE TABLE IF NOT EXISTS alerts (
    id              bigserial   PRIMARY KEY,
    type            text        NOT NULL CHECK (type IN ('anomaly', 'price')),
    exchange        text        NOT NULL,
    symbol          text        NOT NULL,
    at              timestamptz NOT NULL,  -- the candle's open time, or the minute the price crossed
    kind            text        NOT NULL,  -- pump, dump, price_move, volume_spike, unusual; above, below
    detector        text        NOT NULL,  -- rules, isolation_forest, or rule:<alert_rules.id>
    score           double precision,
    price           numeric,
    rule_id         bigint      REFERENCES alert_rules (id) ON DELETE SET NULL,
    model_version   text,
    features        jsonb       NOT NULL DEFAULT '{}',
    candle_closed_at timestamptz,          -- when the candle became closed: the start of the alert's delay
    raised_at       timestamptz NOT NULL DEFAULT now(),
    webhook_status  text,                  -- 'delivered', 'failed: <why>', NULL: no webhook configured
    published_at    timestamptz,           -- when the `alerts` topic acknowledged it; NULL: still to send
    UNIQUE (type, exchange, symbol, at, detector)
);
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS published_at timestamptz;
CREATE INDEX IF NOT EXISTS alerts_recent ON alerts (raised_at DESC);
CREATE INDEX IF NOT EXISTS alerts_market ON alerts (exchange, symbol, at DESC);
