"""The broadcaster's plain-HTTP side: health, metrics, and the live dashboard in a browser."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest
from websockets.sync.client import connect

from conftest import REPO, Pipeline, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(os.environ.get("STREAM_SCREENSHOTS", tempfile.gettempdir()))


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


def http(pipeline: Pipeline) -> str:
    return pipeline.ws_url.replace("ws://", "http://")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_healthz_follows_the_freshness_of_samples(pipeline: Pipeline):
    producer = pipeline.producer("--rate", "10")
    pipeline.broadcaster("--stale-after", "1")
    wait_until(lambda: get(http(pipeline) + "/healthz")[0] == 200, timeout=10)
    status, body, kind = get(http(pipeline) + "/healthz")
    assert kind == "application/json" and json.loads(body)["status"] == "ok"
    producer.stop()
    wait_until(lambda: get(http(pipeline) + "/healthz")[0] == 503, timeout=5)
    assert json.loads(get(http(pipeline) + "/healthz")[1])["status"] == "stale"


def test_metrics_of_all_three_processes(pipeline: Pipeline):
    producer_port, logger_port = free_port(), free_port()
    pipeline.producer("--rate", "10", "--metrics-port", str(producer_port))
    pipeline.logger("--metrics-port", str(logger_port), "--flush-interval", "0.1")
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
        "stream_samples_published_total" in produced and "stream_replay_requests_total" in produced
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
    pipeline.producer("--rate", "5")
    pipeline.broadcaster()
    status, body, kind = get(http(pipeline) + "/")
    assert status == 200 and kind.startswith("text/html")
    page = body.decode()
    assert "<canvas" in page or "canvas" in page
    assert "http://" not in page and "https://" not in page  # no CDN: works offline
    assert get(http(pipeline) + "/../README.md")[0] == 404
    assert get(http(pipeline) + "/nope.html")[0] == 404


class Browser:
    """Headless Chromium driven over the DevTools protocol (with the websockets library)."""

    def __init__(self, url: str, profile: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--remote-debugging-port={self.port}",
                "--window-size=1200,900",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._ready, timeout=30)
        pages = json.loads(get(f"http://127.0.0.1:{self.port}/json")[1])
        target = next(p for p in pages if p["type"] == "page")
        self._stack = ExitStack()
        self.ws = self._stack.enter_context(
            connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        )
        self.next_id = 0

    def _ready(self) -> bool:
        try:
            return get(f"http://127.0.0.1:{self.port}/json/version")[0] == 200
        except OSError:
            return False

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=30))
            if reply.get("id") == self.next_id:
                return reply.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def close(self) -> None:
        self._stack.close()
        self.proc.kill()
        self.proc.wait(10)


@pytest.mark.skipif(not CHROMIUM, reason="needs Chromium (Debian package chromium)")
def test_dashboard_in_a_real_browser(pipeline: Pipeline, tmp_path: Path):
    """Charts fill and update; an injected anomaly shows up shaded; a screenshot is saved."""
    control = f"ipc://{pipeline.cwd}/control.sock"
    pipeline.producer(
        "--rate", "10", "--devices", "2", "--anomaly-rate", "0", "--zmq-control", control
    )
    pipeline.broadcaster()
    browser = Browser(http(pipeline) + "/", tmp_path / "profile")
    try:
        wait_until(lambda: (browser.evaluate("window.dashboard.samples") or 0) > 20, timeout=20)
        first = browser.evaluate("window.dashboard.samples")
        time.sleep(1.5)
        assert browser.evaluate("window.dashboard.samples") > first  # live updates
        assert browser.evaluate("window.dashboard.connected") is True
        assert browser.evaluate("document.getElementById('device').options.length") == 2
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
        wait_until(
            lambda: "incident" in (browser.evaluate("window.dashboard.shaded") or []), timeout=15
        )
        time.sleep(2)
        shot = browser.call("Page.captureScreenshot", format="png")["data"]
        path = SCREENSHOTS / "dashboard.png"
        path.write_bytes(base64.b64decode(shot))
        print(f"dashboard screenshot: {path}", file=sys.stderr)
    finally:
        browser.close()
