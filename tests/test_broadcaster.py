"""The broadcaster under clients that misbehave: never reading, wrong paths, many at once."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections import defaultdict
from contextlib import ExitStack

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
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


def metric(ws_url: str, name: str) -> float:
    """The value of one of the broadcaster's Prometheus metrics (served on its WebSocket port)."""
    url = ws_url.replace("ws://", "http://", 1) + "/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"no {name} in /metrics"
    return float(match[1])


def kernel_send_queue(server_port: int, client: socket.socket) -> int:
    """Bytes the kernel holds unsent on the server's end of `client`'s connection (Linux)."""
    client_port = client.getsockname()[1]
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == (
                client_port
            ):
                return int(fields[4].split(":")[0], 16)
    raise AssertionError(f"no connection 127.0.0.1:{server_port} <- :{client_port}")


def test_a_client_that_never_reads_is_dropped_and_delays_nobody(pipeline: Pipeline):
    """A client that never reads is dropped (and only it), memory stays bounded meanwhile, and a
    reading client gets every sample of every device without a gap."""
    pipeline.producer("--rate", "100", "--devices", "100")
    broadcaster = pipeline.broadcaster("--max-client-buffer", str(256 * 1024))
    receive(pipeline.ws_url, 100)  # warm up
    baseline = rss_mb(broadcaster.popen.pid)
    assert metric(pipeline.ws_url, "stream_client_drops_total") == 0
    stuck = stuck_client(pipeline.ws_url)
    seqs: dict[str, list[int]] = defaultdict(list)
    try:
        # max_queue=None: the reader takes in frames as fast as they come, however busy the
        # test is, and its close handshake does not wait behind frames it stopped taking.
        with connect(pipeline.ws_url, open_timeout=5, max_size=None, max_queue=None) as reader:
            deadline = time.monotonic() + 20
            next_check = 0.0
            dropped = False
            while time.monotonic() < deadline:
                sample = json.loads(reader.recv(timeout=5))
                seqs[sample["device"]].append(sample["seq"])
                if not dropped and time.monotonic() >= next_check:
                    next_check = time.monotonic() + 0.2  # a scrape now and then, not per sample
                    if metric(pipeline.ws_url, "stream_client_drops_total") >= 1:
                        dropped = True
                        deadline = time.monotonic() + 1.0  # keep reading a little longer
            assert dropped, "the stuck client was never dropped"
            assert metric(pipeline.ws_url, "stream_client_drops_total") == 1  # not the reader
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
    port = broadcaster.info["ws_port"]
    stuck = stuck_client(pipeline.ws_url)
    try:
        # Full means the kernel takes no more for this client while frames keep being
        # written to it: from then on they wait in the broadcaster's own buffer.
        seen = {"queued": -1, "sent": -1.0}

        def buffers_full() -> bool:
            queued = kernel_send_queue(port, stuck)
            sent = metric(pipeline.ws_url, "stream_frames_sent_total")
            full = queued > 0 and queued == seen["queued"] and sent > seen["sent"] + 1000
            if not full and queued != seen["queued"]:
                seen.update(queued=queued, sent=sent)
            return full

        wait_until(buffers_full, timeout=15, interval=0.2, message="buffers never filled up")
        code, took = broadcaster.stop()
    finally:
        stuck.close()
    assert code == 0 and took < 2, took


def test_other_paths_are_not_found(pipeline: Pipeline):
    """A WebSocket upgrade on any path but / is refused with 404."""
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
        # Each queues what comes while the others are read: unbounded, so none stops reading
        # (and misses its keepalive pongs) however long connecting them all takes.
        clients = [
            stack.enter_context(connect(pipeline.ws_url, open_timeout=5, max_queue=None))
            for _ in range(50)
        ]
        streams = [[ws.recv(timeout=5)] for ws in clients]
        # Clients connected at different ticks (further apart on a busy machine); from the
        # latest start, all agree: each is read until it holds 20 samples from there.
        common_start = max(json.loads(s[0])["seq"] for s in streams) + 1
        for ws, stream in zip(clients, streams, strict=True):
            while sum(json.loads(f)["seq"] >= common_start for f in stream) < 20:
                stream.append(ws.recv(timeout=5))
    tails = [[f for f in s if json.loads(f)["seq"] >= common_start][:20] for s in streams]
    assert all(t == tails[0] for t in tails) and len(tails[0]) == 20


def test_unexpected_client_messages_get_an_error_reply_or_a_clean_close(pipeline: Pipeline):
    """Junk text gets an error reply, binary 1003, an oversized message 1009, a flood 1008;
    the broadcaster keeps serving others."""
    pipeline.producer("--rate", "10")
    broadcaster = pipeline.broadcaster()
    with connect(pipeline.ws_url, open_timeout=5) as ws:
        ws.send("hello")
        replies = [json.loads(ws.recv(timeout=5)) for _ in range(5)]
        assert any("error" in r for r in replies)
    with connect(pipeline.ws_url, open_timeout=5) as ws:
        ws.send(b"\x00\x01")
        wait_until(lambda: ws.state.name == "CLOSED", timeout=5)
        assert ws.close_code == 1003
    with connect(pipeline.ws_url, open_timeout=5, max_size=None) as ws:
        ws.send("x" * (1024 * 1024))  # over the inbound limit: closed with 1009
        wait_until(lambda: ws.state.name == "CLOSED", timeout=5)
        assert ws.close_code == 1009
    with connect(pipeline.ws_url, open_timeout=5) as ws:
        for _ in range(100):  # a flood: closed with 1008
            try:
                ws.send("{}")
            except ConnectionClosed:
                break
        with pytest.raises(ConnectionClosed):
            for _ in range(1000):
                ws.recv(timeout=5)
        assert ws.close_code == 1008
    assert len(receive(pipeline.ws_url, 3)) == 3
    assert broadcaster.popen.poll() is None


