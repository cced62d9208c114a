"""Schedule accuracy: sample count and send jitter at 1, 10, 100 and 1000 Hz.

    python bench/timing.py [--duration 600] [--quick]

A SUB socket records when each sample arrives; jitter is arrival minus the sample's
deadline (its timestamp). Baselines, same run: a loop that sleeps one period after each
send (the design the spec's simulator used), and the floor of this machine: a bare pyzmq
PUB that sleeps to each deadline with time.sleep and sends one sample, nothing else.
On a virtual machine whose cores are shared the floor's p99 is set by the hypervisor,
not by Python.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import click
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import REPO, percentiles, start, stop, table, write  # noqa: E402
from common import schema  # noqa: E402

FLOOR_CODE = r"""
import sys, time
import numpy as np, zmq
sys.path.insert(0, sys.argv[4])
from common import schema
endpoint, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
pub = zmq.Context().socket(zmq.PUB)
pub.bind(endpoint)
rows = np.zeros(1, schema.RECORD)
rows["device"] = b"floor"
tick = int(time.time() * rate) + 1
end = time.time() + seconds
while time.time() < end:
    due = tick / rate
    if (delay := due - time.time()) > 0:
        time.sleep(delay)
    rows["ts_ms"], rows["seq"] = due * 1000, tick
    pub.send_multipart(schema.encode(schema.Batch(rows=rows, precision=3)))
    tick += 1
"""


def listen(endpoint: str, seconds: float) -> dict:
    """Count samples and their lateness for `seconds` after the first one arrives."""
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, schema.TOPIC)
    sub.connect(endpoint)
    try:
        assert sub.poll(10_000), "no sample within 10 s"
        sub.recv_multipart()
        lateness, count = [], 0
        end = time.time() + seconds
        while (left := end - time.time()) > 0:
            if sub.poll(int(left * 1000) + 1):
                arrived = time.time() * 1000
                batch = schema.decode(sub.recv_multipart())
                lateness.extend(arrived - batch.rows["ts_ms"])
                count += len(batch)
    finally:
        sub.close(0)
        context.term()
    return {"count": count, "jitter_ms": percentiles(lateness)}


def measure_floor(rate: float, seconds: float, work: Path) -> dict:
    endpoint = f"ipc://{work}/floor{rate:g}.sock"
    args = [endpoint, str(rate), str(seconds + 12), str(REPO)]
    floor = subprocess.Popen([sys.executable, "-c", FLOOR_CODE, *args])
    try:
        return {**listen(endpoint, seconds), "expected": seconds * rate}
    finally:
        stop(floor)


def measure_producer(rate: float, seconds: float, work: Path) -> dict:
    endpoint = f"ipc://{work}/t{rate:g}.sock"
    producer = start(
        "producer",
        "--zmq-pub",
        endpoint,
        "--zmq-catchup",
        f"ipc://{work}/r{rate:g}.sock",
        "--zmq-control",
        f"ipc://{work}/c{rate:g}.sock",
        "--rate",
        str(rate),
        "--state",
        str(work / f"s{rate:g}.json"),
        cwd=work,
    )
    try:
        return {**listen(endpoint, seconds), "expected": seconds * rate}
    finally:
        stop(producer)


def measure_naive(rate: float, seconds: float) -> dict:
    """send; sleep(period): each send drifts by the work and the sleep's overshoot."""
    period, sent, lateness = 1 / rate, 0, []
    start_t = time.perf_counter()
    while (now := time.perf_counter()) - start_t < seconds:
        lateness.append((now - (start_t + sent * period)) * 1000)
        sent += 1
        time.sleep(period)
    return {"count": sent, "expected": seconds * rate, "jitter_ms": percentiles(lateness)}


@click.command()
@click.option("--duration", default=600.0, show_default=True, help="Seconds per rate.")
@click.option("--rates", default="1,10,100,1000", show_default=True)
@click.option("--quick", is_flag=True, help="10 and 100 Hz for 5 s each.")
def main(duration: float, rates: str, quick: bool) -> None:
    chosen = [10.0, 100.0] if quick else [float(r) for r in rates.split(",")]
    duration = 5.0 if quick else duration
    work = Path(tempfile.mkdtemp(prefix="bench-timing-"))
    results, rows = {}, [["rate Hz", "design", "count", "expected", "jitter p50", "p99", "p99.9"]]
    for rate in chosen:
        with ProcessPoolExecutor(1) as pool:  # own process: no GIL shared with the listener
            naive_run = pool.submit(measure_naive, rate, duration)  # same window, same machine
            ours = measure_producer(rate, duration, work)
            naive = naive_run.result()
        floor = measure_floor(rate, duration, work)
        results[f"{rate:g}"] = {"ours": ours, "naive": naive, "floor": floor}
        for name, r in (("ours", ours), ("sleep(period)", naive), ("floor: bare PUB", floor)):
            j = r["jitter_ms"]
            rows.append(
                [
                    f"{rate:g}",
                    name,
                    r["count"],
                    f"{r['expected']:.0f}",
                    f"{j['p50']:.2f} ms",
                    f"{j['p99']:.2f} ms",
                    f"{j['p99.9']:.2f} ms",
                ]
            )
    print(table(rows))
    path = write("timing", {"duration_s": duration, "quick": quick, "rates": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
