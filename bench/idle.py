"""Idle cost and start-up: the whole pipeline at 1 Hz x 1 device.

    python bench/idle.py [--duration 60] [--quick | --smoke]

Measures the CPU each process uses while idling (target: under 1 % of a core for all
three together, i.e. no busy waiting) and the time from `honcho start` to the first
sample at the test client, with its parts: the producer and the broadcaster ready, and
when that first sample was due (ticks at 1 Hz fall on whole seconds). Baseline: an idle
`python -c "import time; time.sleep(...)"`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import click
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import REPO, Usage, table, write  # noqa: E402


def _module(process: psutil.Process) -> str:
    command = process.cmdline()
    return command[command.index("-m") + 1] if "-m" in command else str(process.pid)


def _broadcaster_port(ready: Path, honcho: subprocess.Popen, timeout: float = 30.0) -> int:
    """The port the broadcaster listens on, from its ready file (it chose a free one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and honcho.poll() is None:
        try:
            return int(json.loads(ready.read_text())["ws_port"])
        except (OSError, ValueError, KeyError):
            time.sleep(0.02)
    raise RuntimeError(f"the broadcaster wrote no {ready} within {timeout} s")


@click.command()
@click.option("--duration", default=60.0, show_default=True)
@click.option("--quick", is_flag=True, help="10 s.")
@click.option("--smoke", is_flag=True, help="A check that it runs: 2 s.")
def main(duration: float, quick: bool, smoke: bool) -> None:
    duration = 2.0 if smoke else 10.0 if quick else duration
    work = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    shutil.copy(REPO / "Procfile", work / "Procfile")
    (work / ".env").write_text(
        f"STREAM_ZMQ_PUB=ipc://{work}/pub.sock\nSTREAM_ZMQ_CATCHUP=ipc://{work}/catchup.sock\n"
        f"STREAM_ZMQ_CONTROL=ipc://{work}/control.sock\nSTREAM_WS_PORT=0\n"
        f"STREAM_READY_FILE={work}/ready/{{instance}}.json\n"
    )
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    began, began_wall = time.monotonic(), time.time()
    honcho = subprocess.Popen(
        [os.path.join(bin_dir, "honcho"), "start"],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    port = _broadcaster_port(work / "ready" / "broadcaster.1.json", honcho)
    broadcaster_ready_s = time.monotonic() - began
    client = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "clients/test_client.py"),
            "--url",
            f"ws://localhost:{port}",
            "--count",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    output, _ = client.communicate(timeout=30)
    first_sample_s = time.monotonic() - began
    producer_ready_s = (work / "ready" / "producer.1.json").stat().st_mtime - began_wall
    # the first frame's sample: when it was due, against the start (the 1 Hz grid's wait)
    frame = json.loads(
        next(line for line in output.splitlines() if line.startswith("Received:"))[9:]
    )
    stamp = datetime.fromisoformat(frame["timestamp"]).replace(tzinfo=UTC).timestamp()
    first_due_s = stamp - began_wall
    time.sleep(2)
    children = psutil.Process(honcho.pid).children(recursive=True)
    pythons = [p for p in children if "python" in p.name().lower()]
    usage = {_module(p): Usage(p.pid) for p in pythons}
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    baseline = Usage(sleeper.pid)
    end = time.monotonic() + duration
    while time.monotonic() < end:
        time.sleep(1)
        for u in [*usage.values(), baseline]:
            u.sample()
    reports = {name: u.report() for name, u in usage.items()}
    base = baseline.report()
    sleeper.kill()
    os.killpg(honcho.pid, signal.SIGTERM)
    honcho.wait(10)
    total = sum(r["cpu_percent"] for r in reports.values())
    rows = [["process", "CPU % of a core", "peak RSS MB"]]
    rows += [[n, f"{r['cpu_percent']:.2f}", f"{r['peak_rss_mb']:.0f}"] for n, r in reports.items()]
    rows += [
        ["all together", f"{total:.2f}", ""],
        ["idle sleep (baseline)", f"{base['cpu_percent']:.2f}", f"{base['peak_rss_mb']:.0f}"],
    ]
    print(table(rows))
    print(
        f"honcho start -> producer ready {producer_ready_s:.2f} s, broadcaster ready "
        f"{broadcaster_ready_s:.2f} s, first sample due (1 Hz grid) {first_due_s:.2f} s, "
        f"first sample at the test client {first_sample_s:.2f} s"
    )
    path = write(
        "idle",
        {
            "duration_s": duration,
            "processes": reports,
            "total_cpu_percent": total,
            "baseline_cpu_percent": base["cpu_percent"],
            "first_sample_s": first_sample_s,
            "producer_ready_s": producer_ready_s,
            "broadcaster_ready_s": broadcaster_ready_s,
            "first_due_s": first_due_s,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
