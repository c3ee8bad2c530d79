"""One place for every setting, read from the environment with safe local defaults.

Every variable is listed, with a comment, in `.env.example`. `load_settings()` also reads a `.env` file
at the project root when present (values already in the environment win), so a user can keep local
overrides without exporting them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from candlelake.exchanges import SOURCE_NAMES

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ConfigError(ValueError):
    """A setting has a value a person must fix; the message says which and how."""


def _read_dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip('"').strip("'")
    return values


# Where the live candles query keeps its streaming state (see jobs/stream_candles.py): on local disk in
# RocksDB, or in the driver's heap ("memory"), which is faster at high trade rates and needs memory.
CANDLES_STATE_STORES = ("rocksdb", "memory")
# Whether Spark generates Java code for the live candles query: "on", or "off" (interpreted), which
# lowers latency and CPU only with a short watermark (README: streaming).
CANDLES_CODEGEN = ("on", "off")
# The producer's Kafka client (candlelake.ingest.kafka_sinks) and its batch compression.
KAFKA_CLIENTS = ("kafka-python", "confluent")
KAFKA_COMPRESSIONS = ("lz4", "zstd", "gzip", "none")
# Where `candlelake produce` reads trades from: the registry's sources (candlelake.exchanges).
PRODUCER_SOURCES = SOURCE_NAMES


class _Env:
    """Typed reads of environment variables with errors a person understands."""

    def __init__(self, env: dict[str, str]) -> None:
        self._env = env

    def text(self, name: str, default: str) -> str:
        value = self._env.get(name, "")
        return value if value != "" else default

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        raw = self._env.get(name, "")
        if raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number") from None
        if value < minimum:
            raise ConfigError(f"{name}={value} must be at least {minimum}")
        return value

    def number(self, name: str, default: float, minimum: float = 0.0) -> float:
        raw = self._env.get(name, "")
        if raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number") from None
        if not value >= minimum:  # also rejects NaN
            raise ConfigError(f"{name}={raw} must be at least {minimum}")
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name, default).strip().lower()
        if value not in allowed:
            raise ConfigError(f"{name}={value!r} must be one of: {', '.join(allowed)}")
        return value

    def path(self, name: str, default: Path) -> Path:
        raw = self._env.get(name, "")
        path = Path(raw) if raw else default
        return path if path.is_absolute() else (PROJECT_ROOT / path)

    def items(self, name: str, default: list[str]) -> list[str]:
        raw = self._env.get(name, "")
        if raw == "":
            return list(default)
        return [item.strip() for item in raw.split(",") if item.strip()]


@dataclass(frozen=True)
class Settings:
    """All of candlelake's configuration. Build it with `load_settings()`."""

    project_root: Path
    runtime_dir: Path
    cache_dir: Path
    host: str

    # Kafka
    kafka_version: str
    kafka_port: int
    kafka_controller_port: int
    kafka_bootstrap: str
    trades_topic: str
    dead_letter_topic: str
    prices_topic: str
    price_kpis_topic: str
    # Rule thresholds of the anomaly detection (candlelake.analytics.rules.parse_rules reads them).
    anomaly_thresholds: str
    alerts_topic: str
    topic_partitions: int
    topic_retention_ms: int

    # PostgreSQL
    pg_port: int
    pg_bin_dir: str
    pg_superuser: str
    pg_database: str
    pg_user: str
    pg_password: str
    pg_reader_user: str
    pg_reader_password: str
    # The dashboard's second role: it may add and remove price alert rules, and change nothing else.
    pg_alerts_user: str
    pg_alerts_password: str
    airflow_db: str
    airflow_db_user: str
    airflow_db_password: str

    # Airflow
    airflow_port: int
    airflow_admin_user: str
    airflow_admin_password: str

    # Spark streaming job
    spark_master: str
    spark_ui_port: int
    lake_dir: Path
    checkpoint_dir: Path
    candle_interval: str
    watermark_delay: str
    trigger_interval: str
    stream_partitions: int
    candles_state_store: str
    candles_codegen: str
    spark_driver_memory: str

    # Producer
    producer_source: str
    simulator_symbols: list[str]
    simulator_rate: float
    simulator_seed: int
    health_interval_s: float
    producer_symbols: list[str]
    kafka_client: str
    kafka_compression: str
    # Exchange endpoints: live by default, a testnet or a local fake exchange by configuration.
    binance_ws_url: str
    binance_rest_url: str
    binance_usdm_ws_url: str
    binance_usdm_rest_url: str
    coinbase_ws_url: str
    coinbase_rest_url: str
    coingecko_url: str
    coingecko_api_key: str  # a demo key, sent as x-cg-demo-api-key; empty: the keyless public API
    coingecko_interval_s: float
    ws_watchdog_s: float
    ws_lifetime_s: float
    ws_overlap_s: float
    poll_interval_s: float
    gap_grace_s: float
    auto_backfill: bool

    # Dashboard, and the static HTTP server of the Data Docs site (the `reports` part)
    dashboard_port: int
    reports_port: int
    # Where browsers find the Data Docs site (`<reports_dir>/data_docs`): the dashboard's links start here.
    data_docs_url: str

    # Nightly batch and supervision (Airflow DAGs)
    curated_dir: Path
    reports_dir: Path
    nightly_at: str | None  # "HH:MM" UTC of the nightly compaction run, None: by hand only
    compaction_target_mb: int
    bronze_retention_days: int
    supervisor_producer_max_age_s: float
    supervisor_batch_max_age_s: float
    reconcile_max_mismatch_rate: float
    kline_files: str  # data.binance.vision kline files for reconcile_klines: a folder, glob or file; "" none

    # Market analytics: models trained nightly from curated candles, tracked in MLflow (its own database in
    # the platform's PostgreSQL, artifacts in a local folder) and served to the live scorer from there.
    mlflow_db: str
    mlflow_tracking_uri: str  # SQLAlchemy URL of the tracking and registry store; default: the mlflow_db
    mlflow_port: int
    mlflow_artifacts_dir: Path
    training_at: str | None  # "HH:MM" UTC of the nightly training run, None: by hand only
    training_days: int  # the curated history a training run learns from
    # The scorer: closed candles -> anomalies, prices -> crossed rules -> alerts (candlelake.alerts.service).
    alert_webhook_url: str  # "" : no webhook
    scorer_poll_s: float
    scorer_model_refresh_s: float

    extra: dict[str, str] = field(default_factory=dict)

    @property
    def logs_dir(self) -> Path:
        return self.runtime_dir / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.runtime_dir / "pids"

    @property
    def jars_dir(self) -> Path:
        return self.cache_dir / "jars"

    def pg_dsn(self, user: str | None = None, password: str | None = None, dbname: str | None = None) -> str:
        """A libpq connection string for the platform database (or another, by name)."""
        return (
            f"host={self.host} port={self.pg_port} dbname={dbname or self.pg_database} "
            f"user={user or self.pg_user} password={password if password is not None else self.pg_password}"
        )

    @property
    def pg_reader_dsn(self) -> str:
        return self.pg_dsn(self.pg_reader_user, self.pg_reader_password)

    @property
    def pg_alerts_dsn(self) -> str:
        return self.pg_dsn(self.pg_alerts_user, self.pg_alerts_password)

    @property
    def airflow_sqlalchemy_url(self) -> str:
        return (
            f"postgresql+psycopg2://{self.airflow_db_user}:{self.airflow_db_password}"
            f"@{self.host}:{self.pg_port}/{self.airflow_db}"
        )

    @property
    def airflow_url(self) -> str:
        return f"http://{self.host}:{self.airflow_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.host}:{self.dashboard_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"


