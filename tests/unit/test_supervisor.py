"""The supervisor's decisions (pure functions of what it observed), the lag arithmetic, the start
request's validation, and the command lines the producer and the streaming job are started with."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from candlelake.config import PRODUCER_SOURCES, Settings, load_settings
from candlelake.platform.stream_control import (
    Desired,
    ProducerOptions,
    StreamControlError,
    parse_options,
    producer_options,
    start_stream,
)
from candlelake.platform.supervisor import (
    DEAD,
    HEALTHY,
    STOPPED,
    STUCK,
    ProducerObservation,
    QueryObservation,
    StreamObservation,
    decide_producer,
    decide_stream,
    lag,
)
from candlelake.stream.progress import end_offsets_json, progress_row

pytestmark = pytest.mark.unit

RUN = Desired("producer", "running")
STOP = Desired("producer", "stopped", changed_by="manual__2026-12-01", changed_at=datetime(2026, 12, 1, 9, tzinfo=UTC))
COUNTERS = {"received": 120, "produced": 118, "rejected": 2, "delivery_failures": 0}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings({"CANDLELAKE_RUNTIME_DIR": str(tmp_path), "CANDLELAKE_PG_PORT": "1"})


# --- producer ------------------------------------------------------------------------------------


def test_a_stopped_producer_is_never_restarted_even_when_no_process_runs() -> None:
    decision = decide_producer(ProducerObservation(pid=None, uptime_s=None), STOP, 60)
    assert (decision.state, decision.restart) == (STOPPED, False)
    assert "set to stopped by manual__2026-12-01" in decision.detail


def test_a_stopped_producer_that_still_runs_is_reported_and_left_alone() -> None:
    decision = decide_producer(ProducerObservation(pid=42, uptime_s=5, heartbeat_age_s=1), STOP, 60)
    assert (decision.state, decision.restart) == (STOPPED, False)
    assert "pid 42 still runs" in decision.detail


def test_no_producer_process_is_dead_and_restarted() -> None:
    decision = decide_producer(ProducerObservation(pid=None, uptime_s=None), RUN, 60)
    assert (decision.state, decision.restart) == (DEAD, True)
    assert decision.metrics["pid"] is None


def test_a_producer_just_started_without_a_heartbeat_yet_is_given_time() -> None:
    decision = decide_producer(ProducerObservation(pid=7, uptime_s=20), RUN, 60)
    assert (decision.state, decision.restart) == (HEALTHY, False)
    assert "starting" in decision.detail


def test_a_producer_alive_longer_than_the_max_age_without_any_heartbeat_is_stuck() -> None:
    decision = decide_producer(ProducerObservation(pid=7, uptime_s=61), RUN, 60)
    assert (decision.state, decision.restart) == (STUCK, True)
    assert "without a heartbeat" in decision.detail


def test_a_producer_whose_heartbeat_is_older_than_the_max_age_is_stuck() -> None:
    obs = ProducerObservation(pid=7, uptime_s=3600, heartbeat_age_s=61, counters=COUNTERS)
    decision = decide_producer(obs, RUN, 60)
    assert (decision.state, decision.restart) == (STUCK, True)
    assert "last reported 61s ago (limit 60s)" in decision.detail


def test_a_fresh_heartbeat_is_healthy_and_its_counters_are_kept() -> None:
    obs = ProducerObservation(7, 3600, 4.2, "simulator@host", "simulator", COUNTERS)
    decision = decide_producer(obs, RUN, 60)
    assert (decision.state, decision.restart) == (HEALTHY, False)
    assert "118 trades produced, 2 rejected" in decision.detail
    assert decision.metrics["produced"] == 118 and decision.metrics["heartbeat_age_s"] == 4.2
    json.dumps(decision.metrics)  # what supervisor_checks.metrics stores


# --- streaming job -------------------------------------------------------------------------------


def query(name: str, age: float | None, **kw: Any) -> QueryObservation:
    return QueryObservation(name, age, **kw)


def test_a_stopped_stream_is_never_restarted() -> None:
    decision = decide_stream(StreamObservation(pid=None, uptime_s=None), Desired("stream", "stopped"), 180)
    assert (decision.state, decision.restart) == (STOPPED, False)


def test_no_streaming_job_process_is_dead_and_restarted() -> None:
    decision = decide_stream(StreamObservation(pid=None, uptime_s=None), RUN, 180)
    assert (decision.state, decision.restart) == (DEAD, True)


def test_a_streaming_job_starting_up_is_given_time() -> None:
    decision = decide_stream(StreamObservation(pid=9, uptime_s=40, queries=()), RUN, 180)
    assert (decision.state, decision.restart) == (HEALTHY, False)
    assert "no report yet from lake_trades, live_candles" in decision.detail


def test_a_query_without_any_report_since_a_start_longer_ago_than_the_max_age_is_stuck() -> None:
    obs = StreamObservation(pid=9, uptime_s=200, queries=(query("lake_trades", 3.0),))
    decision = decide_stream(obs, RUN, 180)
    assert (decision.state, decision.restart) == (STUCK, True)
    assert "live_candles (no report since the job started 200s ago)" in decision.detail
    assert "lake_trades" not in decision.detail.split(":", 1)[1]


def test_one_stale_query_makes_the_job_stuck_even_when_the_other_reports() -> None:
    obs = StreamObservation(pid=9, uptime_s=9000, queries=(query("lake_trades", 2.0), query("live_candles", 181.0)))
    decision = decide_stream(obs, RUN, 180)
    assert (decision.state, decision.restart) == (STUCK, True)
    assert "live_candles (last report 181s ago)" in decision.detail


def test_healthy_queries_report_rates_drops_and_lag() -> None:
    queries = (
        query("lake_trades", 4.0, batches=3, last_batch_id=12, input_rate=20.0, processing_rate=80.0, lag=0),
        query(
            "live_candles",
            0.5,
            batches=10,
            last_batch_id=301,
            input_rate=20.0,
            processing_rate=150.0,
            rows_dropped=3,
            lag=5,
        ),
    )
    decision = decide_stream(StreamObservation(9, 9000, queries), RUN, 180)
    assert (decision.state, decision.restart) == (HEALTHY, False)
    assert "live_candles: last report 0s ago, batch 301, 20.0 rows/s in, 150.0 rows/s processed" in decision.detail
    assert "3 rows dropped by the watermark in the last 10 batches" in decision.detail
    assert "5 records behind the topic's end" in decision.detail
    assert decision.metrics["queries"]["live_candles"]["lag"] == 5
    assert decision.metrics["falling_behind"] == []
    json.dumps(decision.metrics)


def test_a_query_falling_behind_is_reported_but_not_restarted() -> None:
    behind = query("live_candles", 1.0, batches=10, input_rate=5000.0, processing_rate=3000.0, lag=250_000)
    obs = StreamObservation(9, 9000, (query("lake_trades", 1.0, lag=0), behind))
    decision = decide_stream(obs, RUN, 180)
    assert (decision.state, decision.restart) == (HEALTHY, False)
    assert "falling behind in live_candles (reported, not restarted)" in decision.detail
    assert decision.metrics["falling_behind"] == ["live_candles"]


def test_falling_behind_needs_a_lag_and_a_slower_processing_rate() -> None:
    assert not query("q", 1, input_rate=10.0, processing_rate=5.0, lag=0).falling_behind
    assert not query("q", 1, input_rate=10.0, processing_rate=50.0, lag=900).falling_behind
    assert not query("q", 1, input_rate=None, processing_rate=5.0, lag=900).falling_behind
    assert query("q", 1, input_rate=10.0, processing_rate=5.0, lag=900).falling_behind


def test_an_unknown_lag_is_said_without_changing_the_state() -> None:
    obs = StreamObservation(9, 9000, (query("lake_trades", 1.0), query("live_candles", 1.0)), "broker down")
    decision = decide_stream(obs, RUN, 180)
    assert decision.state == HEALTHY
    assert "lag unknown: broker down" in decision.detail
    assert decision.metrics["lag_error"] == "broker down"


# --- lag -----------------------------------------------------------------------------------------


def test_lag_sums_what_each_partition_trails_the_topics_end() -> None:
    assert lag({"0": 100, "1": 50, "2": 7}, {0: 110, 1: 50, 2: 9}) == 12


def test_lag_counts_a_partition_without_an_offset_from_zero_and_never_goes_negative() -> None:
    assert lag({"0": 100}, {0: 90, 1: 30}) == 30


# --- end offsets of a batch, as recorded ---------------------------------------------------------


def spark_progress(sources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "lake_trades",
        "runId": "r",
        "batchId": 3,
        "timestamp": "2026-12-01T09:00:00.000Z",
        "numInputRows": 5,
        "sources": sources,
    }


def test_a_batchs_kafka_end_offsets_are_kept_per_topic_and_partition() -> None:
    kafka = {
        "description": "KafkaV2[Subscribe[trades]]",
        "startOffset": {"trades": {"0": 1, "1": 0}},
        "endOffset": {"trades": {"1": 4, "0": 3}},
        "latestOffset": {"trades": {"1": 4, "0": 3}},
    }
    row = progress_row(spark_progress([kafka]))
    assert row.end_offsets is not None and json.loads(row.end_offsets) == {"trades": {"0": 3, "1": 4}}


def test_end_offsets_given_as_text_are_parsed_and_sources_without_offsets_add_nothing() -> None:
    sources = [{"description": "rate"}, {"endOffset": json.dumps({"t2": {"0": 9}})}, {"endOffset": "not json"}]
    assert json.loads(end_offsets_json(spark_progress(sources)) or "") == {"t2": {"0": 9}}
    assert end_offsets_json(spark_progress([])) is None


# --- start request -------------------------------------------------------------------------------


def test_the_source_defaults_to_the_settings_and_symbols_to_the_sources_own(settings: Settings) -> None:
    assert parse_options(settings, None, None) == ProducerOptions(settings.producer_source, ())
    assert parse_options(settings, " Coinbase ", "") == ProducerOptions("coinbase", ())


def test_symbols_are_split_trimmed_and_deduplicated(settings: Settings) -> None:
    expected = ProducerOptions("binance", ("BTCUSDT", "ETHUSDT"))
    assert parse_options(settings, "binance", "BTCUSDT, ETHUSDT,BTCUSDT") == expected
    assert parse_options(settings, "binance", ["BTCUSDT", " ETHUSDT"]) == expected
    assert parse_options(settings, "coinbase", "BTC-USD") == ProducerOptions("coinbase", ("BTC-USD",))


def test_an_unknown_source_is_refused_with_the_known_ones(settings: Settings) -> None:
    with pytest.raises(StreamControlError, match="unknown source 'kraken'; choose one of: simulator, binance") as err:
        parse_options(settings, "kraken", None)
    assert all(source in str(err.value) for source in PRODUCER_SOURCES)


@pytest.mark.parametrize("bad", ["BTC USDT;DROP", "BTC$USDT", "-BTC", "a" * 41])
def test_a_malformed_symbol_is_refused_by_name(settings: Settings, bad: str) -> None:
    with pytest.raises(StreamControlError, match="malformed symbol"):
        parse_options(settings, "binance", [bad])


def test_too_many_symbols_or_non_text_ones_are_refused(settings: Settings) -> None:
    with pytest.raises(StreamControlError, match="at most 200"):
        parse_options(settings, "binance", [f"S{i}" for i in range(201)])
    with pytest.raises(StreamControlError, match="is not text"):
        parse_options(settings, "binance", [42])  # what a hand-written form could send


def test_the_producer_restarts_with_the_stored_options_or_the_settings_defaults(settings: Settings) -> None:
    stored = Desired("producer", "running", {"source": "coinbase", "symbols": ["BTC-USD"]})
    assert producer_options(settings, stored) == ProducerOptions("coinbase", ("BTC-USD",))
    assert producer_options(settings, Desired("producer", "running")) == ProducerOptions(settings.producer_source)


def test_a_bad_start_request_fails_before_anything_is_touched(settings: Settings) -> None:
    # PostgreSQL is configured on port 1 where nothing listens: reaching it would be a different error.
    with pytest.raises(StreamControlError, match="unknown source"):
        start_stream(settings, "nope", "BTCUSDT")
    with pytest.raises(StreamControlError, match="malformed symbol"):
        start_stream(settings, "binance", "BTC/USDT")


# --- command lines -------------------------------------------------------------------------------


def test_the_producer_command_line_takes_explicit_source_and_symbols(settings: Settings) -> None:
    from candlelake.platform.producer import ProducerComponent

    component = ProducerComponent(settings)
    default = component.argv()
    assert default[1:] == [
        str(settings.project_root / "jobs" / "produce.py"),
        "--source",
        "simulator",
        "--symbols",
        ",".join(settings.simulator_symbols),
        "--rate",
        str(settings.simulator_rate),
        "--seed",
        str(settings.simulator_seed),
    ]
    assert component.argv("simulator", ["AAAUSDT"])[4:6] == ["--symbols", "AAAUSDT"]
    assert component.argv("coinbase", ["BTC-USD"])[2:] == ["--source", "coinbase", "--symbols", "BTC-USD"]
    assert component.argv("binance")[2:] == ["--source", "binance"]  # the source's own default symbols


def test_airflow_gets_the_spark_connection_and_the_venv_first_on_path(settings: Settings) -> None:
    from candlelake.platform.airflow import airflow_env

    env = airflow_env(settings, base={"PATH": "/usr/bin:/bin"})
    connection = json.loads(env["AIRFLOW_CONN_CANDLELAKE_SPARK"])
    assert connection == {
        "conn_type": "spark",
        "host": settings.spark_master,
        "extra": {"deploy-mode": "client", "spark-binary": "spark-submit"},
    }
    assert env["PATH"].split(":") == [str(Path(sys.executable).parent), "/usr/bin", "/bin"]
