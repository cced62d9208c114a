"""WebSocket fan-out: many clients, delivery and producer-to-client latency, against the
thing to beat, measured in the same run with the same client processes: a plain
`websockets.broadcast()` server that makes the same messages (size, devices, rate) itself.
With --relay, also a `broadcast()` relay fed by the same producer (our extra hop, without
our fan-out); with --floor, the machine's floor: a bare process that sleeps to each deadline
and writes the frame to every client's socket, nothing else.

    python bench/fanout.py [--clients 1000 --devices 1 --rate 10 --duration 30] [--quick]
    python bench/fanout.py --smoke                          # a check that it runs
    python bench/fanout.py --clients 10 --rate 100          # the latency case
    python bench/fanout.py --broadcasters 2                 # two of ours sharing a port

With --broadcasters K, K of our broadcasters listen on one port (SO_REUSEPORT), the kernel
spreads the clients over them, and their CPU is summed; the baselines stay one process.

Clients run in a separate process (asyncio) and record, per frame, now minus the
sample's timestamp (its deadline at the producer). Delivered % counts frames against
what the producer published while every client was connected. The client processes'
CPU is reported too: if it nears 100 % of a core each, the clients are the bottleneck.
"bus p99 / max" is how late the producer's messages reached a SUB beside our broadcaster:
a latency outlier that shows there too happened upstream of the fan-out.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import click
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import REPO, Usage, percentiles, ready, start, stop, table, write  # noqa: E402
from common import schema  # noqa: E402

CLIENTS_CODE = r"""
# Many WebSocket clients in one process, each a bare asyncio protocol (RFC 6455 framing,
# pongs to pings): ~10x less CPU per frame than a websockets client, so the harness
# measures the server rather than itself.
import asyncio, base64, datetime, json, os, sys, time
from urllib.parse import urlsplit

UTC = datetime.timezone.utc
STAMPS = {}  # timestamp text -> epoch ms; every client sees the same few

def stamp_ms(frame):
    # '{"timestamp":"YYYY-MM-DD HH:MM:SS.fff"': a slice, no JSON parse per frame
    text = frame[14:37] if frame[33] == 46 else frame[14:33]
    ms = STAMPS.get(text)
    if ms is None:
        parsed = datetime.datetime.fromisoformat(text.decode())
        ms = STAMPS[text] = parsed.replace(tzinfo=UTC).timestamp() * 1000
    return ms

class Client(asyncio.Protocol):
    def __init__(self, url, out):
        self.url, self.out, self.buf, self.open = urlsplit(url), out, bytearray(), False
        self.opened = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET {self.url.path or '/'} HTTP/1.1\r\nHost: {self.url.netloc}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def connection_lost(self, exc):
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))

    def data_received(self, data):
        now = time.time()
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(ConnectionError(bytes(buf[:end]).decode()))
                return
            del buf[: end + 4]
            self.open = True
            self.opened.set_result(None)
        out, pos, size = self.out, 0, len(buf)
        counting = out["begin"] <= now < out["end"]
        while size - pos >= 2:
            length, head = buf[pos + 1] & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if size - pos < head + length:
                break
            opcode, payload = buf[pos] & 0x0F, bytes(buf[pos + head : pos + head + length])
            pos += head + length
            if opcode == 1 and counting:
                out["lat"].append(now * 1000 - stamp_ms(payload))
                out["frames"] += 1
                out["bytes"] += length
            elif opcode == 9 and length < 126:  # pong, masked with a zero key
                self.transport.write(bytes((0x8A, 0x80 | length)) + bytes(4) + payload)
            elif opcode == 8:
                self.transport.close()
        del buf[:pos]

