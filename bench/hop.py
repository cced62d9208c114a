"""Latency of one network hop: ZeroMQ PUB to SUB across two network namespaces joined by a
bridge (veth, bridge, veth), against the same over loopback inside one namespace.

    python bench/hop.py [--count 10000 --interval 1 --size 100] [--quick]

Needs root and iproute2. Makes its own namespaces (a "switch" holding the bridge, and two
hosts at 10.77.0.1 and 10.77.0.3, as tests/test_multihost.py does) and deletes them at the
end; no traffic leaves them. Per case a PUB in one process sends `count` messages of `size`
bytes, one every `interval` ms (paced, so latency is measured rather than queueing), each
stamped with CLOCK_MONOTONIC, which all namespaces share; a SUB in another process records
arrival minus stamp. Each case runs in the clear and with CURVE (as the deployment does), and
the cases alternate over `--rounds`, so a noisy spell hits both paths alike.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import REPO, percentiles, table, write  # noqa: E402

SENDER_CODE = r"""
import struct, sys, time
import zmq
endpoint, count, interval, size, curve = sys.argv[1:6]
count, interval, size = int(count), float(interval) / 1000, int(size)
pub = zmq.Context().socket(zmq.XPUB)  # XPUB: we learn when the subscriber is there
pub.linger = 1000
if curve != "-":
    public, secret = (k.encode() for k in curve.split(","))
    pub.curve_server, pub.curve_publickey, pub.curve_secretkey = True, public, secret
pub.bind(endpoint)
if not pub.poll(20_000):
    sys.exit("no subscriber within 20 s")
pub.recv()  # its subscription
pad = b"\0" * max(0, size - 12)
for i in range(-100, count):  # 100 unmeasured ones warm up the path
    due = time.monotonic() + interval
    pub.send(struct.pack("<qi", time.monotonic_ns(), i) + pad)
    if (left := due - time.monotonic()) > 0:
        time.sleep(left)
pub.send(struct.pack("<qi", time.monotonic_ns(), -1000))  # the end
time.sleep(0.5)
"""

RECEIVER_CODE = r"""
import json, struct, sys, time
import zmq
endpoint, count, curve = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sub = zmq.Context().socket(zmq.SUB)
sub.linger = 0
sub.rcvhwm = 0
if curve != "-":
    public, secret, server = (k.encode() for k in curve.split(","))
    sub.curve_publickey, sub.curve_secretkey, sub.curve_serverkey = public, secret, server
sub.setsockopt(zmq.SUBSCRIBE, b"")
sub.connect(endpoint)
latency_us = []
while sub.poll(20_000):
    message = sub.recv()
    now = time.monotonic_ns()
    sent, i = struct.unpack_from("<qi", message)
    if i == -1000:
        break
    if i >= 0:
        latency_us.append((now - sent) / 1000)
print(json.dumps(latency_us))
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


