"""The producer as a platform part: `jobs/produce.py` on CANDLELAKE_PRODUCER_SOURCE, detached."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2

from candlelake.platform import runtime
from candlelake.platform.base import Component, Port

# The producer reports every CANDLELAKE_HEALTH_INTERVAL_S seconds; a few missed beats mean trouble.
_MISSED_BEATS = 4


class ProducerComponent(Component):
    name = "producer"
    start_timeout = 60.0

    def ports(self) -> list[Port]:
        return []

    def start(self) -> int:
        return self.start_with()

    def argv(self, source: str | None = None, symbols: Sequence[str] | None = None) -> list[str]:
        """The producer's command line; `source` and `symbols` default to the settings (CANDLELAKE_PRODUCER_*)."""
        s = self.settings
        source = source or s.producer_source
        argv = [sys.executable, str(s.project_root / "jobs" / "produce.py"), "--source", source]
        if source == "simulator":
            argv += ["--symbols", ",".join(symbols or s.simulator_symbols)]
            argv += ["--rate", str(s.simulator_rate), "--seed", str(s.simulator_seed)]
        elif symbols or s.producer_symbols:  # else the source defaults (exchanges.SOURCES)
            argv += ["--symbols", ",".join(symbols or s.producer_symbols)]
        return argv

    def start_with(self, source: str | None = None, symbols: Sequence[str] | None = None) -> int:
        """Spawn the producer on an explicit source and symbols (the start_stream DAG's form); no wait."""
        return runtime.spawn(self.settings, self.name, self.argv(source, symbols))

    def running_argv(self) -> list[str] | None:
        """The command line of the running producer (from /proc), to tell whether its options changed."""
        pid = self.pid()
        if not pid:
            return None
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]

    def healthy(self) -> bool:
        """Alive, and its heartbeat in producer_health is fresh and comes from this very process."""
        pid = self.pid()
        if not pid:
            return False
        max_age = timedelta(seconds=self.settings.health_interval_s * _MISSED_BEATS)
        try:
            with psycopg2.connect(self.settings.pg_dsn(), connect_timeout=2) as conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT heartbeat_at FROM producer_health WHERE pid = %s ORDER BY heartbeat_at DESC LIMIT 1",
                    (pid,),
                )
                row = cur.fetchone()
            conn.close()
        except Exception:
            return False
        return bool(row) and datetime.now(UTC) - row[0] <= max_age

    def urls(self) -> list[str]:
        return []
