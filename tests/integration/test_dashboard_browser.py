"""The dashboard in a real browser: headless Chromium (Debian's `chromium` and `chromedriver`, installed by
`make browser`) drives the running Streamlit app the way a user does, and the candles drawn are counted in
the page's own Plotly figure and checked against a count made here from the seeded klines.

The dashboard needs PostgreSQL only: this module's `services` replaces the tier's (PostgreSQL and Kafka),
so it neither waits for a Kafka start nor stops a Kafka that another run started meanwhile. One dashboard
(started as the platform starts it, on a free port, with a runtime folder of its own so that a platform
dashboard on 8501 keeps its pid file) and one browser serve the whole module. A screenshot of each
step is saved under test-artifacts/dashboard/; a failed step also leaves its page source and the
dashboard's log there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import psycopg2
import pytest
from psycopg2.extras import execute_values
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from candlelake.config import PROJECT_ROOT, Settings, load_settings
from candlelake.platform import runtime
from candlelake.platform.dashboard import DashboardComponent
from candlelake.platform.orchestrator import up
from candlelake.platform.postgres import PostgresComponent
from dashboard.data import MAX_CANDLES
from tests.support.dashboard_seed import (
    CANDLE_TEMPLATE,
    INSERT_CANDLES,
    LONG_SYMBOL,
    RECENT_SYMBOL,
    SYMBOL,
    Seed,
    klines,
    seed,
)
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "dashboard"
CHROMIUM_ARGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1200")
# A redraw takes a second or two; the first page load also imports pandas and plotly in the server.
TIMEOUT_S = 30.0
FIRST_LOAD_TIMEOUT_S = 90.0

# Candles drawn, by trace name (dashboard.charts: PRICE_TRACE, PARTIAL_TRACE and QUIET_TRACE), and the view the figure
# shows: its uirevision is "exchange|symbol|lookback|bucket|tz|start|end" (bucket: the one drawn).
FIGURE_JS = """
const plot = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
if (!plot || !plot.data || !plot.layout) return null;
const counts = {};
for (const trace of plot.data) counts[trace.name] = trace.x ? trace.x.length : 0;
return {counts: counts, revision: String(plot.layout.uirevision || "")};
"""
# Streamlit marks the app "notRunning" between runs, elements of the run in progress stale, and elements
# still to arrive (or whose code is still loading) as skeletons.
BUSY_JS = """
const app = document.querySelector('[data-testid="stApp"]');
return !app || app.dataset.testScriptState !== "notRunning" || app.dataset.testConnectionState !== "CONNECTED"
    || Boolean(document.querySelector('[data-stale="true"], [data-testid="stSkeleton"]'));
"""
# Every chart laid out for its box's current width (Plotly relayouts when the window is resized).
RELAID_OUT_JS = """
return Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]')).every((box) => {
    const plot = box.querySelector('.js-plotly-plot');
    return !plot || !plot._fullLayout || Math.abs(plot._fullLayout.width - box.clientWidth) <= 1;
});
"""

T = TypeVar("T")

# ------------------------------------------------------------------------------------------------------
# The count each view must draw, made from the seeded rows without the rollup code.


def expected_counts(
    minutes: Sequence[tuple[datetime, int]], start: datetime, end: datetime, bucket: timedelta
) -> tuple[int, int]:
    """(candles with trades, candles without) for buckets opening in [start, end), aligned on the epoch.

    `minutes` are a market's base candles (open_time, trades), oldest first and without holes, so every
    bucket from the one holding the market's first trade to the one holding its newest minute is drawn.
    """
    assert all(b[0] - a[0] == timedelta(minutes=1) for a, b in itertools.pairwise(minutes))
    size = int(bucket.total_seconds())
    first_trade = next(t for t, trades in minutes if trades > 0)
    first_bucket = int(first_trade.timestamp()) // size * size
    traded: dict[int, bool] = {}
    for open_time, trades in minutes:
        key = int(open_time.timestamp()) // size * size
        if key >= first_bucket and start.timestamp() <= key < end.timestamp():
            traded[key] = traded.get(key, False) or trades > 0
    with_trades = sum(traded.values())
    return with_trades, len(traded) - with_trades


def preset_window(newest: datetime, lookback: timedelta) -> tuple[datetime, datetime]:
    """A preset lookback ends one base candle after the market's newest one (not at now())."""
    end = newest + timedelta(minutes=1)
    return end - lookback, end


