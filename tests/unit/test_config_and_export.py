import csv
import io
import json
from datetime import UTC, datetime

import pytest

from candlelake.config import ConfigError, load_settings
from candlelake.serve.candles_export import COLUMNS, ExportError, make_request, parse_time, write

pytestmark = pytest.mark.unit


def test_defaults_are_local_and_safe():
    s = load_settings({})
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.pg_port == 55432 and s.candle_interval == "1 minute"
    assert s.runtime_dir.name == ".runtime" and s.runtime_dir.is_absolute()
    assert s.candles_state_store == "rocksdb"
    assert load_settings({"CANDLELAKE_CANDLES_STATE_STORE": " Memory "}).candles_state_store == "memory"
    assert s.candles_codegen == "on" and load_settings({"CANDLELAKE_CANDLES_CODEGEN": " Off"}).candles_codegen == "off"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CANDLELAKE_PG_PORT": "fivefive"}, "CANDLELAKE_PG_PORT='fivefive' is not a whole number"),
        ({"CANDLELAKE_SIMULATOR_RATE": "nan"}, "must be at least"),
        ({"CANDLELAKE_CANDLE_INTERVAL": "2 minutes"}, "base interval"),
        ({"CANDLELAKE_CANDLES_STATE_STORE": "redis"}, "'redis' must be one of: rocksdb, memory"),
        ({"CANDLELAKE_CANDLES_CODEGEN": "yes"}, "CANDLELAKE_CANDLES_CODEGEN='yes' must be one of: on, off"),
        ({"CANDLELAKE_NIGHTLY_AT": "2:30"}, r"NIGHTLY_AT='2:30': .* as HH:MM \(e.g. 00:00 or 02:30\), or off"),
        ({"CANDLELAKE_NIGHTLY_AT": "24:00"}, "CANDLELAKE_NIGHTLY_AT='24:00'"),
        ({"CANDLELAKE_NIGHTLY_AT": "never"}, "CANDLELAKE_NIGHTLY_AT='never'"),
        ({"CANDLELAKE_REPORTS_PORT": "0"}, "CANDLELAKE_REPORTS_PORT=0 must be at least 1"),
    ],
)
def test_bad_settings_get_a_message_naming_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_data_docs_url_is_the_reports_server_unless_set():
    s = load_settings({})
    assert (s.reports_port, s.data_docs_url) == (8502, "http://127.0.0.1:8502")
    moved = load_settings({"CANDLELAKE_HOST": "10.0.0.5", "CANDLELAKE_REPORTS_PORT": "9502"})
    assert moved.data_docs_url == "http://10.0.0.5:9502"
    # Hosted elsewhere: the dashboard's links follow the setting, whatever the local server's port; a
    # trailing slash is dropped so that links never hold `//`.
    elsewhere = {"CANDLELAKE_DATA_DOCS_URL": "https://docs.internal/candlelake/", "CANDLELAKE_REPORTS_PORT": "9502"}
    assert load_settings(elsewhere).data_docs_url == "https://docs.internal/candlelake"
    assert load_settings({"CANDLELAKE_DATA_DOCS_URL": ""}).data_docs_url == s.data_docs_url


def test_times_without_zone_are_utc():
    assert parse_time("2026-11-22T10:00", "--start") == datetime(2026, 11, 22, 10, tzinfo=UTC)
    assert parse_time("2026-11-22T12:00:00+02:00", "--start") == datetime(2026, 11, 22, 10, tzinfo=UTC)
    assert parse_time("2026-11-22", "--start") == datetime(2026, 11, 22, tzinfo=UTC)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("x", "Y", "1m", "yesterday", "2026-01-01"), "--start 'yesterday' is not an ISO 8601 time"),
        (("x", "Y", "1m", "2026-01-02", "2026-01-01"), "must be after --start"),
        (("x", "Y", "7q", "2026-01-01", "2026-01-02"), "interval '7q'"),
    ],
)
def test_bad_candle_requests_are_explained(args, message):
    with pytest.raises(ExportError, match=message):
        make_request(*args)


# Two rows as candlelake.serve.rollups returns them: a partial candle with trades, then a quiet covered one.
ROWS: list[tuple[object, ...]] = [
    (
        "2026-01-01T10:00:00Z",
        "1.5",
        "2",
        "1",
        "1.75",
        "3",
        "5",
        4,
        "1",
        "1.75",
        "1.6666666667",
        "curated",
        "false",
        "partial",
    ),
    ("2026-01-01T11:00:00Z", "1.75", "1.75", "1.75", "1.75", "0", "0", 0, "0", "0", None, "closed", "true", "complete"),
]


def test_the_export_says_each_candles_coverage_in_csv_and_json():
    assert COLUMNS[-3:] == ("state", "filled", "coverage")
    out = io.StringIO()
    write(ROWS, "csv", out)
    parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(parsed[0]) == list(COLUMNS)
    assert [(r["open_time"], r["trades"], r["coverage"]) for r in parsed] == [
        ("2026-01-01T10:00:00Z", "4", "partial"),
        ("2026-01-01T11:00:00Z", "0", "complete"),
    ]
    out = io.StringIO()
    write(ROWS, "json", out)
    assert [(r["filled"], r["coverage"]) for r in json.loads(out.getvalue())] == [
        ("false", "partial"),
        ("true", "complete"),
    ]
    with pytest.raises(ExportError, match="format 'xml' is not one of csv, json"):
        write(ROWS, "xml", io.StringIO())
