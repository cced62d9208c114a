"""The broadcaster's plain-HTTP side: health, metrics, and the live dashboard in a browser."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait
from websockets.sync.client import connect

from bench.browser import MISSING, available, chromium, js
from broadcaster.palette import ANOMALY_COLORS
from conftest import Pipeline, Recorder, unused_port, wait_until

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
    """The page, its script and style and the vendored chart library are served with no
    external URL (no CDN: it works offline); the library and the page's code are public even
    behind a token, the page itself is not; other paths are 404."""
    pipeline.producer("--rate", "5")
    pipeline.broadcaster("--token", "t0k")
    base = http(pipeline)
    assert get(base + "/")[0] == 401
    status, body, kind = get(base + "/?token=t0k")
    assert status == 200 and kind.startswith("text/html")
    page = body.decode()
    assert "vendor/uplot-1.6.32/uPlot.iife.min.js" in page and "dashboard.js" in page
    for path, content in [
        ("/dashboard.js", "text/javascript"),
        ("/dashboard.css", "text/css"),
        ("/vendor/uplot-1.6.32/uPlot.iife.min.js", "text/javascript"),
        ("/vendor/uplot-1.6.32/uPlot.min.css", "text/css"),
    ]:
        status, body, kind = get(base + path)
        assert status == 200 and kind.startswith(content), path
        if not path.startswith("/vendor/"):
            assert b"http://" not in body and b"https://" not in body, path
    assert "http://" not in page and "https://" not in page
    assert get(base + "/../README.md?token=t0k")[0] == 404
    assert get(base + "/vendor/uplot-1.6.32/LICENSE")[0] == 404  # scripts and styles only
    assert get(base + "/vendor/%2E%2E/%2E%2E/config.py")[0] != 200
    assert get(base + "/nope.html?token=t0k")[0] == 404


def test_fleet_json_says_what_the_producers_say(pipeline: Pipeline):
    """/fleet.json gathers the producers' status: each device's role and scenario group, the
    anomaly kinds this stream can hold (the groups' random kinds and the incidents'), the
    planned events with their times, and the rate; /schema.json names the columns (the new
    anomaly_metrics last) and the colours."""
    scenario = pipeline.cwd / "small.toml"
    scenario.write_text(
        'name = "small"\n'
        '[[group]]\nname = "front"\nrole = "web"\ncount = 2\nid = "web-{n:02d}"\n'
        '  [group.anomalies]\n  kinds = "spike"\n'
        '[[group]]\nrole = "db"\ncount = 1\nid = "db-01"\n'
        '  [group.anomalies]\n  rate = 0\n'
        '[[incident]]\nat = "+1h"\nroot = "db-01"\nkind = "dip"\nmetric = "disk_io"\n'
        '[[deploy]]\nat = "+10m"\ngroup = "front"\nevery = "5m"\nduration = "2m"\n'
    )
    pipeline.producer("--rate", "4", "--scenario", str(scenario), "--start", START)
    pipeline.broadcaster()
    base = http(pipeline)
    wait_until(lambda: json.loads(get(base + "/fleet.json")[1])["answered"] == 1, timeout=10)
    fleet = json.loads(get(base + "/fleet.json")[1])
    assert fleet["devices"] == {
        "web-01": {"role": "web", "group": "front"},
        "web-02": {"role": "web", "group": "front"},
        "db-01": {"role": "db", "group": "db"},
    }
    assert fleet["anomaly_kinds"] == ["spike", "dip"] and fleet["event_kinds"] == ["deploy"]
    began = int(datetime.fromisoformat(START).replace(tzinfo=UTC).timestamp() * 1000)
    deploys = [(d, began + start, began + start + 120_000) for d, start in
               (("web-01", 600_000), ("web-02", 900_000))]
    assert fleet["planned"] == [
        {"device": d, "kind": "deploy", "start_ms": a, "end_ms": b} for d, a, b in deploys
    ]
    assert (fleet["rate"], fleet["speed"], fleet["scenario"]) == (4, 1, "small")
    described = json.loads(get(base + "/schema.json")[1])
    assert described["columns"][-1] == "anomaly_metrics"
    assert described["anomaly_metrics"][:3] == ["cpu", "mem", "cpu|mem"]
    assert described["colors"]["anomaly"]["memory_leak"] == ANOMALY_COLORS["memory_leak"]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Debian chromium under Selenium, with a fresh profile; always quit at the end."""
    with chromium(tmp_path) as driver:
        yield driver