async def main(url, n):
    out = {"frames": 0, "bytes": 0, "lat": [], "begin": float("inf"), "end": float("inf")}
    loop, split, clients = asyncio.get_running_loop(), urlsplit(url), []
    for _ in range(n):
        client = Client(url, out)
        await loop.create_connection(lambda c=client: c, split.hostname, split.port)
        await asyncio.wait_for(client.opened, 60)
        clients.append(client)
    print("connected", flush=True)
    go = await loop.run_in_executor(None, sys.stdin.readline)  # "<begin> <end>"
    out["begin"], out["end"] = map(float, go.split())
    await asyncio.sleep(max(0.0, out["end"] - time.time()) + 0.5)
    for client in clients:
        client.transport.close()
    json.dump(
        {"frames": out["frames"], "bytes": out["bytes"], "lat": out["lat"][:1000000]}, sys.stdout
    )

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


RELAY_CODE = r"""
import asyncio, sys
sys.path.insert(0, sys.argv[2])
from websockets.asyncio.server import serve, broadcast
from common import schema
from common.bus import Subscriber

async def main(zmq_pub):
    clients = set()
    async def handler(ws):
        clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            clients.discard(ws)
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        sub = Subscriber(zmq_pub)
        print("ready", server.sockets[0].getsockname()[1], flush=True)
        while True:
            for batch in await sub.receive(0.2):
                for frame in schema.to_json(batch):
                    broadcast(clients, frame)

asyncio.run(main(sys.argv[1]))
"""


PLAIN_CODE = r"""
# The thing to beat: one websockets server that makes the same messages itself (the
# producer's JSON, same devices, same rate, stamped with their deadline) and hands each
# to websockets.broadcast(); no ZeroMQ, no other process.
import asyncio, sys, time
import numpy as np
sys.path.insert(0, sys.argv[4])
from websockets.asyncio.server import serve, broadcast
from common import render, schema

async def main(devices, rate):
    clients = set()
    async def handler(ws):
        clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            clients.discard(ws)
    rows = np.zeros(devices, schema.RECORD)
    rows["device"] = schema.device_array([f"host-{i + 1:02d}" for i in range(devices)])
    rows["cpu"], rows["mem"], rows["disk_io"], rows["net"] = 37.4, 61.2, 12.8, 345.6
    precision = schema.precision_for_rate(rate)
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        print("ready", server.sockets[0].getsockname()[1], flush=True)
        tick = int(time.time() * rate) + 1
        while True:
            due = tick / rate
            if (delay := due - time.time()) > 0:
                await asyncio.sleep(delay)
            rows["ts_ms"], rows["seq"] = int(due * 1000), tick
            for frame in render.json_objects(schema.Batch(rows, precision)):
                broadcast(clients, frame.decode())
            tick += 1

asyncio.run(main(int(sys.argv[2]), float(sys.argv[3])))
"""

# The machine's floor: the least a server can do, one process that sleeps to each
# deadline and writes the frame (the producer's JSON shape) to each client's socket.
FLOOR_WS_CODE = r"""
import base64, hashlib, socket, sys, threading, time
rate, devices = float(sys.argv[1]), int(sys.argv[2])
server = socket.create_server(("127.0.0.1", 0))
clients = []

def accept():
    # the least WebSocket server: read the upgrade request, answer 101, then only write
    while True:
        conn, _ = server.accept()
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept_key = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        )
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_key + b"\r\n\r\n"
        )
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        clients.append(conn)

threading.Thread(target=accept, daemon=True).start()
print("ready", server.getsockname()[1], flush=True)
tick = int(time.time() * rate) + 1
while True:
    due = tick / rate
    if (delay := due - time.time()) > 0:
        time.sleep(delay)
    ms = int(due * 1000)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}"
    frames = []
    for device in range(1, devices + 1):
        text = (
            '{"timestamp":"' + stamp + '","cpu":37.4,"mem":61.2,"disk_io":12.8,"net":345.6,'
            f'"device":"host-{device:02d}","seq":{tick},"anomaly":null,"anomaly_id":null}}'
        ).encode().ljust(126)  # JSON allows trailing blanks; the length stays in one form
        frames.append(bytes((0x81, 126)) + len(text).to_bytes(2, "big") + text)
    frame = b"".join(frames)
    for conn in list(clients):
        try:
            conn.send(frame)
        except OSError:
            clients.remove(conn)
    tick += 1
"""

