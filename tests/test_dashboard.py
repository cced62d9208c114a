"""The broadcaster's plain-HTTP side: health, metrics, and the live dashboard in a browser."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait
from websockets.sync.client import connect

from conftest import REPO, Pipeline, unused_port, wait_until

CHROMIUM = "/usr/bin/chromium"  # Debian package chromium
CHROMEDRIVER = "/usr/bin/chromedriver"  # Debian package chromium-driver, same source package
SCREENSHOTS = Path(os.environ.get("STREAM_SCREENSHOTS", tempfile.gettempdir()))


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


def http(pipeline: Pipeline) -> str:
    return pipeline.ws_url.replace("ws://", "http://")


def test_healthz_follows_the_freshness_of_samples(pipeline: Pipeline):
    """/healthz answers 200 "ok" while samples flow and 503 "stale" once the producer stops."""
    producer = pipeline.producer("--rate", "10")
    pipeline.broadcaster("--stale-after", "1")
    wait_until(lambda: get(http(pipeline) + "/healthz")[0] == 200, timeout=10)
    status, body, kind = get(http(pipeline) + "/healthz")
    assert kind == "application/json" and json.loads(body)["status"] == "ok"
    producer.stop()
    wait_until(lambda: get(http(pipeline) + "/healthz")[0] == 503, timeout=5)
    assert json.loads(get(http(pipeline) + "/healthz")[1])["status"] == "stale"


def test_metrics_of_all_three_processes(pipeline: Pipeline):
    """Producer, logger and broadcaster each serve their Prometheus metrics over HTTP."""
    producer = pipeline.producer("--rate", "10", "--metrics-port", "any")
    logger = pipeline.logger("--metrics-port", "any", "--flush-interval", "0.1")
    producer_port, logger_port = producer.info["metrics_port"], logger.info["metrics_port"]
    assert producer_port > 0 and logger_port > 0 and producer_port != logger_port
    pipeline.broadcaster()
    with connect(pipeline.ws_url, open_timeout=5) as ws:
        for _ in range(5):
            ws.recv(timeout=5)
        status, body, kind = get(http(pipeline) + "/metrics")
    text = body.decode()
    assert status == 200 and kind.startswith("text/plain")
    for name in (
        "stream_samples_received_total",
        "stream_frames_sent_total",
        "stream_clients 1.0",
        "stream_client_drops_total",
        "stream_lag_seconds",
    ):
        assert name in text, name
    produced = get(f"http://127.0.0.1:{producer_port}/metrics")[1].decode()
    assert (
        "stream_samples_published_total" in produced and "stream_catchup_requests_total" in produced
    )
    wait_until(
        lambda: (
            "stream_rows_written_total 0.0"
            not in get(f"http://127.0.0.1:{logger_port}/metrics")[1].decode()
        ),
        timeout=10,
    )
    logged = get(f"http://127.0.0.1:{logger_port}/metrics")[1].decode()
    assert "stream_gaps_total" in logged and "stream_rows_pending" in logged


def test_dashboard_page_is_served_and_self_contained(pipeline: Pipeline):
    """The dashboard page is served as HTML with no external URLs, and other paths are 404."""
    pipeline.producer("--rate", "5")
    pipeline.broadcaster()
    status, body, kind = get(http(pipeline) + "/")
    assert status == 200 and kind.startswith("text/html")
    page = body.decode()
    assert "<canvas" in page or "canvas" in page
    assert "http://" not in page and "https://" not in page  # no CDN: works offline
    assert get(http(pipeline) + "/../README.md")[0] == 404
    assert get(http(pipeline) + "/nope.html")[0] == 404


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    """Headless Debian chromium under Selenium, with a fresh profile; always quit at the end.

    Selenium drives Debian's chromium through Debian's chromedriver: both come from the same
    Debian source package, so their protocol versions always match, and selenium itself is
    pure Python from PyPI. Both paths are explicit, so Selenium Manager never downloads.
    """
    monkeypatch.setenv("SE_OFFLINE", "true")  # belt and braces: no Selenium Manager downloads
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        # Without these, the closed network refuses many connections.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,900",
    ):
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


def js(driver: WebDriver, expression: str):
    """The value of a JavaScript expression in the page."""
    return driver.execute_script(f"return {expression};")


@pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
    reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium and chromium-driver)",
)
def test_dashboard_in_a_real_browser(pipeline: Pipeline, browser: WebDriver):
    """Charts fill and update; an injected anomaly shows up shaded; a screenshot is saved."""
    control = f"ipc://{pipeline.cwd}/control.sock"
    pipeline.producer(
        "--rate", "10", "--devices", "2", "--anomaly-rate", "0", "--zmq-control", control
    )
    pipeline.broadcaster()
    browser.get(http(pipeline) + "/")
    wait = WebDriverWait(browser, timeout=20, poll_frequency=0.1)
    wait.until(lambda d: (js(d, "window.dashboard.samples") or 0) > 20, "charts did not fill")
    first = js(browser, "window.dashboard.samples")
    wait.until(lambda d: js(d, "window.dashboard.samples") > first, "no live updates")
    assert js(browser, "window.dashboard.samples") > first  # live updates
    assert js(browser, "window.dashboard.connected") is True
    assert js(browser, "document.getElementById('device').options.length") == 2
    subprocess.run(
        [
            sys.executable,
            "-m",
            "producer",
            "ctl",
            "--zmq-control",
            control,
            "inject",
            "incident",
            "--device",
            "host-01",
            "--duration",
            "20s",
        ],
        env={"PYTHONPATH": str(REPO)},
        check=True,
        capture_output=True,
        timeout=20,
    )
    WebDriverWait(browser, timeout=15, poll_frequency=0.1).until(
        lambda d: "incident" in (js(d, "window.dashboard.shaded") or []),
        "the injected incident was not shaded",
    )
    # Let the shaded band grow to ~2 s (20 samples of each of the 2 devices at 10/s) so it
    # is plainly visible in the screenshot.
    shaded_at = js(browser, "window.dashboard.samples")
    wait.until(lambda d: js(d, "window.dashboard.samples") >= shaded_at + 40, "updates stopped")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / "dashboard.png"
    assert browser.save_screenshot(str(path)), path
    print(f"dashboard screenshot: {path}", file=sys.stderr)


@pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
    reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium and chromium-driver)",
)
def test_dashboard_resumes_across_a_broadcaster_restart(pipeline: Pipeline, browser: WebDriver):
    """Behind a token, the dashboard reconnects to a restarted broadcaster and resumes after
    the last seq it has of each device: no seq jumps, no repeats, no gap."""
    pipeline.producer("--rate", "10", "--devices", "2")
    port = unused_port()
    args = ("--ws-host", "127.0.0.1", "--ws-port", str(port))
    token = {"STREAM_WS_TOKEN": "dash-token"}
    first = pipeline.broadcaster(*args, env=token)
    browser.get(f"http://127.0.0.1:{port}/?token=dash-token")
    wait = WebDriverWait(browser, timeout=20, poll_frequency=0.1)
    wait.until(lambda d: (js(d, "window.dashboard.samples") or 0) > 20, "charts did not fill")
    wait.until(lambda d: js(d, "document.getElementById('legend').children.length") > 0)
    first.stop(signal.SIGKILL)
    wait.until(lambda d: js(d, "window.dashboard.connected") is False, "no disconnect seen")
    before = js(browser, "window.dashboard.samples")
    pipeline.broadcaster(*args, env=token)
    wait.until(lambda d: js(d, "window.dashboard.resumes") >= 1, "no resume")
    # at 10 Hz x 2 devices the outage (>= 1 s) left >= 20 samples to refill, then live ones
    wait.until(lambda d: js(d, "window.dashboard.samples") >= before + 80, "no samples after")
    state = js(browser, "window.dashboard")
    assert (state["jumps"], state["repeats"], state["gaps"]) == (0, 0, []), state


HOSTILE_IDS = [
    '<img src=x onerror="window.pwned=1">',
    "</option><script>window.pwned=2</script>",
    'rack 4, "top" & co',
    "温度センサー-7",
]


@pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
    reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium and chromium-driver)",
)
def test_device_ids_are_shown_as_text_never_as_html(pipeline: Pipeline, browser: WebDriver):
    """Device ids holding markup, quotes and other scripts, replayed from a file, appear in the
    device picker exactly as written, and none of their markup runs in the page."""
    lines = ["timestamp,cpu,mem,disk_io,net,device"]
    for second in range(600):
        for device in HOSTILE_IDS:
            quoted = '"' + device.replace('"', '""') + '"'
            lines.append(
                f"2025-08-04 00:{second // 60:02d}:{second % 60:02d},5.0,6.0,7.0,8.0,{quoted}"
            )
    replay = pipeline.cwd / "hostile.csv"
    replay.write_text("\n".join(lines) + "\n", encoding="utf-8")
    pipeline.producer("--source", "replay", "--replay-file", str(replay), "--speed", "20")
    pipeline.broadcaster()
    browser.get(http(pipeline) + "/")
    wait = WebDriverWait(browser, timeout=20, poll_frequency=0.1)
    wait.until(
        lambda d: js(d, "document.getElementById('device').options.length") == len(HOSTILE_IDS),
        "not every device reached the picker",
    )
    shown = js(browser, "Array.from(document.getElementById('device').options, o => o.text)")
    assert sorted(shown) == sorted(HOSTILE_IDS)
    assert js(browser, "window.pwned === undefined")
    assert js(browser, "document.querySelectorAll('img').length") == 0


@pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
    reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium and chromium-driver)",
)
def test_dashboard_shows_a_scenarios_name_and_planned_events(
    pipeline: Pipeline, browser: WebDriver
):
    """With --scenario the header names the scenario, the legend lists the event kinds after
    the anomaly kinds, and a deploy shows as an event bar, not as a shaded anomaly."""
    scenario = pipeline.cwd / "demo.toml"
    scenario.write_text(
        'name = "demo day"\n'
        '[[group]]\nrole = "web"\ncount = 2\nid = "web-{n:02d}"\n'
        '[[deploy]]\nat = "+3s"\ndevices = "web-01"\nduration = "60s"\n'
    )
    pipeline.producer("--rate", "10", "--anomaly-rate", "0", "--scenario", str(scenario))
    pipeline.broadcaster("--scenario", str(scenario))
    browser.get(http(pipeline) + "/")
    wait = WebDriverWait(browser, timeout=20, poll_frequency=0.1)
    wait.until(lambda d: js(d, "window.dashboard.scenario") == "demo day", "no scenario name")
    assert "demo day" in js(browser, "document.getElementById('scenario').textContent")
    legend = js(browser, "document.getElementById('legend').textContent")
    assert legend.endswith("windowmaintenancedeployload_test"), legend
    wait.until(lambda d: js(d, "window.dashboard.device") == "web-01", "web-01 not shown")
    wait.until(lambda d: "deploy" in (js(d, "window.dashboard.events") or []), "no deploy bar")
    assert js(browser, "window.dashboard.shaded") == []  # a deploy is not an anomaly
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / "dashboard-scenario.png"
    assert browser.save_screenshot(str(path)), path
