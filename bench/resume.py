"""What one resume costs: a client asks for `--samples` missed samples (since=-1, the bound
set to that many) while 100 devices x 100 Hz flow.

    python bench/resume.py [--samples 100000] [--rounds 3] [--quick | --smoke]

Measures the wall time from connecting to the last missed sample, the CPU seconds the
broadcaster and the producer spend meanwhile, and the broadcaster's peak RSS. Baseline, in
the same run: the broadcaster's CPU for relaying as many live samples to one client.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import click
import psutil
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import Usage, ready, start, summary, table, write  # noqa: E402

DEVICES, RATE = 100, 100  # 10,000 samples/s


def _cpu_s(usage: Usage) -> float:
    report = usage.report()
    return report["cpu_percent"] * report["wall_s"] / 100


def _peak_rss_mb(pid: int) -> float:
    """The process's high-water RSS (Linux), else its RSS now."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return psutil.Process(pid).memory_info().rss / 2**20


def _receive(url: str, samples: int) -> float:
    """Seconds until `samples` samples (not counting a gap message) have arrived."""
    began = time.perf_counter()
    got = 0
    # The client leaves without reading what is still on its way: its close then waits
    # close_timeout for the server's answer queued behind it; that is not measured.
    with connect(url, open_timeout=10, close_timeout=0.5, max_size=None, compression=None) as ws:
        while got < samples:
            parsed = json.loads(ws.recv(timeout=60))
            got += len(parsed) if isinstance(parsed, list) else 0
        took = time.perf_counter() - began
    return took


def _metric(url: str, name: str) -> float:
    page = urllib.request.urlopen(url.replace("ws://", "http://") + "metrics", timeout=10)
    for line in page.read().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise RuntimeError(f"no {name} in /metrics")


@click.command()
@click.option("--samples", default=100_000, show_default=True, help="Missed samples to resume.")
@click.option("--rounds", default=3, show_default=True)
@click.option("--quick", is_flag=True, help="10,000 samples, 2 rounds.")
@click.option("--smoke", is_flag=True, help="A check that it runs: 2,000 samples, 1 round.")
def main(samples: int, rounds: int, quick: bool, smoke: bool) -> None:
    if quick or smoke:
        samples, rounds = (2_000, 1) if smoke else (10_000, 2)
    work = Path(tempfile.mkdtemp(prefix="bench-resume-"))
    endpoints = (f"--zmq-pub=ipc://{work}/pub", f"--zmq-catchup=ipc://{work}/catchup")
    producer = start(
        "producer",
        *endpoints,
        f"--zmq-control=ipc://{work}/control",
        *(f"--rate={RATE}", f"--devices={DEVICES}", f"--state={work}/state.json"),
        cwd=work,
    )
    broadcaster = start(
        "broadcaster", *endpoints, "--ws-port=0", f"--resume-max={samples}", cwd=work
    )
    try:
        ready(producer)
        url = ready(broadcaster)["url"]
        time.sleep(samples / (DEVICES * RATE) + 1)  # the producer's history fills
        rss_before = _peak_rss_mb(broadcaster.pid)
        serving, publishing = Usage(broadcaster.pid), Usage(producer.pid)
        resume: dict[str, list[float]] = {
            "wall_s": [],
            "broadcaster_cpu_s": [],
            "producer_cpu_s": [],
        }
        for _ in range(rounds):
            serving.restart()
            publishing.restart()
            resume["wall_s"].append(_receive(f"{url}?since=-1&batch=1", samples))
            resume["broadcaster_cpu_s"].append(_cpu_s(serving))
            resume["producer_cpu_s"].append(_cpu_s(publishing))
        peak_mb = _peak_rss_mb(broadcaster.pid)
        sent = _metric(url, "stream_resumed_samples_total")  # all from the history?
        # Baseline: as many live samples to one client; and the producer publishing alone.
        serving.restart()
        publishing.restart()
        live_wall = _receive(f"{url}?batch=1", samples)
        live = {"wall_s": live_wall, "broadcaster_cpu_s": _cpu_s(serving)}
        publishing_per_s = _cpu_s(publishing) / live_wall
    finally:
        for process in (broadcaster, producer):
            process.terminate()
            process.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "samples": samples,
        "history_samples_sent": sent,
        "devices": DEVICES,
        "rate_hz": RATE,
        "resume": {k: summary(v) for k, v in resume.items()},
        "producer_publishing_cpu_per_s": publishing_per_s,
        "live_baseline": live,
        "broadcaster_rss_mb": {"before": rss_before, "peak": peak_mb},
    }
    rows = [
        ["what", "wall s", "broadcaster CPU s", "producer CPU s"],
        [
            f"resume of {samples:,} (median of {rounds}; {sent / rounds:,.0f} from history)",
            f"{result['resume']['wall_s']['median']:.2f}",
            f"{result['resume']['broadcaster_cpu_s']['median']:.2f}",
            f"{result['resume']['producer_cpu_s']['median']:.2f}",
        ],
        [
            f"baseline: {samples:,} live samples to one client",
            f"{live_wall:.2f}",
            f"{live['broadcaster_cpu_s']:.2f}",
            f"{publishing_per_s:.2f} per s publishing",
        ],
    ]
    print(table(rows))
    print(f"broadcaster peak RSS {rss_before:.0f} MB before, {peak_mb:.0f} MB after the resumes")
    print(f"results: {write('resume', result)}")


if __name__ == "__main__":
    main()