# what each server kind is called in the tables and the JSON
OURS, PLAIN, RELAY, FLOOR = "ours", "plain broadcast()", "broadcast() relay", "floor: bare sends"


class BusWatch:
    """Lateness of the producer's messages at a SUB beside the broadcasters (arrival minus
    the newest sample's deadline): tells a stall upstream from one in the fan-out."""

    def __init__(self, endpoint: str) -> None:
        self.seen: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, args=(endpoint,), daemon=True)
        self._thread.start()

    def _listen(self, endpoint: str) -> None:
        context = zmq.Context()
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(endpoint)
        try:
            while not self._stop.is_set():
                if sub.poll(200):
                    now = time.time()
                    batch = schema.decode(sub.recv_multipart())
                    self.seen.append((now, now * 1000 - float(batch.rows["ts_ms"][-1])))
        finally:
            sub.close(0)
            context.term()

    def lateness(self, begin: float, end: float) -> dict[str, float]:
        """p50, p99 and max of the lateness in ms between begin and end (epoch s)."""
        late = [ms for at, ms in self.seen if begin <= at < end]
        return {**percentiles(late), "max": max(late, default=float("nan"))}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


class Usages:
    """Usage summed over several server processes: CPU seconds and peak RSS added up."""

    def __init__(self, pids: list[int]) -> None:
        self.parts = [Usage(pid) for pid in pids]

    def restart(self) -> None:
        for part in self.parts:
            part.restart()

    def report(self) -> dict[str, float]:
        reports = [part.report() for part in self.parts]
        return {
            "cpu_percent": sum(r["cpu_percent"] for r in reports),  # of one core
            "wall_s": max(r["wall_s"] for r in reports),
            "peak_rss_mb": sum(r["peak_rss_mb"] for r in reports),
        }


