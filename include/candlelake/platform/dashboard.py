"""The Streamlit dashboard as a platform part: `streamlit run dashboard/app.py`, detached.

It reads PostgreSQL only, through the read-only role, so it starts last and needs nothing else running
to become healthy: the page itself explains when there are no candles yet or the database is down.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

from candlelake.platform import runtime
from candlelake.platform.base import Component, Port

# The dashboard is ours and local: a user's HTTP(S)_PROXY must not swallow the health probe.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class DashboardComponent(Component):
    name = "dashboard"
    # Streamlit imports pandas, plotly and pyarrow before it serves; a few seconds on a warm disk.
    start_timeout = 60.0

    @property
    def app_path(self) -> Path:
        return self.settings.project_root / "dashboard" / "app.py"

    def _streamlit(self) -> str:
        # The streamlit script of the environment we run in, not whichever one PATH finds first.
        return runtime.require_executable(
            self.name,
            str(Path(sys.executable).parent / "streamlit"),
            "Install the project's requirements into this environment (make setup).",
        )

    def ports(self) -> list[Port]:
        return [Port(self.settings.dashboard_port, "CANDLELAKE_DASHBOARD_PORT")]

    def argv(self) -> list[str]:
        """The command line of the dashboard server (the benchmarks start it the same way)."""
        s = self.settings
        return [
            self._streamlit(),
            "run",
            str(self.app_path),
            "--server.port",
            str(s.dashboard_port),
            "--server.address",
            s.host,
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            # A running platform serves code, it does not edit it: no watcher threads polling the tree.
            "--server.fileWatcherType",
            "none",
            # Viewers get the page, not Streamlit's developer menu (rerun, settings, "Deploy").
            "--client.toolbarMode",
            "viewer",
        ]

    def start(self) -> int:
        return runtime.spawn(self.settings, self.name, self.argv())

    def healthy(self) -> bool:
        """Streamlit's own health endpoint answers `ok` once the server accepts sessions."""
        try:
            url = f"{self.settings.dashboard_url}/_stcore/health"
            with _DIRECT.open(url, timeout=2) as response:
                return bool(response.status == 200 and response.read(16).strip() == b"ok")
        except Exception:  # a health check reports, it never raises
            return False

    def urls(self) -> list[str]:
        return [self.settings.dashboard_url]
