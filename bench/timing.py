"""Schedule accuracy: sample count and send jitter at 1, 10, 100 and 1000 Hz, and the
latency to WebSocket clients against the machine's floor.

    python bench/timing.py [--duration 600] [--quick | --smoke]
    python bench/timing.py --rates '' --latency-rounds 3    # only the client latency

A SUB socket records when each sample arrives; jitter is arrival minus the sample's
deadline (its timestamp). Baselines, same run: a loop that sleeps one period after each
send (the design the spec's simulator used), and the floor of this machine: a bare pyzmq
PUB that sleeps to each deadline with time.sleep and sends one sample, nothing else.
On a virtual machine whose cores are shared the floor's p99 is set by the hypervisor,
not by Python.

Latency to clients (10 clients x 100 Hz by default): the pipeline (producer -> broadcaster
-> WebSocket clients) against the floor with one TCP hop to a client: a bare process that
sleeps to each deadline with time.sleep and writes the same JSON frame to each client's
socket, nothing else. Both are read by the same raw-protocol clients (bench/fanout.py)
in separate processes, in alternating rounds of the same run.
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

from bench import fanout  # noqa: E402
from bench._util import REPO, Usage, percentiles, start, stop, table, write  # noqa: E402
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


def measure_client_latency(clients: int, rate: float, seconds: float, work: Path) -> dict:
    """Deadline-to-client latency of the pipeline to `clients` WebSocket clients, at `rate`."""
    zmq_pub = f"ipc://{work}/lat.sock"
    producer = start(
        *("producer", "--zmq-pub", zmq_pub, "--zmq-catchup", f"ipc://{work}/lat-r.sock"),
        *("--zmq-control", f"ipc://{work}/lat-c.sock", "--rate", str(rate)),
        *("--anomaly-rate", "0", "--state", str(work / "lat-state.json")),
        cwd=work,
    )
    bus = fanout.BusWatch(zmq_pub)
    try:
        ours = fanout.measure(fanout.OURS, zmq_pub, work, clients, seconds, seconds * rate, 2)
    finally:
        stop(producer)
        bus.close()
    return {
        "delivered": ours["delivered"],
        "latency_ms": ours["latency_ms"],
        # the first part of the path: producer to a SUB beside the broadcaster
        "bus_latency_ms": bus.lateness(*ours["window"]),
    }


def measure_client_floor(clients: int, rate: float, seconds: float) -> dict:
    """The same, from the floor: a bare process writing to the clients' sockets on time."""
    floor = subprocess.Popen(
        [sys.executable, "-c", fanout.FLOOR_WS_CODE, str(rate), "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(floor.stdout.readline().split()[1])  # "ready PORT"
        time.sleep(0.5)
        got = fanout.run_clients(f"ws://127.0.0.1:{port}/", clients, seconds, 2, Usage(floor.pid))
    finally:
        stop(floor)
    return {
        "delivered": got["frames"] / (seconds * rate * clients),
        "latency_ms": percentiles(got["lat"]),
    }


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
@click.option("--rates", default="1,10,100,1000", show_default=True, help="'' for none.")
@click.option("--latency-clients", default=10, show_default=True)
@click.option("--latency-rate", default=100.0, show_default=True, help="Hz.")
@click.option("--latency-duration", default=15.0, show_default=True, help="Seconds per round.")
@click.option(
    "--latency-rounds",
    default=3,
    show_default=True,
    type=click.IntRange(0, 20),
    help="Rounds of pipeline and floor, alternating; 0 to skip.",
)
@click.option("--quick", is_flag=True, help="100 Hz for 5 s; 1 latency round of 3 s.")
@click.option(
    "--smoke", is_flag=True, help="A check that it runs: 100 Hz for 1.5 s; 1 round of 1 s."
)
def main(
    duration: float,
    rates: str,
    latency_clients: int,
    latency_rate: float,
    latency_duration: float,
    latency_rounds: int,
    quick: bool,
    smoke: bool,
) -> None:
    short = quick or smoke
    chosen = [100.0] if short else [float(r) for r in rates.split(",") if r.strip()]
    if short:
        duration = 1.5 if smoke else 5.0
        latency_duration, latency_rounds = (1.0 if smoke else 3.0), 1
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
    if chosen:
        print(table(rows))
    latency = _client_latency(latency_clients, latency_rate, latency_duration, latency_rounds, work)
    path = write(
        "timing",
        {
            "duration_s": duration,
            "quick": quick,
            "smoke": smoke,
            "rates": results,
            "client_latency": latency,
        },
    )
    print(f"wrote {path}")


def _client_latency(clients: int, rate: float, seconds: float, rounds: int, work: Path) -> dict:
    """Rounds of pipeline and floor, in alternating order; prints a table and the ratios."""
    rounds_out = []
    rows = [["round", "design", "delivered", "latency p50", "p99", "p99.9", "of which bus p50/p99"]]
    for turn in range(rounds):
        order = ("ours", "floor") if turn % 2 == 0 else ("floor", "ours")
        got = {
            name: (
                measure_client_latency(clients, rate, seconds, work)
                if name == "ours"
                else measure_client_floor(clients, rate, seconds)
            )
            for name in order
        }
        got["p99_ratio"] = got["ours"]["latency_ms"]["p99"] / got["floor"]["latency_ms"]["p99"]
        rounds_out.append(got)
        for name, label in (("ours", "producer -> broadcaster"), ("floor", "floor: one TCP hop")):
            lat = got[name]["latency_ms"]
            rows.append(
                [
                    str(turn + 1),
                    label,
                    f"{100 * got[name]['delivered']:.1f} %",
                    f"{lat['p50']:.2f} ms",
                    f"{lat['p99']:.2f} ms",
                    f"{lat['p99.9']:.2f} ms",
                    f"{bus['p50']:.2f} / {bus['p99']:.2f} ms"
                    if (bus := got[name].get("bus_latency_ms"))
                    else "",
                ]
            )
    if rounds:
        print(f"{clients} WebSocket clients x {rate:g} Hz, {seconds:g} s a round")
        print(table(rows))
        ratios = ", ".join(f"{r['p99_ratio']:.2f}" for r in rounds_out)
        print(f"latency p99, pipeline / floor, per round: {ratios}")
    return {"clients": clients, "rate": rate, "duration_s": seconds, "rounds": rounds_out}


if __name__ == "__main__":
    main()
