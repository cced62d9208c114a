"""Bad settings stop a process with one line naming the value and what is allowed."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import zmq

from conftest import REPO


def run(args: list[str], cwd, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A process run to its end with only PYTHONPATH, PATH and `env` set (no STREAM_* leaks in)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=20,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, status: int, *words: str) -> None:
    assert result.returncode == status, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, env, words",
    [
        (["-m", "producer", "--rate", "0"], {}, ["--rate", "0.0", "0<x<=1000"]),
        (["-m", "producer"], {"STREAM_RATE": "-1"}, ["STREAM_RATE", "-1.0"]),
        (["-m", "producer", "--rate", "fast"], {}, ["'fast'", "float"]),
        (["-m", "producer", "--devices", "0"], {}, ["--devices", "1<=x"]),
        (["-m", "producer", "--zmq-pub", "tcp://host"], {}, ["tcp://host", "tcp://HOST:PORT"]),
        (["-m", "logger"], {"STREAM_ZMQ_PUB": "udp://x:1"}, ["udp://x:1", "STREAM_ZMQ_PUB"]),
        (["-m", "logger", "--flush-interval", "0"], {}, ["--flush-interval"]),
        (["-m", "broadcaster", "--ws-port", "70000"], {}, ["--ws-port", "70000"]),
        ([str(REPO / "clients/test_client.py"), "--count", "0"], {}, ["--count"]),
    ],
)
def test_bad_option_values(tmp_path, args, env, words):
    """A bad option or environment value stops the process with status 2 and one line naming it."""
    assert_one_line_error(run(args, tmp_path, env), 2, *words)


def ipc(tmp_path, name: str) -> str:
    """An endpoint of this test's own, never a default one."""
    return f"ipc://{tmp_path}/{name}.sock"


def test_unwritable_csv(tmp_path):
    """A CSV path the logger cannot create stops it with status 3 and one line naming the path."""
    (tmp_path / "blocker").write_text("")
    result = run(
        [
            *("-m", "logger", "--csv", "blocker/log.csv"),
            *("--zmq-pub", ipc(tmp_path, "samples"), "--zmq-catchup", ipc(tmp_path, "catchup")),
        ],
        tmp_path,
    )
    assert_one_line_error(result, 3, "blocker/log.csv")


def test_websocket_port_in_use(tmp_path):
    """A WebSocket port in use stops the broadcaster with status 3 and one line naming it."""
    with socket.socket() as taken:  # held by the test throughout: no race
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            [
                "-m",
                "broadcaster",
                "--ws-host",
                "127.0.0.1",
                "--ws-port",
                str(port),
                "--zmq-pub",
                ipc(tmp_path, "samples"),
            ],
            tmp_path,
        )
    assert_one_line_error(result, 3, f"127.0.0.1:{port}", "address already in use")


def test_zmq_endpoint_in_use(tmp_path):
    """A ZeroMQ endpoint in use stops the producer with status 3 and one line naming it."""
    context = zmq.Context()
    sock = context.socket(zmq.PUB)
    port = sock.bind_to_random_port("tcp://127.0.0.1")  # held by the test throughout
    try:
        result = run(
            [
                *("-m", "producer", "--zmq-pub", f"tcp://127.0.0.1:{port}"),
                *("--zmq-catchup", ipc(tmp_path, "catchup")),
                *("--zmq-control", ipc(tmp_path, "control")),
            ],
            tmp_path,
        )
    finally:
        sock.close(0)
        context.term()
    assert_one_line_error(result, 3, f"tcp://127.0.0.1:{port}", "in use")


def test_bad_url_in_test_client(tmp_path):
    """A URL that is not ws:// or wss:// stops the test client with status 2 and one line."""
    result = run([str(REPO / "clients/test_client.py"), "--url", "http://x"], tmp_path)
    assert_one_line_error(result, 2, "http://x")


@pytest.mark.parametrize(
    "module, envvars",
    [
        ("producer", ["STREAM_RATE", "STREAM_DEVICES", "STREAM_SEED", "STREAM_ZMQ_PUB"]),
        ("logger", ["STREAM_ZMQ_PUB", "STREAM_CSV", "STREAM_FLUSH_INTERVAL"]),
        ("broadcaster", ["STREAM_ZMQ_PUB", "STREAM_WS_HOST", "STREAM_WS_PORT"]),
    ],
)
def test_help_shows_settings_with_env_vars_and_defaults(tmp_path, module, envvars):
    """Each process's --help lists its settings with their environment variables and defaults."""
    result = run(["-m", module, "--help"], tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for var in envvars:
        assert var in text
    assert "default:" in text
