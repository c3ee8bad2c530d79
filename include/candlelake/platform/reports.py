"""The Data Docs site over HTTP as a platform part: `python -m http.server` on the site's folder, detached.

Great Expectations writes a static site to `<reports_dir>/data_docs/` (see candlelake.nightly.quality.docs),
and the dashboard links to each validation's page there; a browser does not follow file:// links from an
http:// page, so this part serves that folder at `http://<host>:<reports_port>/`. Only that folder: the
reports folder also holds Great Expectations' own configuration. The standard library's server is enough
for a few static pages: it answers GET and HEAD only, never writes, and keeps every request inside its
folder (`..` in a path is dropped, not followed). It needs nothing else running, so it starts with the
dashboard, before any validation has run.
"""

from __future__ import annotations

import sys
import urllib.request

from candlelake.nightly.quality.docs import DOCS_DIR
from candlelake.platform import runtime
from candlelake.platform.base import Component, Port

# The server is ours and local: a user's HTTP(S)_PROXY must not swallow the health probe.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ReportsComponent(Component):
    name = "reports"
    start_timeout = 20.0

    def ports(self) -> list[Port]:
        return [Port(self.settings.reports_port, "CANDLELAKE_REPORTS_PORT")]

    def start(self) -> int:
        s = self.settings
        # Served from the first start: the folder holds nothing until the nightly validation writes it.
        (s.reports_dir / DOCS_DIR).mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "http.server",
            str(s.reports_port),
            "--bind",
            s.host,
            "--directory",
            str(s.reports_dir / DOCS_DIR),
        ]
        return runtime.spawn(s, self.name, argv)

    def healthy(self) -> bool:
        """The server answers its root (a folder listing, or the index page) with 200."""
        try:
            url = f"http://{self.settings.host}:{self.settings.reports_port}/"
            with _DIRECT.open(url, timeout=2) as response:
                return bool(response.status == 200)
        except Exception:  # a health check reports, it never raises
            return False

    def urls(self) -> list[str]:
        return [self.settings.data_docs_url]