XRPETH_MINUTES = [(k.open_time, k.trades) for k in klines()]


def xrpeth(lookback: timedelta, bucket: timedelta) -> tuple[int, int]:
    newest = XRPETH_MINUTES[-1][0]
    assert newest == datetime(2019, 10, 13, 11, 19, tzinfo=UTC)
    return expected_counts(XRPETH_MINUTES, *preset_window(newest, lookback), bucket)


def test_expected_counts_follow_the_epoch_alignment() -> None:
    # The independent count checks itself on a case worked by hand: 10:58..11:06, quiet 11:00-11:04,
    # 5m buckets 10:55 (trades), 11:00 (quiet), 11:05 (trades); the window drops 10:55.
    t0 = datetime(2019, 10, 13, 10, 58, tzinfo=UTC)
    minutes = [(t0 + timedelta(minutes=i), 0 if 2 <= i <= 6 else 3) for i in range(9)]
    assert expected_counts(minutes, t0, t0 + timedelta(hours=1), timedelta(minutes=5)) == (1, 1)
    assert expected_counts(minutes, t0 - timedelta(hours=1), t0 + timedelta(hours=1), timedelta(minutes=5)) == (2, 1)
    assert xrpeth(timedelta(hours=24), timedelta(minutes=5)) == (285, 3)


# ------------------------------------------------------------------------------------------------------
# The running dashboard and the browser.


@pytest.fixture(scope="module", autouse=True)
def services() -> Iterator[Settings]:
    """The platform's PostgreSQL with its schema, started here (and stopped again) only when it is down."""
    settings = load_settings()
    postgres = PostgresComponent(settings)
    started_here = not (postgres.pid() and postgres.healthy())
    up([postgres], lambda _: None)
    yield settings
    if started_here:
        postgres.stop()


@pytest.fixture(scope="module")
def dashboard(services: Settings) -> Iterator[DashboardComponent]:
    """The dashboard as `candlelake up` starts it, on a free port; pid file and log under the artifacts.

    Yielded as soon as it is spawned: its start-up overlaps the browser's (see `driver`).
    """
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    settings = dataclasses.replace(services, dashboard_port=free_port(services.host), runtime_dir=ARTIFACTS / "runtime")
    part = DashboardComponent(settings)
    try:
        part.start()
        yield part
    finally:
        part.stop()


@pytest.fixture(scope="module")
def driver(dashboard: DashboardComponent) -> Iterator[WebDriver]:
    """Headless Chromium, once the dashboard answers, already on the Pipeline page.

    That first visit makes the server import its page modules and the browser cache Streamlit's scripts
    while the data is being seeded (a few seconds each); the Pipeline page caches nothing for long.
    """
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.fail("chromium and chromedriver are not installed: run `make browser` (Debian packages)")
    # Debian's driver matches Debian's browser; Selenium Manager must not look for either online.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SE_OFFLINE", "true")
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for arg in CHROMIUM_ARGS:
            options.add_argument(arg)
        browser = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        part = dashboard
        runtime.wait_until(part.name, part.healthy, part.start_timeout, part.log, part.pid())
        browser.get(f"{part.settings.dashboard_url}/pipeline")
        yield browser
    finally:
        browser.quit()


@pytest.fixture(scope="module")
def seeded(services: Settings, driver: WebDriver) -> Iterator[Seed]:
    """The pages' rows (tests.support.dashboard_seed), put in once the browser is on its way (see `driver`)."""
    s = seed(services.pg_dsn(), services.reports_dir / "data_docs")
    try:
        yield s
    finally:
        s.delete()


