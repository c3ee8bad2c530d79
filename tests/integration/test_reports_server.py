"""The `reports` part against a real HTTP server: the Data Docs site is served, and nothing outside it.

Each test starts the part the way `candlelake up` does, on a free port, with a temporary runtime folder
and a reports folder of its own (so a live platform's server and reports are never touched), and stops it.
"""

from __future__ import annotations

import http.client
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from candlelake.config import Settings, load_settings
from candlelake.platform import runtime
from candlelake.platform.orchestrator import up
from candlelake.platform.reports import ReportsComponent
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

# A test's HTTP(S)_PROXY must not stand between it and a local server.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
PAGE = "<html><body><h1>candles 2026-11-30: 14 of 14 expectations met</h1></body></html>\n"


def _settings(tmp_path: Path) -> Settings:
    return load_settings(
        {
            "CANDLELAKE_RUNTIME_DIR": str(tmp_path / "runtime"),
            "CANDLELAKE_REPORTS_DIR": str(tmp_path / "site" / "reports"),
            "CANDLELAKE_REPORTS_PORT": str(free_port()),
        }
    )


def _get(url: str) -> tuple[int, str]:
    with _DIRECT.open(url, timeout=5) as response:
        return response.status, response.read().decode()


def _raw_get(settings: Settings, path: str) -> tuple[int, bytes]:
    """GET `path` exactly as written: urllib would not send `..` segments unchanged."""
    conn = http.client.HTTPConnection(settings.host, settings.reports_port, timeout=5)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def services() -> None:
    """Overrides the tier's autouse fixture (tests/integration/conftest.py): this part needs neither
    PostgreSQL nor Kafka, so running this module alone starts neither."""


@pytest.fixture
def reports(tmp_path: Path) -> Iterator[ReportsComponent]:
    component = ReportsComponent(_settings(tmp_path))
    assert not component.settings.reports_dir.exists()  # no validation has run yet
    try:
        up([component], lambda _: None)
        yield component
    finally:
        component.stop()


def test_serves_the_data_docs_site_and_reports_healthy(reports: ReportsComponent) -> None:
    settings = reports.settings
    docs = settings.reports_dir / "data_docs"
    assert docs.is_dir()  # created at start, so the server came up before any validation
    assert reports.healthy()

    (docs / "index.html").write_text(PAGE)
    (docs / "validations").mkdir()
    (docs / "validations" / "candles.html").write_text("<p>candles</p>")
    assert settings.data_docs_url == f"http://127.0.0.1:{settings.reports_port}"
    assert _get(f"{settings.data_docs_url}/index.html") == (200, PAGE)
    assert _get(f"{settings.data_docs_url}/") == (200, PAGE)
    assert _get(f"{settings.data_docs_url}/validations/candles.html") == (200, "<p>candles</p>")

    status = reports.status()
    assert status.healthy and status.detail == "healthy" and status.pid
    assert status.ports == [settings.reports_port]
    assert status.urls == [settings.data_docs_url]


def test_files_outside_the_reports_folder_are_not_served(reports: ReportsComponent) -> None:
    settings = reports.settings
    # Great Expectations keeps its configuration beside the site: only the site is served.
    (settings.reports_dir / "secret.txt").write_text("s3cret-outside")
    (settings.reports_dir / "data_docs").mkdir(parents=True, exist_ok=True)
    (settings.reports_dir / "data_docs" / "inside.txt").write_text("inside")
    # The same request shape reaches a file inside, so a 404 below is the folder's edge, not a bad request.
    assert _raw_get(settings, "/inside.txt") == (200, b"inside")
    for path in (
        "/secret.txt",
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/validations/../../secret.txt",
        "/..%2fsecret.txt",
    ):
        status, body = _raw_get(settings, path)
        assert status == 404, f"{path} answered {status}"
        assert b"s3cret-outside" not in body
    # Writing is not a thing this server does.
    conn = http.client.HTTPConnection(settings.host, settings.reports_port, timeout=5)
    try:
        conn.request("PUT", "/index.html", body=b"overwritten")
        assert conn.getresponse().status == 501
    finally:
        conn.close()
    assert not (settings.reports_dir / "data_docs" / "index.html").exists()


def test_stop_ends_the_server_and_frees_its_port(reports: ReportsComponent) -> None:
    settings = reports.settings
    pid = reports.pid()
    assert pid and runtime.port_open(settings.host, settings.reports_port)

    assert reports.stop() is True
    assert not runtime.pid_alive(pid)
    assert reports.pid() is None and not runtime.pid_path(settings, reports.name).exists()
    assert not runtime.port_open(settings.host, settings.reports_port)
    assert not reports.healthy()
    assert reports.status().detail == "stopped"
    assert reports.stop() is False  # quiet when nothing runs, like `candlelake down`
