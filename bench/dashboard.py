"""The dashboard under a large, fast fleet: does the page keep up with 1,000 devices x 10 Hz?

    python bench/dashboard.py [--devices 1000 --rate 10 --duration 30] [--smoke]

A producer (speed 1, starting now: a sample's timestamp is when it was due) and a broadcaster
run on this machine; headless Chromium opens the dashboard. The page itself records, for a
benchmark to read: the lag of every frame it receives (its clock when the frame is handled
minus the newest sample's own timestamp), the lag of what it draws (its clock after drawing
minus the newest sample's timestamp), the time between two animation frames, and its main
thread's work per message and per drawing. Phases, each `--duration` seconds after a warm-up
(the history a new page asks for):

1. baseline: a bare WebSocket client (Python, the same subscription: every device, one JSON
   array per tick) and nothing else: the stream's own delivery lag on this machine;
2. the fleet view: the page's table of every device;
3. the device view: the four charts of one device, the fleet still received.

The page keeps up when its lag stays flat (the last third of a phase no later than the
first) and near the baseline's. Results go to bench/results/dashboard.json.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import Usage, percentiles, ready, start, stop, table, write  # noqa: E402
from bench.browser import chromium, js  # noqa: E402

WARM_UP_S = 5.0

_RESET = "for (const list of Object.values(window.dashboard.perf)) list.length = 0;"


def _stamp_ms(text: str) -> float:
    """A sample's timestamp (UTC text) as epoch milliseconds."""
    return float(np.datetime64(text.replace(" ", "T"), "ms").astype(np.int64))


async def _baseline(url: str, duration: float, warm_up: float) -> dict:
    """A bare client's lags (ms) per frame, and samples received, over `duration`."""
    lags: list[float] = []
    samples = 0
    async with websockets.connect(
        url + "/?batch=1&history=0", max_size=None, compression=None
    ) as ws:
        began = time.monotonic()
        while (elapsed := time.monotonic() - began) < warm_up + duration:
            frame = json.loads(await ws.recv())
            if elapsed < warm_up or not isinstance(frame, list) or not frame:
                continue
            newest = max(_stamp_ms(s["timestamp"]) for s in frame[-1:])
            lags.append(time.time() * 1000 - newest)
            samples += len(frame)
    return {"arrival_ms": lags, "samples": samples}


def _page_phase(driver, duration: float) -> dict:
    """What the page measured over `duration` seconds, from now."""
    driver.execute_script(_RESET)
    before = js(driver, "window.dashboard.samples")
    time.sleep(duration)
    perf = js(driver, "window.dashboard.perf")
    return {
        **perf,
        "samples": js(driver, "window.dashboard.samples") - before,
        # a page the broadcaster dropped as too slow reconnects and resumes: it fell behind
        "resumes": js(driver, "window.dashboard.resumes"),
    }


# What the page (and the bare client) measured -> the name in the results.
_NAMES = {
    "arrival_ms": "arrival_ms",  # the bare client's
    "arrivals": "arrival_ms",  # the page's, when it handles a frame
    "lags": "drawn_ms",  # the page's, once it has drawn
    "frames": "frame_ms",  # between two animation frames
    "work": "work_ms",  # handling one message
    "render": "render_ms",  # one drawing
}


def _summary(phase: dict, duration: float, offered: float) -> dict:
    out: dict = {"samples_per_s": phase["samples"] / duration, "offered_per_s": offered}
    if "resumes" in phase:
        out["resumes"] = phase["resumes"]
    for name, key in _NAMES.items():
        values = phase.get(name)
        if values is None:
            continue
        out[key] = percentiles(values)
        if key in ("arrival_ms", "drawn_ms") and len(values) >= 6:  # does the lag grow?
            third = len(values) // 3
            out[key]["first_third_p50"] = float(np.median(values[:third]))
            out[key]["last_third_p50"] = float(np.median(values[-third:]))
    return out


