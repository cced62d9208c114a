"""Draw the dashboard's pictures: docs/dashboard-fleet.png and docs/dashboard-device.png.

python docs/screenshots.py [--out docs]

Runs a producer and a broadcaster with a small scenario (60 devices in four groups, a
database incident that spreads to the web tier and leaks memory on the caches, a rolling
deploy, random anomalies), its clock ten times as fast as the wall's, opens the dashboard
in headless Chromium (Debian's chromium and chromium-driver, as the tests use) and saves the
fleet view, then the device view of a cache whose memory leaks (mem-only: only its mem chart
is shaded).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import ready, start, stop  # noqa: E402
from bench.browser import chromium, js  # noqa: E402

SCENARIO = """
name = "db stall, mid-morning"
[[group]]
name = "web"
role = "web"
count = 30
id = "web-{n:02d}"
  [group.anomalies]
  rate = 6
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
[[group]]
name = "workers"
role = "batch"
count = 10
id = "worker-{n:02d}"
  [group.anomalies]
  rate = 10

[[incident]]
name = "db-01 stalls"
at = "+3m"
root = "db-01"
kind = "incident"
duration = "20m"
  [[incident.symptom]]
  group = "web"
  kind = "level_shift"
  metric = "cpu"
  delay = "40s"
  stagger = "4s"
  duration = "18m"
  [[incident.symptom]]
  devices = "cache-0[1-4]"
  kind = "memory_leak"
  delay = "1m"
  duration = "15m"

[[deploy]]
at = "+1m"
devices = "web-2*"
every = "20s"
duration = "3m"
"""
START = "2025-08-04T10:00:00"
SPEED = 10  # simulated seconds per wall second
RATE = 2  # samples per simulated second per device


def _until(driver, expression: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not js(driver, expression):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the dashboard did not show: {expression}")
        time.sleep(0.2)


@click.command()
@click.option("--out", default=str(Path(__file__).resolve().parent), show_default=True)
def main(out: str) -> None:
    target = Path(out)
    work = Path(tempfile.mkdtemp(prefix="screenshots-"))
    scenario = work / "stall.toml"
    scenario.write_text(SCENARIO)
    endpoints = [f"--zmq-{k}=ipc://{work}/{k}" for k in ("pub", "catchup", "control")]
    producer = start(
        "producer",
        *endpoints,
        f"--state={work}/state.json",
        f"--scenario={scenario}",
        f"--start={START}",
        f"--speed={SPEED}",
        f"--rate={RATE}",
        "--seed=42",
        cwd=work,
    )
    broadcaster = start(
        "broadcaster", *endpoints, "--ws-port=0", f"--scenario={scenario}", cwd=work
    )
    try:
        ready(producer)
        url = ready(broadcaster)["url"].replace("ws://", "http://")
        with chromium(work, 1300, 1050) as driver:
            driver.get(url)
            # 5 simulated minutes: the incident has spread, the caches leak, a deploy rolls.
            _until(driver, "window.dashboard.view === 'fleet'")
            _until(driver, "(window.dashboard.counts['anomaly:memory_leak'] || 0) >= 4", 90)
            time.sleep(3)
            driver.save_screenshot(str(target / "dashboard-fleet.png"))
            driver.execute_script("location.hash = 'device=cache-02'")
            _until(driver, "(window.dashboard.shadedBy.mem || []).includes('memory_leak')")
            time.sleep(8)  # a longer window of the leak
            driver.save_screenshot(str(target / "dashboard-device.png"))
    finally:
        stop(producer, broadcaster)
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {target / 'dashboard-fleet.png'} and {target / 'dashboard-device.png'}")


if __name__ == "__main__":
    main()