def _default_pg_bin_dir() -> str:
    # Debian keeps the server binaries off PATH, one folder per major version; take the newest.
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0
    )
    return str(candidates[-1]) if candidates else ""


def _daily_at(name: str, text: str) -> str | None:
    """A daily UTC time setting: "HH:MM" (zero-padded) or "off"."""
    value = text.strip().lower()
    if value == "off":
        return None
    match = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", value)
    if not match:
        raise ConfigError(f"{name}={text!r}: the UTC time of the daily run as HH:MM (e.g. 00:00 or 02:30), or off")
    return value


def read_daily_at(name: str, default: str, env: dict[str, str] | None = None) -> str | None:
    """One daily-time variable alone (CANDLELAKE_NIGHTLY_AT, CANDLELAKE_TRAINING_AT), read as `load_settings`
    reads it (`.env` overlaid by the environment).

    For a DAG's schedule, which Airflow fixes when it parses the file: one variable, so that parsing
    neither reads nor validates any other setting (and fails only on this one)."""
    if env is None:
        env = {**_read_dotenv(PROJECT_ROOT / ".env"), **os.environ}
    return _daily_at(name, _Env(env).text(name, default))


def read_nightly_at(env: dict[str, str] | None = None) -> str | None:
    """CANDLELAKE_NIGHTLY_AT: when the nightly chain starts (default 00:00 UTC)."""
    return read_daily_at("CANDLELAKE_NIGHTLY_AT", "00:00", env)