class Namespaces:
    """A switch namespace with a bridge and two hosts on it; `close` deletes them all."""

    HOSTS = {"a": "10.77.0.1", "b": "10.77.0.3"}

    def __init__(self) -> None:
        self.prefix = f"hop{os.getpid()}"
        self.made: list[str] = []
        try:
            switch = self._add("switch")
            ip("-n", switch, "link", "add", "br0", "type", "bridge")
            ip("-n", switch, "link", "set", "br0", "up")
            for name, address in self.HOSTS.items():
                ns = self._add(name)
                port = f"p-{name}"
                ip("-n", switch, "link", "add", port, "type", "veth", "peer", "eth0", "netns", ns)
                ip("-n", switch, "link", "set", port, "master", "br0")
                ip("-n", switch, "link", "set", port, "up")
                ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
                ip("-n", ns, "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def _add(self, name: str) -> str:
        ns = self.ns(name)
        ip("netns", "add", ns)
        self.made.append(ns)
        ip("-n", ns, "link", "set", "lo", "up")
        return ns

    def close(self) -> None:
        for ns in reversed(self.made):  # deletes the veths and the bridge with them
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self.made.clear()


def run_case(
    net: Namespaces,
    sender_ns: str,
    receiver_ns: str,
    endpoint: str,
    count: int,
    interval_ms: float,
    size: int,
    keys: tuple[bytes, bytes, bytes, bytes] | None,
) -> list[float]:
    """One PUB -> SUB run; the latencies of the measured messages, in µs."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if keys is None:
        server_curve = client_curve = "-"
    else:
        s_pub, s_sec, c_pub, c_sec = (k.decode() for k in keys)
        # Z85 keys may hold ':' but never ','.
        server_curve, client_curve = f"{s_pub},{s_sec}", f"{c_pub},{c_sec},{s_pub}"
    exec_in = ["ip", "netns", "exec"]
    receiver = subprocess.Popen(
        [*exec_in, net.ns(receiver_ns), sys.executable, "-c", RECEIVER_CODE]
        + [endpoint, str(count), client_curve],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    sender = subprocess.Popen(
        [*exec_in, net.ns(sender_ns), sys.executable, "-c", SENDER_CODE]
        + [endpoint, str(count), str(interval_ms), str(size), server_curve],
        env=env,
    )
    try:
        out, _ = receiver.communicate(timeout=60 + count * interval_ms / 1000 * 2)
        if sender.wait(30) != 0 or receiver.returncode != 0:
            raise RuntimeError(
                f"{endpoint}: sender {sender.returncode}, receiver {receiver.returncode}"
            )
    finally:
        for proc in (receiver, sender):
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    latencies = json.loads(out)
    if len(latencies) != count:
        raise RuntimeError(f"{endpoint}: {len(latencies)} of {count} messages arrived")
    return latencies


@click.command()
@click.option("--count", default=10_000, show_default=True, help="Measured messages per run.")
@click.option("--interval", default=1.0, show_default=True, help="Milliseconds between sends.")
@click.option("--size", default=100, show_default=True, help="Bytes per message (>= 12).")
@click.option("--rounds", default=3, show_default=True, help="Runs per case, alternating.")
@click.option("--quick", is_flag=True, help="1,000 messages, one round.")
def main(count: int, interval: float, size: int, rounds: int, quick: bool) -> None:
    if quick:
        count, rounds = 1000, 1
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise click.ClickException("needs root and iproute2 (ip netns)")
    import zmq

    server, client = zmq.curve_keypair(), zmq.curve_keypair()
    keys = (*server, *client)
    hop = f"tcp://{Namespaces.HOSTS['a']}:5600"
    cases = {  # name: (sender ns, receiver ns, endpoint, curve keys)
        "loopback": ("a", "a", "tcp://127.0.0.1:5600", None),
        "hop": ("a", "b", hop, None),
        "loopback, CURVE": ("a", "a", "tcp://127.0.0.1:5600", keys),
        "hop, CURVE": ("a", "b", hop, keys),
    }
    latencies: dict[str, list[float]] = {name: [] for name in cases}
    net = Namespaces()
    try:
        for _ in range(rounds):
            for name, (sender, receiver, endpoint, curve) in cases.items():
                latencies[name] += run_case(
                    net, sender, receiver, endpoint, count, interval, size, curve
                )
    finally:
        net.close()
    results: dict[str, dict] = {}
    rows = [["path", "messages", "p50 µs", "p99 µs", "p99.9 µs", "added p50 µs", "added p99 µs"]]
    for name, values in latencies.items():
        stats = percentiles(values)
        base = percentiles(latencies[name.replace("hop", "loopback")])
        added = {k: stats[k] - base[k] for k in ("p50", "p99")}
        results[name] = {
            "messages": len(values),
            "latency_us": stats,
            "mean_us": float(np.mean(values)),
            "added_us": added,
        }
        rows.append(
            [
                name,
                len(values),
                f"{stats['p50']:.1f}",
                f"{stats['p99']:.1f}",
                f"{stats['p99.9']:.1f}",
                f"{added['p50']:+.1f}" if name.startswith("hop") else "",
                f"{added['p99']:+.1f}" if name.startswith("hop") else "",
            ]
        )
    print(table(rows))
    settings = {"count": count, "interval_ms": interval, "size": size, "rounds": rounds}
    path = write("hop", {**settings, "quick": quick, "cases": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
