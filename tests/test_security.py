"""ZeroMQ beyond loopback: refused in the clear, encrypted and authenticated with CURVE."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import zmq
import zmq.auth

from common import schema
from conftest import REPO, Pipeline, wait_until


def loopback(endpoint: str) -> str:
    """`tcp://0.0.0.0:PORT` as a subscriber on this machine connects to it."""
    assert re.fullmatch(r"tcp://0\.0\.0\.0:[1-9]\d*", endpoint), endpoint
    return endpoint.replace("0.0.0.0", "127.0.0.1")


def test_non_loopback_bind_needs_curve_or_an_explicit_allowance(tmp_path):
    """Binding beyond loopback without --curve-dir or --allow-insecure stops with one line."""
    endpoint = "tcp://0.0.0.0:*"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "producer", "--zmq-pub", endpoint),
            *("--zmq-catchup", f"ipc://{tmp_path}/catchup.sock"),
            *("--zmq-control", f"ipc://{tmp_path}/control.sock"),
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        f"producer: error: refusing to bind {endpoint} beyond this machine without encryption: "
        "give --curve-dir (keys from 'python -m producer keys') or --allow-insecure"
    ]


def test_allow_insecure_binds_anyway(pipeline: Pipeline):
    """With --allow-insecure the producer binds all interfaces and publishes there."""
    pipeline.zmq = "tcp://0.0.0.0:*"
    producer = pipeline.producer("--rate", "20", "--allow-insecure")
    local = loopback(producer.info["pub"])
    assert received_within({"plain": (local, None)}, 10.0, until_any=True)["plain"] > 0


def received_within(
    subscribers: dict[str, tuple[str, tuple | None]], seconds: float, until_any: bool = False
) -> dict[str, int]:
    """Samples each subscriber (name: endpoint, CURVE keys or None) receives in the same span
    of `seconds`; with `until_any`, the span ends at the first sample."""
    context = zmq.Context()
    poller = zmq.Poller()
    sockets: dict[zmq.Socket, str] = {}
    counts = dict.fromkeys(subscribers, 0)
    try:
        for name, (endpoint, keys) in subscribers.items():
            sock = context.socket(zmq.SUB)
            sock.linger = 0
            sock.setsockopt(zmq.SUBSCRIBE, schema.TOPIC)
            if keys is not None:
                (public, secret), server = keys
                sock.curve_publickey, sock.curve_secretkey = public, secret
                sock.curve_serverkey = server
            sock.connect(endpoint)
            poller.register(sock, zmq.POLLIN)
            sockets[sock] = name
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0 and not (until_any and any(counts.values())):
            for sock, _ in poller.poll(int(left * 1000) + 1):
                counts[sockets[sock]] += len(schema.decode(sock.recv_multipart()))
    finally:
        for sock in sockets:
            sock.close()
        context.term()
    return counts


def test_curve_encrypts_and_authenticates(pipeline: Pipeline, tmp_path):
    """Clients with the shared keys get samples; plain or unknown clients get nothing."""
    keys = tmp_path / "keys"
    subprocess.run(
        [sys.executable, "-m", "producer", "keys", "--dir", str(keys)],
        env={"PYTHONPATH": str(REPO)},
        check=True,
        capture_output=True,
        timeout=20,
    )
    pipeline.zmq = "tcp://0.0.0.0:*"
    curve = ["--curve-dir", str(keys)]
    producer = pipeline.producer("--rate", "20", *curve)
    local = loopback(producer.info["pub"])
    pipeline.zmq = local  # where the logger connects
    pipeline.logger("--flush-interval", "0.1", *curve)
    path = pipeline.cwd / "data" / "stream_log.csv"
    wait_until(lambda: path.exists() and len(path.read_text().splitlines()) > 10, timeout=10)
    stranger = zmq.curve_keypair()
    server_public, _ = zmq.auth.load_certificate(keys / "public" / "server.key")
    client = zmq.auth.load_certificate(keys / "private" / "client.key_secret")
    # The scenario: three subscribers listen over the same 2 s while samples flow (the one
    # with the keys proves they do); only it may receive anything.
    counts = received_within(
        {
            "no keys": (local, None),
            "unknown key": (local, (stranger, server_public)),
            "client key": (local, (client, server_public)),
        },
        2.0,
    )
    assert counts["no keys"] == 0, counts
    assert counts["unknown key"] == 0, counts
    assert counts["client key"] > 0, counts