def read_training_at(env: dict[str, str] | None = None) -> str | None:
    """CANDLELAKE_TRAINING_AT: when the models are trained (default 03:00 UTC, after the nightly chain)."""
    return read_daily_at("CANDLELAKE_TRAINING_AT", "03:00", env)


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read settings from `env` (default: `.env` file overlaid by the process environment)."""
    if env is None:
        env = {**_read_dotenv(PROJECT_ROOT / ".env"), **os.environ}
    e = _Env(env)
    host = e.text("CANDLELAKE_HOST", "127.0.0.1")
    reports_port = e.integer("CANDLELAKE_REPORTS_PORT", 8502, 1)
    kafka_port = e.integer("CANDLELAKE_KAFKA_PORT", 19092, 1)
    runtime_dir = e.path("CANDLELAKE_RUNTIME_DIR", PROJECT_ROOT / ".runtime")
    interval = e.text("CANDLELAKE_CANDLE_INTERVAL", "1 minute")
    if interval not in ("1 second", "1 minute"):
        raise ConfigError(f"CANDLELAKE_CANDLE_INTERVAL={interval!r}: the base interval is '1 second' or '1 minute'")
    pg_port = e.integer("CANDLELAKE_PG_PORT", 55432, 1)
    pg_user = e.text("CANDLELAKE_PG_USER", "candlelake")
    pg_password = e.text("CANDLELAKE_PG_PASSWORD", "candlelake")
    mlflow_db = e.text("CANDLELAKE_MLFLOW_DB", "mlflow")
    return Settings(
        project_root=PROJECT_ROOT,
        runtime_dir=runtime_dir,
        cache_dir=e.path("CANDLELAKE_CACHE_DIR", PROJECT_ROOT / ".cache"),
        host=host,
        kafka_version=e.text("CANDLELAKE_KAFKA_VERSION", "4.1.1"),
        kafka_port=kafka_port,
        kafka_controller_port=e.integer("CANDLELAKE_KAFKA_CONTROLLER_PORT", 19093, 1),
        kafka_bootstrap=e.text("CANDLELAKE_KAFKA_BOOTSTRAP", f"{host}:{kafka_port}"),
        trades_topic=e.text("CANDLELAKE_TRADES_TOPIC", "trades"),
        dead_letter_topic=e.text("CANDLELAKE_DEAD_LETTER_TOPIC", "trades.dead-letter"),
        prices_topic=e.text("CANDLELAKE_PRICES_TOPIC", "prices"),
        price_kpis_topic=e.text("CANDLELAKE_PRICE_KPIS_TOPIC", "prices.kpis"),
        anomaly_thresholds=e.text("CANDLELAKE_ANOMALY_THRESHOLDS", "return_z=4,volume_z=4"),
        alerts_topic=e.text("CANDLELAKE_ALERTS_TOPIC", "alerts"),
        topic_partitions=e.integer("CANDLELAKE_TOPIC_PARTITIONS", 3, 1),
        topic_retention_ms=e.integer("CANDLELAKE_TOPIC_RETENTION_MS", 7 * 24 * 3600 * 1000, 60_000),
        pg_port=pg_port,
        pg_bin_dir=e.text("CANDLELAKE_PG_BIN_DIR", _default_pg_bin_dir()),
        pg_superuser=e.text("CANDLELAKE_PG_SUPERUSER", "postgres"),
        pg_database=e.text("CANDLELAKE_PG_DATABASE", "candlelake"),
        pg_user=pg_user,
        pg_password=pg_password,
        pg_reader_user=e.text("CANDLELAKE_PG_READER_USER", "candlelake_reader"),
        pg_reader_password=e.text("CANDLELAKE_PG_READER_PASSWORD", "candlelake_reader"),
        pg_alerts_user=e.text("CANDLELAKE_PG_ALERTS_USER", "candlelake_alerts"),
        pg_alerts_password=e.text("CANDLELAKE_PG_ALERTS_PASSWORD", "candlelake_alerts"),
        airflow_db=e.text("CANDLELAKE_AIRFLOW_DB", "airflow"),
        airflow_db_user=e.text("CANDLELAKE_AIRFLOW_DB_USER", "airflow"),
        airflow_db_password=e.text("CANDLELAKE_AIRFLOW_DB_PASSWORD", "airflow"),
        airflow_port=e.integer("CANDLELAKE_AIRFLOW_PORT", 8080, 1),
        airflow_admin_user=e.text("CANDLELAKE_AIRFLOW_ADMIN_USER", "admin"),
        airflow_admin_password=e.text("CANDLELAKE_AIRFLOW_ADMIN_PASSWORD", "admin"),
        spark_master=e.text("CANDLELAKE_SPARK_MASTER", "local[2]"),
        spark_ui_port=e.integer("CANDLELAKE_SPARK_UI_PORT", 4040, 1),
        lake_dir=e.path("CANDLELAKE_LAKE_DIR", runtime_dir / "lake"),
        checkpoint_dir=e.path("CANDLELAKE_CHECKPOINT_DIR", runtime_dir / "checkpoints"),
        candle_interval=interval,
        watermark_delay=e.text("CANDLELAKE_WATERMARK_DELAY", "2 minutes"),
        trigger_interval=e.text("CANDLELAKE_TRIGGER_INTERVAL", "1 second"),
        stream_partitions=e.integer("CANDLELAKE_STREAM_PARTITIONS", 1, 1),
        candles_state_store=e.choice("CANDLELAKE_CANDLES_STATE_STORE", "rocksdb", CANDLES_STATE_STORES),
        candles_codegen=e.choice("CANDLELAKE_CANDLES_CODEGEN", "on", CANDLES_CODEGEN),
        spark_driver_memory=e.text("CANDLELAKE_SPARK_DRIVER_MEMORY", "1g"),
        producer_source=e.choice("CANDLELAKE_PRODUCER_SOURCE", "simulator", PRODUCER_SOURCES),
        simulator_symbols=e.items("CANDLELAKE_SIMULATOR_SYMBOLS", ["BTCUSDT", "ETHUSDT", "SOLUSDT"]),
        simulator_rate=e.number("CANDLELAKE_SIMULATOR_RATE", 20.0, 0.001),
        simulator_seed=e.integer("CANDLELAKE_SIMULATOR_SEED", 42),
        health_interval_s=e.number("CANDLELAKE_HEALTH_INTERVAL_S", 5.0, 0.1),
        producer_symbols=e.items("CANDLELAKE_PRODUCER_SYMBOLS", []),
        kafka_client=e.choice("CANDLELAKE_KAFKA_CLIENT", "kafka-python", KAFKA_CLIENTS),
        kafka_compression=e.choice("CANDLELAKE_KAFKA_COMPRESSION", "lz4", KAFKA_COMPRESSIONS),
        binance_ws_url=e.text("CANDLELAKE_BINANCE_WS_URL", "wss://stream.binance.com:9443"),
        binance_rest_url=e.text("CANDLELAKE_BINANCE_REST_URL", "https://api.binance.com"),
        binance_usdm_ws_url=e.text("CANDLELAKE_BINANCE_USDM_WS_URL", "wss://fstream.binance.com"),
        binance_usdm_rest_url=e.text("CANDLELAKE_BINANCE_USDM_REST_URL", "https://fapi.binance.com"),
        coinbase_ws_url=e.text("CANDLELAKE_COINBASE_WS_URL", "wss://ws-feed.exchange.coinbase.com"),
        coinbase_rest_url=e.text("CANDLELAKE_COINBASE_REST_URL", "https://api.exchange.coinbase.com"),
        coingecko_url=e.text("CANDLELAKE_COINGECKO_URL", "https://api.coingecko.com/api/v3"),
        coingecko_api_key=e.text("CANDLELAKE_COINGECKO_API_KEY", ""),
        coingecko_interval_s=e.number("CANDLELAKE_COINGECKO_INTERVAL_S", 30.0, 0.1),
        ws_watchdog_s=e.number("CANDLELAKE_WS_WATCHDOG_S", 30.0, 0.1),
        # Binance cuts every connection at 24 hours; rotate before, with the two overlapping.
        ws_lifetime_s=e.number("CANDLELAKE_WS_LIFETIME_S", 23.5 * 3600, 1.0),
        ws_overlap_s=e.number("CANDLELAKE_WS_OVERLAP_S", 10.0, 0.1),
        poll_interval_s=e.number("CANDLELAKE_POLL_INTERVAL_S", 10.0, 0.1),
        gap_grace_s=e.number("CANDLELAKE_GAP_GRACE_S", 5.0, 0.0),
        auto_backfill=e.choice("CANDLELAKE_AUTO_BACKFILL", "on", ("on", "off")) == "on",
        dashboard_port=e.integer("CANDLELAKE_DASHBOARD_PORT", 8501, 1),
        reports_port=reports_port,
        # Our own reports server by default; users who publish the site elsewhere point the links there.
        data_docs_url=e.text("CANDLELAKE_DATA_DOCS_URL", f"http://{host}:{reports_port}").rstrip("/"),
        curated_dir=e.path("CANDLELAKE_CURATED_DIR", e.path("CANDLELAKE_LAKE_DIR", runtime_dir / "lake") / "curated"),
        reports_dir=e.path("CANDLELAKE_REPORTS_DIR", runtime_dir / "reports"),
        nightly_at=read_nightly_at(env),
        compaction_target_mb=e.integer("CANDLELAKE_COMPACTION_TARGET_MB", 128, 1),
        bronze_retention_days=e.integer("CANDLELAKE_BRONZE_RETENTION_DAYS", 7, 0),
        supervisor_producer_max_age_s=e.number("CANDLELAKE_SUPERVISOR_PRODUCER_MAX_AGE_S", 60.0, 1.0),
        supervisor_batch_max_age_s=e.number("CANDLELAKE_SUPERVISOR_BATCH_MAX_AGE_S", 180.0, 1.0),
        reconcile_max_mismatch_rate=e.number("CANDLELAKE_RECONCILE_MAX_MISMATCH_RATE", 0.0, 0.0),
        kline_files=e.text("CANDLELAKE_KLINE_FILES", ""),
        mlflow_db=mlflow_db,
        mlflow_tracking_uri=e.text(
            "CANDLELAKE_MLFLOW_TRACKING_URI",
            f"postgresql+psycopg2://{pg_user}:{pg_password}@{host}:{pg_port}/{mlflow_db}",
        ),
        mlflow_port=e.integer("CANDLELAKE_MLFLOW_PORT", 5000, 1),
        mlflow_artifacts_dir=e.path("CANDLELAKE_MLFLOW_ARTIFACTS_DIR", runtime_dir / "mlflow-artifacts"),
        training_at=read_training_at(env),
        training_days=e.integer("CANDLELAKE_TRAINING_DAYS", 30, 1),
        alert_webhook_url=e.text("CANDLELAKE_ALERT_WEBHOOK_URL", ""),
        scorer_poll_s=e.number("CANDLELAKE_SCORER_POLL_S", 1.0, 0.05),
        scorer_model_refresh_s=e.number("CANDLELAKE_SCORER_MODEL_REFRESH_S", 300.0, 1.0),
    )