needs_chromium = pytest.mark.skipif(not available(), reason=MISSING)


def save(browser: WebDriver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    assert browser.save_screenshot(str(path)), path
    print(f"dashboard screenshot: {path}", file=sys.stderr)


FLEET_SCENARIO = """
name = "db stall"
[[group]]
name = "web"
role = "web"
count = 30
id = "web-{n:02d}"
[[group]]
name = "db"
role = "db"
count = 10
id = "db-{n:02d}"
[[group]]
name = "cache"
role = "cache"
count = 10
id = "cache-{n:02d}"

[[incident]]
name = "db-01 stalls"
at = "+4s"
root = "db-01"
kind = "incident"
duration = "90s"
  [[incident.symptom]]
  group = "web"
  kind = "level_shift"
  metric = "cpu"
  delay = "2s"
  stagger = "400ms"
  duration = "80s"
  [[incident.symptom]]
  devices = "cache-0[1-4]"
  kind = "memory_leak"
  delay = "2s"
  duration = "80s"
"""
START = "2025-08-04T10:00:00"


@needs_chromium
def test_the_fleet_view_marks_exactly_the_devices_the_stream_labels(
    pipeline: Pipeline, browser: WebDriver
):
    """50 devices with an incident spreading from a db to 30 web front ends and 4 caches: the
    fleet view (the default with more than one device) shows each device in the state the
    stream labels its newest sample with, as a WebSocket client beside it receives them; the
    'anomalous' filter lists exactly the anomalous ones and the counts add up; a click opens
    a device, whose mem-only memory_leak is shaded on the mem chart only, on a time axis in
    the stream's simulated UTC time."""
    scenario = pipeline.cwd / "stall.toml"
    scenario.write_text(FLEET_SCENARIO)
    pipeline.producer("--rate", "5", "--scenario", str(scenario), "--start", START)
    pipeline.broadcaster("--scenario", str(scenario))
    labels = Recorder(pipeline.ws_url)
    try:
        browser.set_window_size(1300, 1900)  # every anomalous device fits on the screen
        browser.get(http(pipeline) + "/")
        wait = WebDriverWait(browser, timeout=30, poll_frequency=0.1)
        wait.until(lambda d: js(d, "window.dashboard.view") == "fleet", "no fleet view")
        wait.until(
            lambda d: (js(d, "window.dashboard.counts.anomalous") or 0) >= 25,
            "the incident did not spread",
        )
        browser.find_element(By.CSS_SELECTOR, '#counts button[data-state="anomalous"]').click()
        wait.until(
            lambda d: js(d, "document.querySelector('#counts .active').dataset.state")
            == "anomalous"
        )
        for _ in range(3):  # three moments, as the incident spreads
            time.sleep(0.7)  # the scenario: the fleet moves on between two looks
            drawn, rows, counts = browser.execute_script(
                "const rows = Array.from(document.querySelectorAll('#rows .row'))"
                "  .filter(r => !r.hidden).map(r => [r.dataset.device, +r.dataset.seq,"
                "  r.dataset.state, r.querySelector('.c-device').textContent]);"
                "return [window.dashboard.fleetSnapshot(), rows, window.dashboard.counts];"
            )
            assert len(drawn) == 50
            wait_until(
                lambda drawn=drawn: all((d, s) in labels.seen for d, (s, _) in drawn.items()),
                timeout=10,
                message="the WebSocket client did not get what the page drew",
            )
            expected = {d: labels.state(d, seq) for d, (seq, _) in drawn.items()}
            assert {d: state for d, (_, state) in drawn.items()} == expected
            anomalous = {d for d, state in expected.items() if state.startswith("anomaly:")}
            assert {r[0] for r in rows} == anomalous and len(rows) == len(anomalous)
            assert all(r[0] == r[3] and drawn[r[0]] == [r[1], r[2]] for r in rows)
            assert counts["anomalous"] == len(anomalous) and counts["all"] == 50
            for state in set(expected.values()):
                assert counts[state] == list(expected.values()).count(state), state
        save(browser, "dashboard-fleet.png")

        # By role, whatever the state: the ten caches.
        browser.find_element(By.CSS_SELECTOR, '#counts button[data-state="all"]').click()
        Select(browser.find_element(By.ID, "group")).select_by_value("role:cache")
        shown = "Array.from(document.querySelectorAll('#rows .row:not([hidden])'),"
        shown += " r => r.dataset.device)"
        wait.until(lambda d: sorted(js(d, shown)) == [f"cache-{n:02d}" for n in range(1, 11)])

        # The pointer on the list holds its order still (rows would move under it), then a
        # click on the leaking cache's row opens that device.
        leaking = next(r for r in rows if r[2] == "anomaly:memory_leak")[0]
        ActionChains(browser).move_to_element(browser.find_element(By.ID, "rows")).perform()
        wait.until(lambda d: js(d, "window.dashboard.frozen") is True, "the order is not held")
        browser.find_element(By.CSS_SELECTOR, f'#rows .row[data-device="{leaking}"]').click()
        wait.until(lambda d: js(d, "window.dashboard.view") == "device", "no device view")
        assert js(browser, "window.dashboard.device") == leaking
        wait.until(
            lambda d: "memory_leak" in (js(d, "window.dashboard.shadedBy.mem") or []),
            "the memory leak is not shaded on the mem chart",
        )
        shaded = js(browser, "window.dashboard.shadedBy")
        assert all("memory_leak" not in shaded[m] for m in ("cpu", "disk_io", "net")), shaded
        # What the charts show half a second before the window's end (the leak began seconds
        # earlier): the leak's colour on top of mem only.
        moment = js(browser, "window.dashboard.window()")[1] - 0.5
        olive = [int(ANOMALY_COLORS["memory_leak"][i : i + 2], 16) for i in (1, 3, 5)]
        ribbons = {m: js(browser, f"window.dashboard.ribbon('{m}', {moment})") for m in shaded}
        assert ribbons["mem"][:3] == olive, ribbons
        assert all(ribbons[m][:3] != olive for m in ("cpu", "disk_io", "net")), ribbons

        # The time axis: the stream's own time (2025-08-04 10:00 UTC), not the wall clock's.
        first, last = js(browser, "window.dashboard.window()")
        began = datetime.fromisoformat(START).replace(tzinfo=UTC).timestamp()
        # filled from the window's start: the stream's first sample, from before the click
        assert first == began and last < began + 120, (first, last)
        ticks = js(browser, "window.dashboard.axis")
        assert ticks and all(re.fullmatch(r"10:0[0-2]:\d\d(\.\d{3})?", t) for t in ticks), ticks
        assert "2025-08-04 10:0" in js(browser, "window.dashboard.axisLabel")
        assert js(browser, "document.getElementById('simtime').textContent").startswith(
            "2025-08-04 10:0"
        )
        save(browser, "dashboard-device.png")
    finally:
        labels.close()


@needs_chromium
def test_an_injected_incident_is_shaded_on_every_chart_and_rates_are_labelled(
    pipeline: Pipeline, browser: WebDriver
):
    """Two devices at 10 Hz: the device view fills and updates, an injected incident (all
    four metrics) is shaded on all four charts, the device's rate (10/s) and the fleet's
    (20/s) are shown, each labelled, and the picker lists both devices."""
    pipeline.producer("--rate", "10", "--devices", "2", "--anomaly-rate", "0")
    pipeline.broadcaster()
    browser.get(http(pipeline) + "/#device=host-01")
    wait = WebDriverWait(browser, timeout=20, poll_frequency=0.1)
    wait.until(lambda d: (js(d, "window.dashboard.deviceSamples") or 0) > 20, "no charts")
    first = js(browser, "window.dashboard.deviceSamples")
    wait.until(lambda d: js(d, "window.dashboard.deviceSamples") > first, "no live updates")
    assert js(browser, "window.dashboard.connected") is True
    assert js(browser, "document.getElementById('device').options.length") == 2
    done = pipeline.ctl("inject", "incident", "--device", "host-01", "--duration", "20s")
    assert done.returncode == 0, done.stderr
    wait.until(
        lambda d: all("incident" in k for k in js(d, "Object.values(window.dashboard.shadedBy)")),
        "the injected incident was not shaded on every chart",
    )
    assert js(browser, "window.dashboard.legend") == ["incident"]  # injected: seen, so listed
    info = js(browser, "document.getElementById('device-info').textContent")
    assert "device rate 10.0 samples/s (simulated)" in info, info
    assert "configured 10 Hz per device" in info, info
    fleet = js(browser, "document.getElementById('fleet-rate').textContent")
    assert fleet.startswith("20.0 samples/s (simulated) from 2 device(s)"), fleet
    save(browser, "dashboard.png")


@needs_chromium
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
    wait.until(lambda d: js(d, "document.getElementById('counts').children.length") > 0)
    first.stop(signal.SIGKILL)
    wait.until(lambda d: js(d, "window.dashboard.connected") is False, "no disconnect seen")
    before = js(browser, "window.dashboard.samples")
    pipeline.broadcaster(*args, env=token)
    wait.until(lambda d: js(d, "window.dashboard.resumes") >= 1, "no resume")
    # at 10 Hz x 2 devices the outage (>= 1 s) left >= 20 samples to refill, then live ones
    wait.until(lambda d: js(d, "window.dashboard.samples") >= before + 80, "no samples after")
    state = js(browser, "{...window.dashboard, perf: null}")
    assert (state["jumps"], state["repeats"], state["gaps"]) == (0, 0, []), state


HOSTILE_IDS = [
    '<img src=x onerror="window.pwned=1">',
    "</option><script>window.pwned=2</script>",
    'rack 4, "top" & co',
    "温度センサー-7",
]


@needs_chromium
def test_device_ids_are_shown_as_text_never_as_html(pipeline: Pipeline, browser: WebDriver):
    """Device ids holding markup, quotes and other scripts, replayed from a file, appear in the
    fleet's rows and the device picker exactly as written, and none of their markup runs."""
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
    wait.until(
        lambda d: js(d, "document.querySelectorAll('#rows .row:not([hidden])').length") == 4
    )
    rows = js(
        browser, "Array.from(document.querySelectorAll('#rows .c-device'), c => c.textContent)"
    )
    assert sorted(r for r in rows if r) == sorted(HOSTILE_IDS)
    browser.find_element(By.CSS_SELECTOR, "#rows .row:not([hidden])").click()
    wait.until(lambda d: js(d, "window.dashboard.deviceSamples") > 0, "no device view")
    assert js(browser, "window.pwned === undefined")
    assert js(browser, "document.querySelectorAll('img, script:not([src])').length") == 0


@needs_chromium
def test_dashboard_shows_a_scenarios_name_and_planned_events(
    pipeline: Pipeline, browser: WebDriver
):
    """With --scenario the header names the scenario; the legend lists only the kinds this
    stream can hold (here: no random anomaly, one deploy), the deploy shows as an event bar,
    not as a shaded anomaly, and the device's planned events are listed with their times."""
    scenario = pipeline.cwd / "demo.toml"
    scenario.write_text(
        'name = "demo day"\n'
        '[[group]]\nrole = "web"\ncount = 2\nid = "web-{n:02d}"\n'
        '[[deploy]]\nat = "+3s"\ndevices = "web-01"\nduration = "60s"\n'
    )
    pipeline.producer(
        "--rate", "10", "--anomaly-rate", "0", "--scenario", str(scenario), "--start", START
    )
    pipeline.broadcaster("--scenario", str(scenario))
    browser.get(http(pipeline) + "/#device=web-01")
    wait = WebDriverWait(browser, timeout=20, poll_frequency=0.1)
    wait.until(lambda d: js(d, "window.dashboard.scenario") == "demo day", "no scenario name")
    assert "demo day" in js(browser, "document.getElementById('scenario').textContent")
    wait.until(lambda d: "deploy" in (js(d, "window.dashboard.events") or []), "no deploy bar")
    assert js(browser, "window.dashboard.shaded") == []  # a deploy is not an anomaly
    assert js(browser, "window.dashboard.legend") == ["deploy"]
    planned = js(browser, "document.getElementById('planned').textContent")
    assert "deploy2025-08-04 10:00:03" in planned and "10:01:03" in planned, planned
    save(browser, "dashboard-scenario.png")
