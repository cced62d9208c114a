"""The broadcaster under clients that misbehave: never reading, wrong paths, many at once."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections import defaultdict
from contextlib import ExitStack

import pytest
from websockets.sync.client import connect

from conftest import Pipeline, receive, wait_until


def stuck_client(url: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads again."""
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_client_that_never_reads_is_dropped_and_delays_nobody(pipeline: Pipeline):
    """Memory stays bounded, the stuck client gets 1008, a reading client gets every sample."""
    pipeline.producer("--rate", "100", "--devices", "100")
    broadcaster = pipeline.broadcaster("--max-client-buffer", str(256 * 1024))
    receive(pipeline.ws_url, 100)  # warm up
    baseline = rss_mb(broadcaster.popen.pid)
    stuck = stuck_client(pipeline.ws_url)
    seqs: dict[str, list[int]] = defaultdict(list)
    try:
        with connect(pipeline.ws_url, open_timeout=5, max_size=None) as reader:
            deadline = time.monotonic() + 20
            dropped = False
            while time.monotonic() < deadline:
                sample = json.loads(reader.recv(timeout=5))
                seqs[sample["device"]].append(sample["seq"])
                if not dropped and any("fell behind" in line for line in broadcaster.lines):
                    dropped = True
                    deadline = time.monotonic() + 1.0  # keep reading a little longer
            assert dropped, "the stuck client was never dropped"
    finally:
        stuck.close()
    assert rss_mb(broadcaster.popen.pid) < baseline + 50
    assert len(seqs) == 100
    for device, got in seqs.items():
        assert got == list(range(got[0], got[0] + len(got))), f"{device} missed samples"
    assert broadcaster.popen.poll() is None


def test_shutdown_is_quick_even_with_a_stuck_client(pipeline: Pipeline):
    """SIGTERM ends the broadcaster within 2 s although one client holds its buffer full."""
    pipeline.producer("--rate", "100", "--devices", "100")
    broadcaster = pipeline.broadcaster("--max-client-buffer", str(1024**3))
    stuck = stuck_client(pipeline.ws_url)
    try:
        time.sleep(3)  # let the stuck client's buffers fill up
        code, took = broadcaster.stop()
    finally:
        stuck.close()
    assert code == 0 and took < 2, took


def test_other_paths_are_not_found(pipeline: Pipeline):
    from websockets.exceptions import InvalidStatus

    pipeline.producer()
    pipeline.broadcaster()
    with pytest.raises(InvalidStatus) as info:
        connect(pipeline.ws_url + "/nope", open_timeout=5)
    assert info.value.response.status_code == 404


def test_many_clients_each_get_every_sample(pipeline: Pipeline):
    """Fifty clients at once all receive the same samples in order."""
    pipeline.producer("--rate", "20", "--devices", "2")
    pipeline.broadcaster()
    with ExitStack() as stack:
        clients = [stack.enter_context(connect(pipeline.ws_url, open_timeout=5)) for _ in range(50)]
        streams = [[ws.recv(timeout=5) for _ in range(40)] for ws in clients]
    # Clients connected at slightly different ticks; from the latest start, all agree.
    firsts = [json.loads(s[0])["seq"] for s in streams]
    common_start = max(firsts) + 1
    tails = [[f for f in s if json.loads(f)["seq"] >= common_start][:20] for s in streams]
    assert all(t == tails[0] for t in tails) and len(tails[0]) == 20


def test_client_messages_are_ignored_without_harm(pipeline: Pipeline):
    pipeline.producer("--rate", "10")
    broadcaster = pipeline.broadcaster()
    with connect(pipeline.ws_url, open_timeout=5) as ws:
        ws.send("hello")
        ws.send(b"\x00\x01")
        ws.recv(timeout=5)
    with connect(pipeline.ws_url, open_timeout=5, max_size=None) as ws:
        ws.send("x" * (1024 * 1024))  # over the inbound limit: closed with 1009
        wait_until(lambda: ws.state.name == "CLOSED", timeout=5)
    assert len(receive(pipeline.ws_url, 3)) == 3
    assert broadcaster.popen.poll() is None
