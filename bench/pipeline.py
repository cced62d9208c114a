"""End-to-end throughput: producer -> ZeroMQ -> logger -> CSV, with the broadcaster serving
a client subscribed to one device, against the naive design and the raw ZeroMQ ceiling.

    python bench/pipeline.py [--devices 1000 --rate 1000 --duration 60] [--quick]

Throughput is the logger's rows written per second (read from its /metrics); each
process's CPU and peak RSS are sampled. Baselines, same run: pandas one-row appends (the
spec's design) and plain pyzmq PUB/SUB moving batched numpy records.
"""

from __future__ import annotations

import re
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import click
import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import Usage, ready, start, stop, table, write  # noqa: E402
from bench.backfill import naive  # noqa: E402


def scrape(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(match[1]) if match else 0.0


def zmq_ceiling(seconds: float, rows_per_message: int = 1000) -> float:
    """Samples/s plain pyzmq moves when a message carries a batch of 88-byte records."""
    context = zmq.Context()
    pub, sub = context.socket(zmq.PUB), context.socket(zmq.SUB)
    pub.sndhwm = sub.rcvhwm = 100_000
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    time.sleep(0.3)
    payload = np.zeros(rows_per_message, dtype=[("a", "<i8"), ("b", "S72"), ("c", "<f8")]).tobytes()
    done = threading.Event()
    received = [0]

    def receive() -> None:
        while not done.is_set():
            if sub.poll(100):
                sub.recv(copy=False)
                received[0] += rows_per_message

    thread = threading.Thread(target=receive)
    thread.start()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pub.send(payload, copy=False)
    time.sleep(0.2)
    done.set()
    thread.join()
    pub.close(0)
    sub.close(0)
    context.term()
    return received[0] / seconds


@click.command()
@click.option("--devices", default=1000, show_default=True)
@click.option("--rate", default=1000.0, show_default=True, help="Hz per device.")
@click.option("--duration", default=60.0, show_default=True, help="Seconds measured.")
@click.option(
    "--verify/--no-verify", default=True, show_default=True, help="Audit the CSV afterwards."
)
@click.option("--quick", is_flag=True, help="100 devices x 100 Hz for 5 s.")
def main(devices: int, rate: float, duration: float, verify: bool, quick: bool) -> None:
    if quick:
        devices, rate, duration = 100, 100.0, 5.0
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    zmq_pub, catchup, control = (f"ipc://{work}/{n}.sock" for n in ("pub", "catchup", "control"))
    producer = start(
        "producer",
        "--zmq-pub",
        zmq_pub,
        "--zmq-catchup",
        catchup,
        "--zmq-control",
        control,
        "--devices",
        str(devices),
        "--rate",
        str(rate),
        "--anomaly-rate",
        "0",
        "--metrics-port",
        "any",
        cwd=work,
    )
    logger = start(
        "logger",
        "--zmq-pub",
        zmq_pub,
        "--zmq-catchup",
        catchup,
        "--metrics-port",
        "any",
        "--flush-interval",
        "0.5",
        cwd=work,
    )
    broadcaster = start("broadcaster", "--zmq-pub", zmq_pub, "--ws-port", "0", cwd=work)
    ports = {
        "producer": ready(producer)["metrics_port"],
        "logger": ready(logger)["metrics_port"],
        "ws": ready(broadcaster)["ws_port"],
    }
    frames = [0]
    done = threading.Event()

    def client() -> None:
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        with connect(f"ws://127.0.0.1:{ports['ws']}/?devices=host-01", open_timeout=10) as ws:
            while not done.is_set():
                try:
                    ws.recv(timeout=0.5)
                    frames[0] += 1
                except TimeoutError:
                    pass
                except ConnectionClosed:  # the broadcaster stopped first
                    return

    reader = threading.Thread(target=client, daemon=True)
    reader.start()
    time.sleep(3)
    usage = {
        n: Usage(p.pid)
        for n, p in (("producer", producer), ("logger", logger), ("broadcaster", broadcaster))
    }
    rows0, published0 = (
        scrape(ports["logger"], "stream_rows_written_total"),
        scrape(ports["producer"], "stream_samples_published_total"),
    )
    began = time.monotonic()
    while time.monotonic() - began < duration:
        time.sleep(0.5)
        for u in usage.values():
            u.sample()
    elapsed = time.monotonic() - began
    rows = scrape(ports["logger"], "stream_rows_written_total") - rows0
    published = scrape(ports["producer"], "stream_samples_published_total") - published0
    usages = {n: u.report() for n, u in usage.items()}
    done.set()
    stop(producer, broadcaster)
    time.sleep(1)
    stop(logger)
    audit = None
    if verify:  # the figure counts only if the log is complete (gaps recorded are explained)
        from logger.sink import rotated_files
        from logger.verify import verify as check

        csv = work / "data" / "stream_log.csv"
        report = check([*rotated_files(csv), csv])
        audit = {"ok": report.ok, "rows": report.rows, "recorded_gaps": report.recorded}
        print("\n".join(f"verify: {line}" for line in report.lines()))
    naive_rate = naive(work / "naive.csv", 2.0)
    ceiling = zmq_ceiling(3.0)
    ours = rows / elapsed
    target = devices * rate
    print(
        table(
            [
                ["what", "samples/s", "vs target", "vs naive", "vs zmq ceiling"],
                [
                    "pipeline (logger rows written)",
                    f"{ours:,.0f}",
                    f"{ours / target:.2f}",
                    f"{ours / naive_rate:,.0f}x",
                    f"{ours / ceiling:.3f}",
                ],
                [
                    "producer published",
                    f"{published / elapsed:,.0f}",
                    f"{published / elapsed / target:.2f}",
                    "",
                    "",
                ],
                ["naive (pandas per row)", f"{naive_rate:,.0f}", "", "1x", ""],
                ["raw pyzmq, 1000 rows/msg", f"{ceiling:,.0f}", "", "", "1"],
            ]
        )
    )
    print(
        table(
            [["process", "CPU %", "peak RSS MB"]]
            + [[n, f"{u['cpu_percent']:.0f}", f"{u['peak_rss_mb']:.0f}"] for n, u in usages.items()]
        )
    )
    print(f"client subscribed to host-01 received {frames[0]} frames")
    path = write(
        "pipeline",
        {
            "devices": devices,
            "rate": rate,
            "duration_s": elapsed,
            "target": target,
            "logger_rows_per_s": ours,
            "published_per_s": published / elapsed,
            "naive_rows_per_s": naive_rate,
            "zmq_ceiling_per_s": ceiling,
            "ratio_to_naive": ours / naive_rate,
            "processes": usages,
            "client_frames": frames[0],
            "verify": audit,
            "workdir": str(work),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
