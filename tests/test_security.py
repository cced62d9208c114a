"""ZeroMQ beyond loopback: refused in the clear, encrypted and authenticated with CURVE."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import zmq
import zmq.auth

from common import schema
from conftest import REPO, Pipeline, wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_non_loopback_bind_needs_curve_or_an_explicit_allowance(tmp_path):
    endpoint = f"tcp://0.0.0.0:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "producer", "--zmq-pub", endpoint],
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
    pipeline.zmq = f"tcp://0.0.0.0:{free_port()}"
    pipeline.producer("--allow-insecure")


def received_within(endpoint: str, seconds: float, keys=None) -> int:
    context = zmq.Context()
    sock = context.socket(zmq.SUB)
    sock.linger = 0
    sock.setsockopt(zmq.SUBSCRIBE, schema.TOPIC)
    if keys is not None:
        (public, secret), server = keys
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server
    sock.connect(endpoint)
    count = 0
    end = time.monotonic() + seconds
    try:
        while (left := end - time.monotonic()) > 0:
            if sock.poll(int(left * 1000) + 1):
                count += len(schema.decode(sock.recv_multipart()))
    finally:
        sock.close()
        context.term()
    return count


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
    pipeline.zmq = f"tcp://0.0.0.0:{free_port()}"
    curve = ["--curve-dir", str(keys)]
    pipeline.producer("--rate", "20", *curve)
    pipeline.logger("--flush-interval", "0.1", *curve)
    path = pipeline.cwd / "data" / "stream_log.csv"
    wait_until(lambda: path.exists() and len(path.read_text().splitlines()) > 10, timeout=10)
    local = pipeline.zmq.replace("0.0.0.0", "127.0.0.1")
    assert received_within(local, 2.0) == 0  # no keys: nothing
    stranger = zmq.curve_keypair()
    server_public, _ = zmq.auth.load_certificate(keys / "public" / "server.key")
    assert received_within(local, 2.0, (stranger, server_public)) == 0  # unknown key: nothing
    client = zmq.auth.load_certificate(keys / "private" / "client.key_secret")
    assert received_within(local, 2.0, (client, server_public)) > 0