def refusal(url: str, **kwargs) -> int:
    with pytest.raises(InvalidStatus) as info:
        with connect(url, open_timeout=5, **kwargs):
            pass
    return info.value.response.status_code


def test_connections_beyond_the_cap_get_503(pipeline: Pipeline):
    """With --max-clients 3 a fourth connection gets HTTP 503, and one is accepted again once
    the three have left."""
    pipeline.producer("--rate", "10")
    pipeline.broadcaster("--max-clients", "3")
    with ExitStack() as stack:
        for _ in range(3):
            stack.enter_context(connect(pipeline.ws_url, open_timeout=5))
        assert refusal(pipeline.ws_url) == 503
    wait_until(lambda: _accepts(pipeline.ws_url), timeout=5)


def _accepts(url: str) -> bool:
    try:
        with connect(url, open_timeout=5):
            return True
    except InvalidStatus:
        return False


def test_origin_allow_list_and_token(pipeline: Pipeline):
    """A wrong Origin gets 403, a missing or wrong token 401; the right ones get samples."""
    pipeline.producer("--rate", "10")
    broadcaster = pipeline.broadcaster(
        "--origins", "https://dash.example.com", env={"STREAM_WS_TOKEN": "s3cret-token"}
    )
    url = pipeline.ws_url
    good_origin = {"origin": "https://dash.example.com"}
    assert refusal(url + "/?token=s3cret-token", origin="https://evil.example.com") == 403
    assert refusal(url + "/?token=s3cret-token") == 403
    assert refusal(url, **good_origin) == 401
    assert refusal(url + "/?token=wrong", **good_origin) == 401
    with connect(url + "/?token=s3cret-token", open_timeout=5, **good_origin) as ws:
        assert "timestamp" in json.loads(ws.recv(timeout=5))
    headers = {"Authorization": "Bearer s3cret-token"}
    with connect(url, open_timeout=5, additional_headers=headers, **good_origin) as ws:
        assert "timestamp" in json.loads(ws.recv(timeout=5))
    assert not any("s3cret-token" in line for line in broadcaster.lines)


def test_tls(pipeline: Pipeline, tmp_path):
    """With a certificate and key the broadcaster serves wss://."""
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    pipeline.producer("--rate", "10")
    pipeline.broadcaster("--tls-cert", str(cert), "--tls-key", str(key))
    assert pipeline.ws_url.startswith("wss://127.0.0.1:"), pipeline.ws_url
    context = ssl.create_default_context(cafile=str(cert))
    with connect(pipeline.ws_url, ssl=context, open_timeout=5) as ws:
        assert "timestamp" in json.loads(ws.recv(timeout=5))


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict]:
    """(status, body, headers) of a plain HTTP GET, whatever the status."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def test_token_guards_every_page_but_healthz(pipeline: Pipeline):
    """With --token, the dashboard, its files, /schema.json and /metrics on the WebSocket port
    answer 401 without the token (or with a wrong one) and 200 with it, in the query or as a
    Bearer header; /healthz stays open; --metrics-port serves /metrics on 127.0.0.1 openly."""
    pipeline.producer("--rate", "10")
    broadcaster = pipeline.broadcaster(
        "--metrics-port", "any", env={"STREAM_WS_TOKEN": "s3cret-token"}
    )
    base = pipeline.ws_url.replace("ws://", "http://", 1)
    for path in ("/", "/index.html", "/schema.json", "/metrics"):
        status, body, headers = http_get(base + path)
        assert (
            status == 401 and "token" in body and headers["WWW-Authenticate"].startswith("Bearer")
        ), (path, status)
        assert http_get(f"{base}{path}?token=wrong")[0] == 401, path
        assert http_get(base + path, {"Authorization": "Bearer wrong"})[0] == 401, path
        assert http_get(f"{base}{path}?token=s3cret-token")[0] == 200, path
        assert http_get(base + path, {"Authorization": "Bearer s3cret-token"})[0] == 200, path
    assert "stream_clients" in http_get(f"{base}/metrics?token=s3cret-token")[1]
    wait_until(lambda: http_get(base + "/healthz")[0] == 200, timeout=10)
    assert json.loads(http_get(base + "/healthz")[1])["status"] == "ok"
    scrape = broadcaster.info["metrics_port"]
    status, body, _ = http_get(f"http://127.0.0.1:{scrape}/metrics")
    assert status == 200 and "stream_samples_received_total" in body
    assert "stream_resumes_total" in body
    assert not any("s3cret-token" in line for line in broadcaster.lines)
