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
