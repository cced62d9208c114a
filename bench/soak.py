"""Soak test: the whole pipeline under load while processes are killed at random.

    python bench/soak.py                # 5 minutes, a kill -9 every 20-60 s
    python bench/soak.py --quick        # 1 minute, a kill every 5-15 s

Runs producer, logger and broadcaster (100 Hz x 10 devices) with a reading WebSocket
client in a temporary directory, kills one process at random with SIGKILL and restarts
it, then stops everything, audits the CSV with `python -m logger verify` and reports
kills, recorded gaps and each process's memory (RSS) at start and end. Exits 1 if the
log has a problem or a gap other than "not_produced" (the producer being down).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Pipeline:
    def __init__(self, workdir: Path, rate: int, devices: int) -> None:
        self.workdir = workdir
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        zmq, catchup = f"ipc://{workdir}/samples.sock", f"ipc://{workdir}/catchup.sock"
        self.args = {
            "producer": [
                "--zmq-pub",
                zmq,
                "--zmq-catchup",
                catchup,
                "--zmq-control",
                f"ipc://{workdir}/control.sock",
                "--rate",
                str(rate),
                "--devices",
                str(devices),
                "--seed",
                "1",
            ],
            "logger": ["--zmq-pub", zmq, "--zmq-catchup", catchup],
            "broadcaster": [
                "--zmq-pub",
                zmq,
                "--ws-port",
                "0",
                "--ready-file",
                str(workdir / "broadcaster.ready.json"),
            ],
        }
        self.procs: dict[str, subprocess.Popen] = {}
        self.port: int | None = None

    def start(self, name: str) -> None:
        args = list(self.args[name])
        if name == "broadcaster" and self.port is not None:
            args[args.index("--ws-port") + 1] = str(self.port)  # clients reconnect to it
        log = open(self.workdir / f"{name}.log", "a")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", name, *args],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if name == "broadcaster" and self.port is None:
            ready = self.workdir / "broadcaster.ready.json"
            deadline = time.monotonic() + 10
            while self.port is None and time.monotonic() < deadline:
                time.sleep(0.05)
                try:
                    self.port = json.loads(ready.read_text())["ws_port"]
                except (OSError, ValueError, KeyError):
                    pass

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def read_forever(url: str, stop: threading.Event, counts: list[int]) -> None:
    from websockets.sync.client import connect

    while not stop.is_set():
        try:
            with connect(url, open_timeout=2) as ws:
                while not stop.is_set():
                    ws.recv(timeout=1)
                    counts[0] += 1
        except Exception:  # noqa: BLE001 - the broadcaster is being killed on purpose
            time.sleep(0.2)


@click.command()
@click.option("--duration", default=300.0, show_default=True, help="Seconds to run.")
@click.option(
    "--every",
    default=(20.0, 60.0),
    nargs=2,
    type=float,
    show_default=True,
    help="Seconds between kills: min max.",
)
@click.option("--rate", default=100, show_default=True)
@click.option("--devices", default=10, show_default=True)
@click.option("--quick", is_flag=True, help="1 minute, a kill every 5-15 s.")
@click.option("--seed", default=0, show_default=True, help="Which processes die when.")
@click.option("--out", default="bench/results/soak.json", show_default=True)
def main(duration, every, rate, devices, quick, seed, out) -> None:
    """Kill processes at random under load; check that nothing was lost."""
    if quick:
        duration, every = 60.0, (5.0, 15.0)
    chooser = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    pipe = Pipeline(workdir, rate, devices)
    for name in ("producer", "logger", "broadcaster"):
        pipe.start(name)
    stop, counts = threading.Event(), [0]
    reader = threading.Thread(
        target=read_forever, args=(f"ws://127.0.0.1:{pipe.port}", stop, counts), daemon=True
    )
    reader.start()
    time.sleep(3)
    rss_start = {n: rss_mb(p.pid) for n, p in pipe.procs.items()}
    kills = {"producer": 0, "logger": 0, "broadcaster": 0}
    end = time.monotonic() + duration
    next_kill = time.monotonic() + chooser.uniform(*every)
    while time.monotonic() < end:
        time.sleep(0.5)
        if time.monotonic() >= next_kill:
            victim = chooser.choice(list(kills))
            pipe.procs[victim].kill()
            pipe.procs[victim].wait()
            kills[victim] += 1
            click.echo(f"{time.strftime('%H:%M:%S')} kill -9 {victim}", err=True)
            time.sleep(chooser.uniform(0.5, 3.0))
            pipe.start(victim)
            next_kill = time.monotonic() + chooser.uniform(*every)
    time.sleep(3)
    rss_end = {n: rss_mb(p.pid) for n, p in pipe.procs.items()}
    stop.set()
    pipe.stop_all()
    parts = sorted((workdir / "data").glob("stream_log-*.csv")) + [workdir / "data/stream_log.csv"]
    verify = subprocess.run(
        [sys.executable, "-m", "logger", "verify", *map(str, parts)],
        cwd=workdir,
        env=pipe.env,
        capture_output=True,
        text=True,
    )
    gaps_file = workdir / "data/stream_log.gaps.csv"
    reasons: dict[str, int] = {}
    if gaps_file.exists():
        for line in gaps_file.read_text().splitlines()[1:]:
            reason = line.rsplit(",", 1)[1]
            reasons[reason] = reasons.get(reason, 0) + 1
    ok = verify.returncode == 0 and set(reasons) <= {"not_produced"}
    result = {
        "duration_s": duration,
        "rate": rate,
        "devices": devices,
        "kills": kills,
        "verify_exit": verify.returncode,
        "verify": verify.stdout.strip().splitlines(),
        "gap_records": reasons,
        "frames_received_by_client": counts[0],
        "rss_mb_start": rss_start,
        "rss_mb_end": rss_end,
        "ok": ok,
        "workdir": str(workdir),
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    click.echo(verify.stdout)
    click.echo(f"kills: {kills}; gap records: {reasons or 'none'}; client frames: {counts[0]}")
    for name in rss_start:
        click.echo(f"{name:12s} RSS {rss_start[name]:6.1f} MB -> {rss_end[name]:6.1f} MB")
    click.echo("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
