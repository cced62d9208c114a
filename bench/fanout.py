"""WebSocket fan-out: many clients, delivery and producer-to-client latency, against a plain
`websockets.broadcast()` relay fed by the same producer in the same run.

    python bench/fanout.py [--clients 1000 --devices 1 --rate 10 --duration 30] [--quick]
    python bench/fanout.py --clients 10 --rate 100          # the latency case

Clients run in a separate process (asyncio) and record, per frame, now minus the
sample's timestamp (its deadline at the producer). Delivered % counts frames against
what the producer published while every client was connected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import REPO, Usage, free_port, percentiles, start, stop, table, write  # noqa: E402

CLIENTS_CODE = r"""
import asyncio, datetime, json, sys, time
from websockets.asyncio.client import connect

UTC = datetime.timezone.utc

def stamp_ms(frame):
    # '{"timestamp":"YYYY-MM-DD HH:MM:SS.fff"': a slice, no full JSON parse per frame
    text = frame[14:37] if frame[33] == "." else frame[14:33]
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000

async def client(url, out):
    async with connect(url, open_timeout=60, max_size=None, compression=None) as ws:
        out["connected"] += 1
        while time.time() < out["end"]:
            try:
                frame = await asyncio.wait_for(ws.recv(), 1.0)
            except TimeoutError:
                continue
            now = time.time()
            if out["begin"] <= now < out["end"]:  # read all along; count inside the window
                out["lat"].append(now * 1000 - stamp_ms(frame))
                out["frames"] += 1

async def main(url, n, seconds):
    out = {"connected": 0, "frames": 0, "lat": [], "begin": float("inf"), "end": float("inf")}
    tasks = [asyncio.create_task(client(url, out)) for _ in range(n)]
    while out["connected"] < n:
        await asyncio.sleep(0.05)
    out["begin"] = time.time() + 1.0
    out["end"] = out["begin"] + seconds
    await asyncio.gather(*tasks)
    json.dump({"frames": out["frames"], "lat": out["lat"][:500000]}, sys.stdout)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
"""

RELAY_CODE = r"""
import asyncio, sys
sys.path.insert(0, sys.argv[3])
from websockets.asyncio.server import serve, broadcast
from common import schema
from common.bus import Subscriber

async def main(zmq_pub, port):
    clients = set()
    async def handler(ws):
        clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            clients.discard(ws)
    async with serve(handler, "127.0.0.1", port, compression=None):
        sub = Subscriber(zmq_pub)
        print("ready", flush=True)
        while True:
            for batch in await sub.receive(0.2):
                for frame in schema.to_json(batch):
                    broadcast(clients, frame)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def run_clients(url: str, n: int, seconds: float) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CLIENTS_CODE, url, str(n), str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=True,
    )
    return json.loads(out.stdout)


def measure(kind: str, zmq_pub: str, work: Path, clients: int, seconds: float, expected: float):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if kind == "ours":
        server = start(
            "broadcaster",
            "--zmq-pub",
            zmq_pub,
            "--ws-port",
            str(port),
            "--max-client-buffer",
            str(64 * 2**20),
            cwd=work,
        )
    else:
        server = subprocess.Popen(
            [sys.executable, "-c", RELAY_CODE, zmq_pub, str(port), str(REPO)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        server.stdout.readline()
    time.sleep(1.5)
    usage = Usage(server.pid)
    result = run_clients(f"ws://127.0.0.1:{port}/", clients, seconds)
    report = usage.report()
    stop(server)
    delivered = result["frames"] / (expected * clients) if expected else 0.0
    cpu_s = report["cpu_percent"] / 100 * report["wall_s"]
    return {
        "frames": result["frames"],
        "frames_per_s": result["frames"] / seconds,
        # what the server could deliver with a whole core: its capacity, load-independent
        "frames_per_cpu_s": result["frames"] / cpu_s if cpu_s else 0.0,
        "delivered": delivered,
        "latency_ms": percentiles(result["lat"]),
        **report,
    }


@click.command()
@click.option("--clients", default=1000, show_default=True)
@click.option("--devices", default=1, show_default=True)
@click.option("--rate", default=10.0, show_default=True, help="Hz per device.")
@click.option("--duration", default=20.0, show_default=True)
@click.option("--quick", is_flag=True, help="20 clients, 10 Hz, 3 s.")
def main(clients: int, devices: int, rate: float, duration: float, quick: bool) -> None:
    if quick:
        clients, devices, rate, duration = 20, 1, 10.0, 3.0
    work = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    zmq_pub = f"ipc://{work}/pub.sock"
    producer = start(
        "producer",
        "--zmq-pub",
        zmq_pub,
        "--zmq-replay",
        f"ipc://{work}/r.sock",
        "--zmq-control",
        f"ipc://{work}/c.sock",
        "--devices",
        str(devices),
        "--rate",
        str(rate),
        "--anomaly-rate",
        "0",
        cwd=work,
    )
    expected = devices * rate * duration
    try:
        results = {
            kind: measure(kind, zmq_pub, work, clients, duration, expected)
            for kind in ("ours", "broadcast() relay")
        }
    finally:
        stop(producer)
    rows = [
        [
            "server",
            "frames/s",
            "frames/CPU-s",
            "delivered",
            "lat p50",
            "p99",
            "p99.9",
            "CPU %",
            "RSS MB",
        ]
    ]
    for kind, r in results.items():
        lat = r["latency_ms"]
        rows.append(
            [
                kind,
                f"{r['frames_per_s']:,.0f}",
                f"{r['frames_per_cpu_s']:,.0f}",
                f"{100 * r['delivered']:.1f} %",
                f"{lat['p50']:.1f} ms",
                f"{lat['p99']:.1f} ms",
                f"{lat['p99.9']:.1f} ms",
                f"{r['cpu_percent']:.0f}",
                f"{r['peak_rss_mb']:.0f}",
            ]
        )
    print(f"{clients} clients x {devices} device(s) x {rate:g} Hz for {duration:g} s")
    print(table(rows))
    ours, relay = results["ours"], results["broadcast() relay"]
    ratio = ours["frames_per_cpu_s"] / max(relay["frames_per_cpu_s"], 1)
    print(f"frames per server CPU-second, ours / plain broadcast(): {ratio:.2f}")
    path = write(
        f"fanout-{clients}x{devices}x{rate:g}",
        {
            "clients": clients,
            "devices": devices,
            "rate": rate,
            "duration_s": duration,
            "results": results,
            "ratio": ratio,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