@click.command()
@click.option("--devices", default=1000, show_default=True)
@click.option("--rate", default=10.0, show_default=True, help="Samples per second per device.")
@click.option("--duration", default=30.0, show_default=True, help="Seconds measured per phase.")
@click.option("--smoke", is_flag=True, help="A check that it runs: 50 devices, 3 s a phase.")
def main(devices: int, rate: float, duration: float, smoke: bool) -> None:
    if smoke:
        devices, duration = 50, 3.0
    warm_up = 2.0 if smoke else WARM_UP_S
    work = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    endpoints = [f"--zmq-{k}=ipc://{work}/{k}" for k in ("pub", "catchup", "control")]
    producer = start(
        "producer",
        *endpoints,
        f"--state={work}/state.json",
        f"--devices={devices}",
        f"--rate={rate}",
        cwd=work,
    )
    broadcaster = start("broadcaster", *endpoints, "--ws-port=0", cwd=work)
    offered = devices * rate
    results: dict = {"devices": devices, "rate": rate, "duration_s": duration}
    try:
        ready(producer)
        url = ready(broadcaster)["url"].rstrip("/")
        usage = Usage(broadcaster.pid)
        base = asyncio.run(_baseline(url, duration, warm_up))
        results["baseline"] = _summary(base, duration, offered)
        with chromium(work, 1300, 950) as driver:
            driver.get(url.replace("ws://", "http://") + "/")
            deadline = time.monotonic() + 30
            while js(driver, "window.dashboard.view") != "fleet":
                if time.monotonic() > deadline:
                    raise RuntimeError("the dashboard did not show the fleet")
                time.sleep(0.1)
            time.sleep(warm_up)
            results["fleet_view"] = _summary(_page_phase(driver, duration), duration, offered)
            driver.execute_script("location.hash = 'device=host-01'")
            time.sleep(warm_up)
            results["device_view"] = _summary(_page_phase(driver, duration), duration, offered)
        results["broadcaster"] = usage.report()
    finally:
        stop(producer, broadcaster)
        shutil.rmtree(work, ignore_errors=True)
    print(table(_rows(results)))
    floor = results["baseline"]["arrival_ms"]
    for name in ("fleet_view", "device_view"):
        lag = results[name]["arrival_ms"]
        results[name]["lag_vs_baseline"] = {p: lag[p] / max(floor[p], 1.0) for p in ("p50", "p99")}
        print(
            f"{name}: received lag p50 {lag['p50'] / max(floor['p50'], 1):.2f}x, "
            f"p99 {lag['p99'] / max(floor['p99'], 1):.2f}x the bare client's"
        )
    print(f"wrote {write('dashboard', results)}")


def _rows(results: dict) -> list[list[str]]:
    def ms(part: dict, key: str) -> str:
        return f"{part[key]:.0f}" if part else ""

    rows = [
        [
            "phase",
            "samples/s",
            "lag p50/p99 ms",
            "drawn p50/p99 ms",
            "frame p50/p99 ms",
            "lag p50, 1st / last third",
            "dropped",
        ]
    ]
    for name in ("baseline", "fleet_view", "device_view"):
        r = results[name]
        lag, drawn, frames = r["arrival_ms"], r.get("drawn_ms", {}), r.get("frame_ms", {})
        rows.append(
            [
                name,
                f"{r['samples_per_s']:,.0f} of {r['offered_per_s']:,.0f}",
                f"{ms(lag, 'p50')} / {ms(lag, 'p99')}",
                f"{ms(drawn, 'p50')} / {ms(drawn, 'p99')}" if drawn else "",
                f"{frames['p50']:.1f} / {frames['p99']:.1f}" if frames else "",
                f"{ms(lag, 'first_third_p50')} / {ms(lag, 'last_third_p50')}",
                str(r.get("resumes", "")),
            ]
        )
    return rows


if __name__ == "__main__":
    main()
