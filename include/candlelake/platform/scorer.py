"""The scorer as a platform part: `jobs/score_anomalies.py`, detached (candlelake.alerts.service).

It reads PostgreSQL and writes to PostgreSQL and Kafka, so it starts with the stream and the producer.
Healthy means alive and polling: its heartbeat file, written after every poll, is this process's and
younger than a few polls (at least 30 s: a poll that waits on PostgreSQL or Kafka restarting).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

from candlelake.alerts.service import heartbeat_path
from candlelake.platform import runtime
from candlelake.platform.base import Component, Port

_MISSED_POLLS = 10
_MIN_AGE_S = 30.0


class ScorerComponent(Component):
    name = "scorer"
    # Loading the champion detector imports MLflow and scikit-learn before the first poll.
    start_timeout = 120.0

    def ports(self) -> list[Port]:
        return []

    def argv(self) -> list[str]:
        return [sys.executable, str(self.settings.project_root / "jobs" / "score_anomalies.py")]

    def start(self) -> int:
        return runtime.spawn(self.settings, self.name, self.argv())

    def healthy(self) -> bool:
        pid = self.pid()
        if not pid:
            return False
        try:
            beat = json.loads(heartbeat_path(self.settings).read_text())
            age = (datetime.now(UTC) - datetime.fromisoformat(beat["at"])).total_seconds()
        except (OSError, ValueError, KeyError):
            return False
        return bool(beat.get("pid") == pid and age <= max(_MIN_AGE_S, _MISSED_POLLS * self.settings.scorer_poll_s))
