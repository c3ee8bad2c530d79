"""The producer as a platform part: `jobs/produce.py` on CANDLELAKE_PRODUCER_SOURCE, detached."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

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
        s = self.settings
        argv = [sys.executable, str(s.project_root / "jobs" / "produce.py"), "--source", s.producer_source]
        if s.producer_source == "simulator":
            argv += ["--symbols", ",".join(s.simulator_symbols)]
            argv += ["--rate", str(s.simulator_rate), "--seed", str(s.simulator_seed)]
        elif s.producer_symbols:  # otherwise the source's own defaults (candlelake.producer.DEFAULT_SYMBOLS)
            argv += ["--symbols", ",".join(s.producer_symbols)]
        return runtime.spawn(s, self.name, argv)

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