def spread(port: int, pids: list[int], clients: int, timeout: float = 20.0) -> dict[int, int]:
    """Clients per broadcaster, from /healthz (which names the pid that answered): each GET is
    a new connection, which the kernel gives to any of the broadcasters on the port."""
    latest: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while set(latest) != set(pids) or sum(latest.values()) != clients:
        if time.monotonic() > deadline:
            raise RuntimeError(f"/healthz kept saying {latest}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as exc:  # 503 while stale: the same body
            body = json.loads(exc.read())
        latest[body["pid"]] = body["clients"]
    return {pid: latest[pid] for pid in pids}


def run_clients(
    url: str,
    n: int,
    seconds: float,
    processes: int,
    server: Usage | Usages,
    connected: Callable[[], None] = lambda: None,
) -> dict:
    """n clients spread over `processes` processes, all counting in the same window; the
    server's CPU is measured over that window only (not the handshakes). `connected` runs
    once every client is connected, before the window."""
    shares = [n // processes + (i < n % processes) for i in range(processes)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENTS_CODE, url, str(share)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for share in shares
        if share
    ]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "connected", "clients did not connect"
        connected()
        client_usage = Usages([proc.pid for proc in procs])
        begin = time.time() + 1.0
        for proc in procs:
            proc.stdin.write(f"{begin} {begin + seconds}\n")
            proc.stdin.flush()
        time.sleep(max(0.0, begin - time.time()))
        server.restart()
        client_usage.restart()
        time.sleep(max(0.0, begin + seconds - time.time()))
        usage = server.report()
        clients_cpu = client_usage.report()["cpu_percent"]
        results = [json.loads(proc.communicate(timeout=seconds + 60)[0]) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    return {
        "frames": sum(r["frames"] for r in results),
        "bytes": sum(r["bytes"] for r in results),
        "lat": [x for r in results for x in r["lat"]],
        "server": usage,
        "client_cpu_percent": clients_cpu,  # summed over the client processes
        "window": (begin, begin + seconds),
    }


def measure(
    kind: str,
    zmq_pub: str,
    work: Path,
    clients: int,
    seconds: float,
    expected: float,
    processes: int,
    broadcasters: int = 1,
    devices: int = 1,
    rate: float = 10.0,
) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    per_server: dict[int, int] = {}
    if kind == OURS:
        # The first picks a free port; the others share it (SO_REUSEPORT, on by default).
        port = 0
        servers = []
        try:
            for _ in range(broadcasters):
                server = start(
                    *("broadcaster", "--zmq-pub", zmq_pub, "--ws-host", "127.0.0.1"),
                    *("--ws-port", str(port), "--max-client-buffer", str(64 * 2**20)),
                    cwd=work,
                )
                servers.append(server)
                port = ready(server)["ws_port"]
        except BaseException:
            stop(*servers)
            raise
    else:
        args = {
            RELAY: [RELAY_CODE, zmq_pub, str(REPO)],
            PLAIN: [PLAIN_CODE, "-", str(devices), str(rate), str(REPO)],
            FLOOR: [FLOOR_WS_CODE, str(rate), str(devices)],
        }[kind]
        server = subprocess.Popen(
            [sys.executable, "-c", *args], env=env, stdout=subprocess.PIPE, text=True
        )
        servers = [server]
        port = int(server.stdout.readline().split()[1])  # "ready PORT"
    time.sleep(1.5)  # every server: let the first ticks arrive before clients count
    pids = [server.pid for server in servers]

    def connected() -> None:
        if len(servers) > 1:
            per_server.update(spread(port, pids, clients))

    try:
        result = run_clients(
            f"ws://127.0.0.1:{port}/", clients, seconds, processes, Usages(pids), connected
        )
    finally:
        stop(*servers)
    report = result["server"]
    delivered = result["frames"] / (expected * clients) if expected else 0.0
    cpu_s = report["cpu_percent"] / 100 * report["wall_s"]
    return {
        "frames": result["frames"],
        "frames_per_s": result["frames"] / seconds,
        "bytes_per_frame": result["bytes"] / result["frames"] if result["frames"] else 0.0,
        # what the server could deliver with a whole core: its capacity, load-independent
        "frames_per_cpu_s": result["frames"] / cpu_s if cpu_s else 0.0,
        "delivered": delivered,
        "latency_ms": percentiles(result["lat"]),
        "processes": len(servers),
        "clients_per_process": list(per_server.values()) or [clients],
        "client_cpu_percent": result["client_cpu_percent"],
        "window": result["window"],
        **report,
    }


@click.command()
@click.option("--clients", default=1000, show_default=True)
@click.option("--devices", default=1, show_default=True)
@click.option("--rate", default=10.0, show_default=True, help="Hz per device.")
@click.option("--duration", default=20.0, show_default=True)
@click.option(
    "--client-processes", default=2, show_default=True, help="Processes the clients run in."
)
@click.option(
    "--broadcasters",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Our broadcasters sharing one port (SO_REUSEPORT); their CPU is summed.",
)
@click.option(
    "--relay/--no-relay",
    default=False,
    show_default=True,
    help="Also measure a broadcast() relay fed by the same producer.",
)
@click.option(
    "--floor/--no-floor",
    default=False,
    show_default=True,
    help="Also measure the floor: a bare process writing each frame to every socket.",
)
@click.option(
    "--rounds",
    default=1,
    show_default=True,
    type=click.IntRange(1, 20),
    help="Measure each server this many times, alternating with the baseline.",
)
@click.option("--quick", is_flag=True, help="20 clients, 10 Hz, 3 s.")
@click.option("--smoke", is_flag=True, help="A check that it runs: 20 clients, 10 Hz, 1 s.")
def main(
    clients: int,
    devices: int,
    rate: float,
    duration: float,
    client_processes: int,
    broadcasters: int,
    relay: bool,
    floor: bool,
    rounds: int,
    quick: bool,
    smoke: bool,
) -> None:
    if quick or smoke:
        clients, devices, rate, duration = 20, 1, 10.0, (1.0 if smoke else 3.0)
    work = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    zmq_pub = f"ipc://{work}/pub.sock"
    producer = start(
        "producer",
        "--zmq-pub",
        zmq_pub,
        "--zmq-catchup",
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
    bus = BusWatch(zmq_pub)
    try:
        kinds = (OURS, PLAIN) + ((RELAY,) if relay else ()) + ((FLOOR,) if floor else ())
        results: dict[str, list[dict]] = {kind: [] for kind in kinds}
        for turn in range(rounds):
            # alternate the order, so that neither always runs first on a machine whose
            # load changes from minute to minute
            for kind in kinds if turn % 2 == 0 else kinds[::-1]:
                results[kind].append(
                    measure(
                        *(kind, zmq_pub, work, clients, duration, expected, client_processes),
                        *(broadcasters, devices, rate),
                    )
                )
    finally:
        stop(producer)
        bus.close()
    for r in results[OURS]:
        r["bus_lateness_ms"] = bus.lateness(*r["window"])
    rows = [
        [
            "round",
            "server",
            "frames/s",
            "frames/CPU-s",
            "bytes/frame",
            "delivered",
            "lat p50",
            "p99",
            "p99.9",
            "CPU %",
            "RSS MB",
            "client CPU %",
            "clients/process",
            "bus p99 / max",
        ]
    ]
    ours_name = "ours" if broadcasters == 1 else f"ours x{broadcasters}"
    for turn in range(rounds):
        for kind in kinds:
            rows.append(_row(ours_name if kind == OURS else kind, results[kind][turn], turn))
    print(
        f"{clients} clients x {devices} device(s) x {rate:g} Hz for {duration:g} s, "
        f"{rounds} round(s); {broadcasters} broadcaster(s) of ours on one port "
        "(CPU % and RSS summed over them)"
    )
    print(table(rows))
    ratios = [
        o["frames_per_cpu_s"] / max(p["frames_per_cpu_s"], 1)
        for o, p in zip(results[OURS], results[PLAIN], strict=True)
    ]
    p99_ratios = [
        o["latency_ms"]["p99"] / p["latency_ms"]["p99"]
        for o, p in zip(results[OURS], results[PLAIN], strict=True)
    ]
    ratio, p99_ratio = statistics.median(ratios), statistics.median(p99_ratios)
    print(f"frames per server CPU-second, ours / plain broadcast(): {_spread(ratios)}")
    print(f"latency p99, ours / plain broadcast() (same round): {_spread(p99_ratios)}")
    suffix = "" if broadcasters == 1 else f"-k{broadcasters}"
    path = write(
        f"fanout-{clients}x{devices}x{rate:g}{suffix}",
        {
            "clients": clients,
            "broadcasters": broadcasters,
            "devices": devices,
            "rate": rate,
            "duration_s": duration,
            "rounds": rounds,
            "results": results,
            "ratio": ratio,
            "p99_ratio": p99_ratio,
        },
    )
    print(f"wrote {path}")


def _spread(values: list[float]) -> str:
    """Median and range of per-round ratios."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} (median; {min(values):.2f}-{max(values):.2f})"


def _row(name: str, r: dict, turn: int) -> list[str]:
    lat = r["latency_ms"]
    return [
        str(turn + 1),
        name,
        f"{r['frames_per_s']:,.0f}",
        f"{r['frames_per_cpu_s']:,.0f}",
        f"{r['bytes_per_frame']:.0f}",
        f"{100 * r['delivered']:.1f} %",
        f"{lat['p50']:.1f} ms",
        f"{lat['p99']:.1f} ms",
        f"{lat['p99.9']:.1f} ms",
        f"{r['cpu_percent']:.0f}",
        f"{r['peak_rss_mb']:.0f}",
        f"{r['client_cpu_percent']:.0f}",
        "/".join(map(str, r["clients_per_process"])),
        f"{bus['p99']:.1f} / {bus['max']:.1f} ms" if (bus := r.get("bus_lateness_ms")) else "",
    ]


if __name__ == "__main__":
    main()