class Page:
    """The dashboard as a user sees it: go to a page, click and type, screenshot, read the chart."""

    def __init__(self, driver: WebDriver, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url

    def open(self, path: str, timeout: float = FIRST_LOAD_TIMEOUT_S) -> None:
        self.driver.get(f"{self.base_url}{path}")
        self.wait_idle(timeout)

    def wait_until(self, what: str, check: Callable[[], T | None], timeout: float = TIMEOUT_S) -> T:
        # An element replaced while we read it (WebDriverException) is "not yet".
        return wait_until(check, timeout, interval=0.25, what=what, ignoring=(WebDriverException,))

    def wait_idle(self, timeout: float = TIMEOUT_S) -> None:
        """Until the script has run and no element is stale: twice in a row, 0.3 s apart."""

        def idle() -> bool:
            if self.driver.execute_script(BUSY_JS):
                return False
            time.sleep(0.3)  # the second look, 0.3 s after the first, is the check itself
            return not self.driver.execute_script(BUSY_JS)

        self.wait_until("the page to finish running", idle, timeout)

    def text(self) -> str:
        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def wait_for_text(self, fragment: str) -> str:
        """The page's visible text once it holds `fragment`."""

        def holding() -> str | None:
            text = self.text()
            return text if fragment in text else None

        return self.wait_until(f"{fragment!r} on the page", holding)

    def widget(self, key: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, f".st-key-{key}")

    # Each action starts on a settled page and finds its elements afresh: a rerun may replace them.

    def choose(self, key: str, text: str) -> None:
        """Type into a selectbox and press Enter, as a user picks an option or adds one."""
        self.wait_idle()
        box = self.widget(key).find_element(By.CSS_SELECTOR, "input[role=combobox]")
        box.click()
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(text)
        box.send_keys(Keys.ENTER)
        self.wait_until(
            f"{key} to show {text}",
            lambda: self.widget(key).find_element(By.CSS_SELECTOR, "input").get_attribute("value") == text,
        )

    def _option(self, key: str, option: str) -> WebElement:
        buttons = self.widget(key).find_elements(By.CSS_SELECTOR, "button")
        matching = [b for b in buttons if b.text.strip() == option]
        assert matching, f"no {option!r} among {[b.text for b in buttons]}"
        return matching[0]

    def press(self, key: str, option: str) -> None:
        """Click one option of a segmented control."""
        self.wait_idle()
        self._option(key, option).click()
        self.wait_until(
            f"{option} to be selected", lambda: self._option(key, option).get_attribute("aria-checked") == "true"
        )

    def switch_off(self, key: str) -> None:
        """Turn a toggle off (its input is hidden; a user clicks the label)."""
        self.wait_idle()

        def switch() -> WebElement:
            return self.widget(key).find_element(By.CSS_SELECTOR, "input[role=switch]")

        if switch().is_selected():
            self.widget(key).find_element(By.CSS_SELECTOR, "label").click()
            self.wait_until(f"{key} to be off", lambda: not switch().is_selected())

    def figure(self, view: Sequence[str]) -> dict[str, int]:
        """Candles per trace once the chart shows `view` (exchange, symbol, lookback, bucket drawn)."""

        def shown() -> dict[str, int] | None:
            self.wait_idle()
            figure = self.driver.execute_script(FIGURE_JS)
            if not figure or figure["revision"].split("|")[: len(view)] != list(view):
                return None
            # Read twice, 0.3 s apart (part of the check): Plotly may still be applying the last update.
            time.sleep(0.3)
            again = self.driver.execute_script(FIGURE_JS)
            return dict(figure["counts"]) if again == figure else None

        return self.wait_until(f"the chart to show {'|'.join(view)}", shown)

    def screenshot(self, name: str) -> Path:
        """The whole page, not only the window: the window is stretched to the content for the shot."""
        path = ARTIFACTS / f"{name}.png"
        size = self.driver.get_window_size()
        width, height = size["width"], size["height"]
        content = self.driver.execute_script(
            "const m = document.querySelector('[data-testid=\"stMain\"]');"
            "return m ? m.scrollHeight : document.body.scrollHeight;"
        )
        self.driver.set_window_size(width, max(height, int(content) + 160))
        try:
            # Plotly relayouts on resize: shoot once every chart fills its new box.
            self.wait_until("the charts to fit the resized window", lambda: self.driver.execute_script(RELAID_OUT_JS))
            self.driver.save_screenshot(str(path))
        finally:
            self.driver.set_window_size(width, height)
        return path


@pytest.fixture(scope="module")
def page(driver: WebDriver, dashboard: DashboardComponent, seeded: Seed) -> Page:
    return Page(driver, dashboard.settings.dashboard_url)


@contextlib.contextmanager
def step(page: Page, dashboard: DashboardComponent, name: str) -> Iterator[None]:
    """One named step: a screenshot after it; on failure also the page source and the dashboard's log."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            (ARTIFACTS / f"{name}-failed.html").write_text(page.driver.page_source)
            page.driver.save_screenshot(str(ARTIFACTS / f"{name}-failed.png"))
            shutil.copy(dashboard.log, ARTIFACTS / "dashboard.log")
        raise
    page.screenshot(name)


# ------------------------------------------------------------------------------------------------------
# The tests.


def assert_drawn(counts: dict[str, int], expected: tuple[int, int], bucket: str) -> None:
    """The chart holds exactly the expected candles of `bucket` with and without trades, and a volume bar each.

    A candle with trades is in the "price" trace, or in the "partial" one when its bucket reaches past the
    seeded coverage (which ends with the market's newest minute: a 13m bucket holding it is partial)."""
    with_trades = counts.get("price", 0) + counts.get("partial", 0)
    assert (with_trades, counts.get("no trades")) == expected, (counts, expected, bucket)
    assert counts.get("volume") == sum(expected), counts


def test_markets_page_draws_the_candles_of_each_view_chosen_in_the_browser(
    page: Page, dashboard: DashboardComponent, seeded: Seed
) -> None:
    exchange = seeded.exchange
    minutes, hours, days = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)

    with step(page, dashboard, "01-markets-xrpeth-24h-5m"):
        page.open(f"/?exchange={exchange}&symbol={SYMBOL}&lookback=24h&bucket=5m")
        counts = page.figure([exchange, SYMBOL, "24h", "5m"])
        # Freeze the view: the 5 s live refresh would only redraw the same candles.
        page.switch_off("live")
        assert_drawn(counts, xrpeth(24 * hours, 5 * minutes), "5m")

    with step(page, dashboard, "02-markets-xrpeth-6h-5m"):
        page.press("lookback", "6h")
        assert_drawn(page.figure([exchange, SYMBOL, "6h", "5m"]), xrpeth(6 * hours, 5 * minutes), "5m")

    # 13m is not offered: typed as a new option. It divides neither the hour nor the 5m rollups.
    with step(page, dashboard, "03-markets-xrpeth-6h-13m"):
        page.choose("bucket", "13m")
        assert_drawn(page.figure([exchange, SYMBOL, "6h", "13m"]), xrpeth(6 * hours, 13 * minutes), "13m")

    # XRPETH's 3,560 minutes all fit at 1m over 7 days: the bucket is sized by the data in the window.
    with step(page, dashboard, "04-markets-xrpeth-7d-1m"):
        page.press("lookback", "7d")
        page.choose("bucket", "1m")
        assert_drawn(page.figure([exchange, SYMBOL, "7d", "1m"]), xrpeth(7 * days, minutes), "1m")
        assert "showing 3m candles" not in page.text()

    # LONGUSDT has 8 days of minutes: 7 days at 1m (10,080) are more than the page draws, so it says so
    # and draws 3m candles (3,360).
    assert 7 * 24 * 60 > MAX_CANDLES >= 7 * 24 * 20
    long = [(row["open_time"], row["trades"]) for row in seeded.long]
    with step(page, dashboard, "05-markets-longusdt-7d-1m-shows-3m"):
        page.choose("symbol", LONG_SYMBOL)
        counts = page.figure([exchange, LONG_SYMBOL, "7d", "3m"])
        assert "showing 3m candles" in page.text()
        assert_drawn(counts, expected_counts(long, *preset_window(long[-1][0], 7 * days), 3 * minutes), "3m")

    with step(page, dashboard, "05b-markets-altusdt-7d-1m"):
        page.choose("symbol", RECENT_SYMBOL)
        assert_drawn(page.figure([exchange, RECENT_SYMBOL, "7d", "1m"]), (len(seeded.recent), 0), "1m")

    with step(page, dashboard, "06-markets-altusdt-1h-1m"):
        page.press("lookback", "1h")
        counts = page.figure([exchange, RECENT_SYMBOL, "1h", "1m"])
        assert_drawn(counts, (len(seeded.recent), 0), "1m")
        assert "showing 3m candles" not in page.text()

    # The view lives in the link (values other than the defaults): opening it again shows the same chart.
    with step(page, dashboard, "07-markets-link-reopened"):
        link = page.driver.current_url
        assert link.startswith(page.base_url), link
        page.open(link.removeprefix(page.base_url))
        assert page.figure([exchange, RECENT_SYMBOL, "1h", "1m"]) == counts, link


def test_quality_page_shows_the_seeded_failed_check(page: Page, dashboard: DashboardComponent, seeded: Seed) -> None:
    with step(page, dashboard, "08-quality"):
        page.open("/quality")
        text = page.wait_for_text(seeded.exchange)
        failed = [line for line in text.splitlines() if seeded.exchange in line and "failed" in line]
        # Streamlit's Markdown prints "<=" as "≤".
        assert any(re.search(r"open (<=|≤) high: 1 of 1440 rows", line) for line in failed), failed


def test_pipeline_page_shows_the_seeded_producer(page: Page, dashboard: DashboardComponent, seeded: Seed) -> None:
    with step(page, dashboard, "09-pipeline"):
        page.open("/pipeline")
        text = page.wait_for_text(seeded.tag)
        assert (
            f"{seeded.tag}\nreporting\n(simulator, pid 4242)" in text or f"{seeded.tag} reporting (simulator" in text
        ), text


def test_alerts_page_shows_the_seeded_alerts(page: Page, dashboard: DashboardComponent, seeded: Seed) -> None:
    with step(page, dashboard, "10-alerts"):
        page.open("/alerts")
        text = page.wait_for_text(f"{seeded.exchange}:XRPETH")
        lines = [line for line in text.splitlines() if f"{seeded.exchange}:XRPETH" in line]
        assert any("pump" in line and "score 1.75" in line for line in lines), lines
        assert any("above" in line and "0.00155 (level 0.0015)" in line for line in lines), lines


RANGE_JS = """
const plot = document.querySelector('.js-plotly-plot');
return plot && plot._fullLayout ? plot._fullLayout.xaxis.range.map(String) : null;
"""


def _add_minute(settings: Settings, seeded: Seed, after: dict[str, object]) -> dict[str, object]:
    """The stream's next candle for the recent market: one minute after `after`."""
    row = {**after, "open_time": after["open_time"] + timedelta(minutes=1)}
    row["close_time"] = row["open_time"] + timedelta(minutes=1) - timedelta(milliseconds=1)
    row["first_trade_id"], row["last_trade_id"] = after["last_trade_id"] + 1, after["last_trade_id"] + 2
    with psycopg2.connect(settings.pg_dsn(), connect_timeout=5) as conn, conn.cursor() as cur:
        execute_values(cur, INSERT_CANDLES, [row], template=CANDLE_TEMPLATE)
    conn.close()
    return row


def test_live_refresh_keeps_the_zoom_and_the_switch_freezes_the_view(
    services: Settings, page: Page, dashboard: DashboardComponent, seeded: Seed
) -> None:
    exchange = seeded.exchange
    with step(page, dashboard, "10-markets-live-zoomed"):
        page.open(f"/?exchange={exchange}&symbol={RECENT_SYMBOL}&lookback=1h&bucket=1m")
        view = [exchange, RECENT_SYMBOL, "1h", "1m"]
        assert page.figure(view)["volume"] == len(seeded.recent)
        # Zoom like a user: drag across the middle of the price panel (Plotly's default drag is a box zoom).
        plot = page.driver.find_element(By.CSS_SELECTOR, ".js-plotly-plot .nsewdrag")
        before = page.driver.execute_script(RANGE_JS)
        ActionChains(page.driver).move_to_element_with_offset(plot, -120, 0).click_and_hold().move_by_offset(
            200, 0
        ).release().perform()
        zoomed = page.wait_until("the zoom", lambda: (r := page.driver.execute_script(RANGE_JS)) != before and r)
        # The stream writes a new minute: the live fragment redraws with it, and the zoom stays.
        newest = _add_minute(services, seeded, seeded.recent[-1])
        page.wait_until("the live redraw", lambda: page.driver.execute_script(FIGURE_JS)["counts"]["volume"] == 11)
        assert page.driver.execute_script(RANGE_JS) == zoomed
    with step(page, dashboard, "11-markets-frozen"):
        page.switch_off("live")
        _add_minute(services, seeded, newest)
        # Deliberately a plain sleep: nothing must happen, for more than one refresh interval (5 s).
        time.sleep(8)
        assert page.driver.execute_script(FIGURE_JS)["counts"]["volume"] == 11


def test_no_page_raised_in_the_server(page: Page, dashboard: DashboardComponent) -> None:
    """Every page visited above, first by its own URL (the browser's first visit is /pipeline), ran
    without an exception in the server: a page that skipped the router once failed to import here."""
    for path in ("/pipeline", "/quality", "/"):
        page.open(path)
        assert not page.driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'), path
    log = dashboard.log.read_text()
    assert "Traceback" not in log, log[-3000:]
