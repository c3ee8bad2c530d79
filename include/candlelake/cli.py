"""`candlelake`: the command-line front door (up, down, status, install, produce, replay, backfill, gaps, candles,
sql, alerts, score).

Every failure a person can fix is reported in one or two lines naming the part and what to do; a
traceback is shown only with --debug.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from candlelake.config import PRODUCER_SOURCES, ConfigError, Settings, load_settings
from candlelake.exchanges import EXCHANGE_NAMES
from candlelake.util import first_line

if TYPE_CHECKING:
    from candlelake.platform.base import Component, Status


def _say(message: str) -> None:
    print(message, flush=True)


def _parts(settings: Settings, only: str | None, skip: str | None) -> list[Component]:
    from candlelake.platform import orchestrator

    parts = orchestrator.select(orchestrator.components(settings), _names(only))
    skipped = _names(skip) or set()
    return [p for p in parts if p.name not in skipped]


def _names(text: str | None) -> set[str] | None:
    return {n.strip() for n in text.split(",") if n.strip()} if text else None


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from candlelake.platform import orchestrator, python_deps

    parts = _parts(settings, args.only, args.skip)
    started = time.monotonic()
    _say(f"candlelake up: {', '.join(p.name for p in parts)}")
    python_deps.ensure(settings, _say)
    statuses = orchestrator.up(parts, _say)
    _say(f"\nall {len(statuses)} parts healthy in {time.monotonic() - started:.0f}s\n")
    _print_status(statuses)
    hints = [p.login_hint() for p in parts if p.login_hint()]
    for hint in hints:
        _say(hint)
    _say(f"logs: {settings.logs_dir}   stop: candlelake down")
    return 0


def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    from candlelake.platform import orchestrator

    orchestrator.down(_parts(settings, args.only, None), _say)
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from candlelake.platform import orchestrator

    statuses = orchestrator.status(_parts(settings, args.only, None))
    if args.json:
        print(json.dumps([s.__dict__ for s in statuses], indent=1))
    else:
        _print_status(statuses)
    return 0 if all(s.healthy for s in statuses) else 1


def _print_status(statuses: list[Status]) -> None:
    _say(f"{'part':<22}{'state':<22}{'pid':>8}  {'ports':<12}{'RSS MiB':>8}  url")
    for s in statuses:
        ports = ",".join(str(p) for p in s.ports) or "-"
        pid = str(s.pid) if s.pid else "-"
        rss = f"{s.rss_kib / 1024:.0f}" if s.rss_kib else "-"
        _say(f"{s.name:<22}{s.detail:<22}{pid:>8}  {ports:<12}{rss:>8}  {' '.join(s.urls) or '-'}")


def cmd_install(settings: Settings, args: argparse.Namespace) -> int:
    from candlelake.platform import orchestrator, python_deps

    python_deps.ensure(settings, _say)
    orchestrator.install(_parts(settings, args.only, None), _say)
    _say("installed")
    return 0


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from candlelake.runs import producer

    source = args.source or settings.producer_source
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()] if args.symbols else None
    if source == "simulator" and symbols is None:
        symbols = settings.simulator_symbols
    rate = args.rate if args.rate is not None else settings.simulator_rate
    if not rate > 0:
        raise ConfigError(f"--rate {rate}: give a positive number of trades per second")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: give a positive number of trades")
    sent = producer.run(
        settings,
        source,
        symbols,
        rate,
        args.seed if args.seed is not None else settings.simulator_seed,
        limit=args.limit,
    )
    _say(f"produced {sent} trades")
    return 0


def cmd_backfill(settings: Settings, args: argparse.Namespace) -> int:
    from candlelake.runs import backfill

    summary = backfill.run(settings, args.exchange, args.symbol, args.gap_id, _say)
    return 0 if summary.failed == 0 else 1


def cmd_gaps(settings: Settings, args: argparse.Namespace) -> int:
    from candlelake.ingest.gaps import GapLedger

    ledger = GapLedger(settings.pg_dsn())
    try:
        rows = list(ledger.summary())
    finally:
        ledger.close_connection()
    if not rows:
        _say("the gap ledger is empty: no trade-id gap or disconnect recorded")
        return 0
    _say(f"{'exchange':<14}{'symbol':<14}{'kind':<12}{'status':<12}{'rows':>6}{'ids':>12}")
    for r in rows:
        _say(f"{r['exchange']:<14}{r['symbol']:<14}{r['kind']:<12}{r['status']:<12}{r['rows']:>6}{r['ids']:>12}")
    return 0


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from candlelake.runs import replay

    if args.chain_timeout is not None and not args.chain_timeout > 0:
        raise ConfigError(f"--chain-timeout {args.chain_timeout:g}: give a positive number of minutes")
    timeout_s = 60.0 * (args.chain_timeout if args.chain_timeout is not None else 60.0)
    return replay.run(
        settings, args.path, args.exchange, args.symbol, args.rate, _say, chain=args.chain, chain_timeout_s=timeout_s
    )


def cmd_candles(settings: Settings, args: argparse.Namespace) -> int:
    from candlelake.serve import candles_export

    base_seconds = 1 if settings.candle_interval == "1 second" else 60
    req = candles_export.make_request(args.exchange, args.symbol, args.interval, args.start, args.end, base_seconds)
    rows = candles_export.fetch(settings.pg_reader_dsn, req)
    candles_export.write(rows, args.format, sys.stdout)
    if not rows:
        print(f"no candles for {req.exchange}:{req.symbol} between {args.start} and {args.end}", file=sys.stderr)
    return 0


def cmd_sql(settings: Settings, args: argparse.Namespace) -> int:
    import csv
    from datetime import date, timedelta

    from candlelake.serve import lake_trades

    def day(text: str | None, flag: str) -> date | None:
        try:
            return None if text is None else date.fromisoformat(text)
        except ValueError:
            raise ConfigError(f"{flag} {text!r}: give a day as YYYY-MM-DD") from None

    since, until = day(args.since, "--since"), day(args.until, "--until")
    days = None
    if since is not None or until is not None:
        first, last = since or date(1970, 1, 1), until or date.today() + timedelta(days=1)
        if last < first:
            raise ConfigError(f"--until {last} is before --since {first}")
        days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    table = lake_trades.run_sql(settings, args.query, exchange=args.exchange, days=days)
    if args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(table.columns)
        writer.writerows(table.rows)
    elif args.format == "json":
        for record in table.records():
            print(json.dumps(record, default=str))
    else:
        _print_table(table.columns, table.rows[: args.max_rows])
        if len(table.rows) > args.max_rows:
            _say(f"({len(table.rows):,} rows, the first {args.max_rows:,} shown; --format csv prints all)")
        else:
            _say(f"({len(table.rows):,} row{'s' if len(table.rows) != 1 else ''})")
    return 0


def _print_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in columns], *[["NULL" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for n, line in enumerate(cells):
        _say("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            _say("  ".join("-" * w for w in widths))


def cmd_alerts(settings: Settings, args: argparse.Namespace) -> int:
    import psycopg2

    from candlelake.alerts import store

    conn = psycopg2.connect(settings.pg_dsn(), connect_timeout=5, application_name="candlelake-cli")
    try:
        with conn, conn.cursor() as cur:
            if args.action == "add":
                rule = store.add_rule(cur, args.market, args.direction, args.level, args.note or "")
                _say(f"alert rule {rule.id}: {rule.describe()} (the scorer picks it up within seconds)")
            elif args.action == "remove":
                rule = store.remove_rule(cur, args.id)
                _say(f"removed alert rule {rule.id}: {rule.describe()}")
            elif args.action == "list":
                rules = store.list_rules(cur, args.market)
                if not rules:
                    _say("no alert rules; add one with `candlelake alerts add binance:BTCUSDT above 100000`")
                for rule in rules:
                    _say(f"{rule.id:>6}  {rule.describe()}" + (f"  ({rule.note})" if rule.note else ""))
            else:  # recent
                cur.execute(
                    "SELECT id, raised_at, type, exchange || ':' || symbol, kind, detector, score, price, "
                    "webhook_status FROM alerts ORDER BY raised_at DESC, id DESC LIMIT %s",
                    (args.limit,),
                )
                rows = cur.fetchall()
                if not rows:
                    _say("no alerts raised yet")
                for i, at, kind_of, market, kind, detector, score, price, hook in rows:
                    figure = f"score {score:.2f}" if score is not None else f"price {price}"
                    _say(
                        f"{i:>6}  {at:%Y-%m-%d %H:%M:%S}  {kind_of:<8}{market:<24}{kind:<13}{detector:<18}{figure}"
                        + (f"  webhook {hook}" if hook else "")
                    )
    finally:
        conn.close()
    return 0


def cmd_score(settings: Settings, args: argparse.Namespace) -> int:
    import signal

    from candlelake.alerts.service import ScorerService

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    service = ScorerService(settings)
    try:
        service.run(lambda: stop["now"])
    finally:
        service.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="candlelake", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="install what is missing, start every part, wait until healthy")
    up.add_argument("--only", help="comma-separated parts to start (default: all)")
    up.add_argument("--skip", help="comma-separated parts not to start")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop every part (quiet when nothing runs)")
    down.add_argument("--only", help="comma-separated parts to stop")
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="each part with pid, ports, memory and health")
    status.add_argument("--only", help="comma-separated parts")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    install = sub.add_parser("install", help="fetch and prepare every part without starting it")
    install.add_argument("--only", help="comma-separated parts")
    install.set_defaults(func=cmd_install)

    produce = sub.add_parser("produce", help="stream trades from a source into Kafka until stopped")
    produce.add_argument(
        "--source", choices=list(PRODUCER_SOURCES), help="default: CANDLELAKE_PRODUCER_SOURCE (simulator)"
    )
    produce.add_argument(
        "--symbols",
        help="comma-separated: BTCUSDT,ETHUSDT (binance, binance-usdm, binance-rest), BTC-USD (coinbase), "
        "bitcoin (coingecko); default CANDLELAKE_PRODUCER_SYMBOLS (simulator: CANDLELAKE_SIMULATOR_SYMBOLS)",
    )
    produce.add_argument("--rate", type=float, help="simulator: trades per second, all symbols together")
    produce.add_argument("--seed", type=int)
    produce.add_argument("--limit", type=int, help="stop after this many trades")
    produce.set_defaults(func=cmd_produce)

    replay = sub.add_parser("replay", help="send a recorded file (Binance CSV/zip, WebSocket capture) into Kafka")
    replay.add_argument("path", help="data.binance.vision trades/aggTrades CSV or zip, or a capture (.jsonl, .gz)")
    replay.add_argument(
        "--exchange",
        choices=list(EXCHANGE_NAMES),
        help="market of the file (default: from the content; Binance files with a best-match flag are spot)",
    )
    replay.add_argument("--rate", type=float, help="at most this many trades per second (default: as fast as possible)")
    replay.add_argument(
        "--symbol", help="symbol of a file whose name does not say it; in a capture, replay only this symbol"
    )
    replay.add_argument(
        "--no-chain",
        dest="chain",
        action="store_false",
        help="for trades older than the live stream: do not run the nightly chain (compaction, validation, "
        "curated load, reconciliation) for their days through Airflow (default: run it and wait)",
    )
    replay.add_argument(
        "--chain-timeout", type=float, metavar="MINUTES", help="give up following the chain after this (default 60)"
    )
    replay.set_defaults(func=cmd_replay)

    backfill = sub.add_parser("backfill", help="fetch the gap ledger's open gaps from the exchanges' REST APIs")
    backfill.add_argument("--exchange", choices=list(EXCHANGE_NAMES))
    backfill.add_argument("--symbol")
    backfill.add_argument("--gap-id", type=int, help="only this gap (see `candlelake gaps`)")
    backfill.set_defaults(func=cmd_backfill)

    gaps = sub.add_parser("gaps", help="the gap ledger: trade-id gaps and disconnects per market and status")
    gaps.set_defaults(func=cmd_gaps)

    candles = sub.add_parser("candles", help="print candles from PostgreSQL as CSV or JSON")
    candles.add_argument("--exchange", required=True)
    candles.add_argument("--symbol", required=True)
    candles.add_argument("--interval", default="1m", help="any bucket: 1m, 5m, 15m, 45m, 1h, 4h, 1d, 1w, ...")
    candles.add_argument("--start", required=True, help="ISO 8601, UTC when no zone is given")
    candles.add_argument("--end", required=True, help="ISO 8601, exclusive")
    candles.add_argument("--format", default="csv", choices=["csv", "json"])
    candles.set_defaults(func=cmd_candles)

    sql = sub.add_parser(
        "sql",
        help="read-only SQL (DuckDB) over the lake's committed trades: relations `trades` (each trade once) "
        "and `raw_trades` (as landed, copies included)",
    )
    sql.add_argument("query", help='one SELECT, e.g. "SELECT symbol, count(*) FROM trades GROUP BY ALL"')
    sql.add_argument("--exchange", help="only this exchange's partitions")
    sql.add_argument("--since", help="only partitions of this UTC day (YYYY-MM-DD) or later")
    sql.add_argument("--until", help="only partitions up to this UTC day, inclusive")
    sql.add_argument("--format", default="table", choices=["table", "csv", "json"])
    sql.add_argument("--max-rows", type=int, default=100, help="rows a table shows (csv and json print all)")
    sql.set_defaults(func=cmd_sql)

    alerts = sub.add_parser("alerts", help="price alert rules the platform evaluates, and the alerts it raised")
    actions = alerts.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="alert when a market's price crosses a level")
    add.add_argument("market", help="exchange:SYMBOL, e.g. binance:BTCUSDT")
    add.add_argument("direction", choices=["above", "below"])
    add.add_argument("level", help="the price, exact (e.g. 100000 or 0.0000123)")
    add.add_argument("--note", help="a few words sent with the alert")
    listed = actions.add_parser("list", help="the alert rules")
    listed.add_argument("--market", help="only this exchange:SYMBOL")
    remove = actions.add_parser("remove", help="delete an alert rule by its id")
    remove.add_argument("id", type=int)
    recent = actions.add_parser("recent", help="the alerts raised last: anomalies and crossed rules")
    recent.add_argument("--limit", type=int, default=20)
    alerts.set_defaults(func=cmd_alerts)

    score = sub.add_parser("score", help="score closed candles and prices into alerts until stopped (the scorer part)")
    score.set_defaults(func=cmd_score)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kafka-python narrates every connection at INFO; its warnings and errors are what a user needs.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    # httpx logs every request at INFO; a backfill or a poller makes thousands.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings = load_settings()
        return int(args.func(settings, args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"candlelake {args.command}: {_explain(exc)}", file=sys.stderr)
        return 2


def _explain(exc: Exception) -> str:
    """One message a person can act on, for the errors we expect; the type and text for the rest."""
    from candlelake.platform.runtime import ComponentError
    from candlelake.serve.candles_export import ExportError

    if isinstance(exc, ComponentError | ConfigError | ExportError | ValueError):
        return str(exc)
    try:
        import psycopg2

        if isinstance(exc, psycopg2.OperationalError):
            settings = load_settings()
            return (
                f"PostgreSQL is not reachable at {settings.host}:{settings.pg_port} "
                f"({first_line(exc)}); start it with `candlelake up`"
            )
    except ImportError:
        pass
    try:
        from kafka.errors import KafkaError

        if isinstance(exc, KafkaError):
            settings = load_settings()
            return f"Kafka is not reachable at {settings.kafka_bootstrap} ({exc}); start it with `candlelake up`"
    except ImportError:
        pass
    return f"{type(exc).__name__}: {exc} (run with --debug for the traceback)"


if __name__ == "__main__":
    sys.exit(main())
