"""Settings as a new user meets them: one `.env` for every command, options that imply each
other, and errors that say which setting to change."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

from conftest import REPO, Proc, wait_until

CLIENT = str(REPO / "clients/test_client.py")


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 30):
    """A command run to its end with only PYTHONPATH, PATH and `env` set (no STREAM_* leaks in)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def clean_proc(args: list[str], cwd: Path, env: dict[str, str], ready: Path | None = None) -> Proc:
    """`python ARGS` in `cwd` with `env` added (the test's own environment has no STREAM_*)."""
    return Proc(args, cwd, env, ready)


def one_line_error(result: subprocess.CompletedProcess, status: int, *words: str) -> str:
    assert result.returncode == status, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def ipc(tmp_path: Path, name: str) -> str:
    return f"ipc://{tmp_path}/{name}.sock"


def write_env(tmp_path: Path, **settings: object) -> None:
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))


# --- .env: every command reads it, with the precedence command line > environment > .env


def test_every_process_and_ctl_read_the_env_file(tmp_path: Path):
    """A producer, a logger and `ctl` started in a plain shell in a directory with a `.env`
    take their endpoints, devices and CSV from it, as under honcho."""
    write_env(
        tmp_path,
        STREAM_ZMQ_PUB=ipc(tmp_path, "pub"),
        STREAM_ZMQ_CATCHUP=ipc(tmp_path, "catchup"),
        STREAM_ZMQ_CONTROL=ipc(tmp_path, "control"),
        STREAM_DEVICES=3,
        STREAM_RATE=10,
        STREAM_CSV="data/from-env.csv",
        STREAM_FLUSH_INTERVAL=0.1,
    )
    producer = clean_proc(
        ["-m", "producer", "--ready-file", "p.json"], tmp_path, {}, tmp_path / "p.json"
    )
    logger = clean_proc(
        ["-m", "logger", "--ready-file", "l.json"], tmp_path, {}, tmp_path / "l.json"
    )
    try:
        assert producer.ready()["control"] == ipc(tmp_path, "control")
        assert logger.ready()["csv"] == "data/from-env.csv"
        status = run(["-m", "producer", "ctl", "status"], tmp_path)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["devices"] == 3
        log = tmp_path / "data" / "from-env.csv"
        wait_until(lambda: log.exists() and len(log.read_text().splitlines()) > 6, timeout=15)
    finally:
        producer.kill()
        logger.kill()


def test_command_line_beats_environment_beats_env_file(tmp_path: Path):
    """`.env` fills in only what neither the command line nor the environment set."""
    write_env(
        tmp_path,
        STREAM_ZMQ_PUB=ipc(tmp_path, "pub"),
        STREAM_ZMQ_CATCHUP=ipc(tmp_path, "catchup"),
        STREAM_ZMQ_CONTROL=ipc(tmp_path, "control"),
        STREAM_DEVICES=3,
        STREAM_SEED=5,
    )
    cases = [
        ([], {}, (3, 5)),
        ([], {"STREAM_DEVICES": "2"}, (2, 5)),
        (["--devices", "4"], {"STREAM_DEVICES": "2"}, (4, 5)),
    ]
    for args, env, (devices, seed) in cases:
        ready = tmp_path / "p.json"
        producer = clean_proc(
            ["-m", "producer", "--ready-file", "p.json", *args], tmp_path, env, ready
        )
        try:
            producer.ready()
            status = run(["-m", "producer", "ctl", "status"], tmp_path)
            assert status.returncode == 0, status.stderr
            answer = json.loads(status.stdout)
            assert (answer["devices"], answer["seed"]) == (devices, seed), (args, env, answer)
        finally:
            producer.stop()


def test_under_honcho_the_env_file_is_not_read_again(tmp_path: Path):
    """honcho has applied its env files (`-e`) already: a process it runs does not also read
    `./.env`, which honcho may have been told not to use."""
    write_env(tmp_path, STREAM_RATE="not-a-number")
    under_honcho = run(["-m", "producer", "roles"], tmp_path, {"HONCHO_PROCESS_NAME": "x.1"})
    assert under_honcho.returncode == 0 and "web" in under_honcho.stdout, under_honcho.stderr
    one_line_error(run(["-m", "producer", "roles"], tmp_path), 2, "STREAM_RATE", "not-a-number")


def test_bridge_reads_the_env_file(tmp_path: Path):
    """The bridge takes its broker from `.env` like the others (a bad one is named)."""
    write_env(tmp_path, STREAM_BRIDGE_TO="ftp://broker:21")
    one_line_error(run(["-m", "bridge"], tmp_path), 2, "ftp://broker:21")


def test_verify_without_files_checks_the_log_the_env_file_names(tmp_path: Path):
    """`python -m logger verify` with no file checks the log that STREAM_CSV names."""
    write_env(tmp_path, STREAM_CSV="data/mine.csv")
    made = run(
        ["-m", "producer", "generate", "--no-progress", "--duration", "20s", "--seed", "3"]
        + ["--start", "2025-08-04", "--out", "data/mine.csv"],
        tmp_path,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    report = run(["-m", "logger", "verify"], tmp_path)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "20 rows" in report.stdout and "data/mine.csv" in report.stdout


def test_test_client_finds_the_broadcaster_from_the_env_file(pipeline, tmp_path: Path):
    """With no --url, the test client connects to the broadcaster that `.env`'s STREAM_WS_HOST
    and STREAM_WS_PORT describe; STREAM_CLIENT_URL (or --url) still wins."""
    pipeline.producer("--rate", "20")
    pipeline.broadcaster("--ws-host", "127.0.0.1")
    port = pipeline.procs[-1].info["ws_port"]
    write_env(tmp_path, STREAM_WS_HOST="127.0.0.1", STREAM_WS_PORT=port)
    found = run([CLIENT, "--count", "2", "--timeout", "10"], tmp_path)
    assert found.returncode == 0, found.stderr
    assert found.stdout.count("Received: ") == 2
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nowhere = closed.getsockname()[1]
    wrong = run(
        [CLIENT, "--count", "1", "--timeout", "1"],
        tmp_path,
        {"STREAM_CLIENT_URL": f"ws://127.0.0.1:{nowhere}"},
    )
    assert wrong.returncode == 3, wrong.stderr
    assert f"127.0.0.1:{nowhere}" in wrong.stderr


# --- options that imply each other; errors that name the setting


def test_replay_file_implies_the_replay_source(tmp_path: Path):
    """--replay-file alone replays the file; with another --source it is refused (status 2)."""
    made = run(
        ["-m", "producer", "generate", "--no-progress", "--duration", "30s", "--seed", "1"]
        + ["--start", "2025-08-04", "--out", "rec.csv"],
        tmp_path,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    endpoints = ["--zmq-pub", ipc(tmp_path, "pub"), "--zmq-catchup", ipc(tmp_path, "c")]
    endpoints += ["--zmq-control", ipc(tmp_path, "ctl")]
    producer = clean_proc(
        ["-m", "producer", "--replay-file", "rec.csv", "--ready-file", "p.json", *endpoints],
        tmp_path,
        {},
        tmp_path / "p.json",
    )
    try:
        producer.ready()
        status = run(
            ["-m", "producer", "ctl", "--zmq-control", ipc(tmp_path, "ctl"), "status"], tmp_path
        )
        assert json.loads(status.stdout)["source"] == "replay", status.stdout
    finally:
        producer.stop()
    for how, env in ((["--source", "sim"], {}), ([], {"STREAM_SOURCE": "live"})):
        refused = run(
            ["-m", "producer", "--replay-file", "rec.csv", *how, *endpoints], tmp_path, env
        )
        one_line_error(refused, 2, "--replay-file", "--source replay")


@pytest.mark.parametrize(
    "option, variable",
    [
        ("--zmq-pub", "STREAM_ZMQ_PUB"),
        ("--zmq-catchup", "STREAM_ZMQ_CATCHUP"),
        ("--zmq-control", "STREAM_ZMQ_CONTROL"),
    ],
)
def test_busy_zmq_endpoint_names_the_option_and_variable(tmp_path: Path, option, variable):
    """A ZeroMQ endpoint in use stops the producer with one line naming the endpoint, the
    option and the environment variable that choose another."""
    context = zmq.Context()
    sock = context.socket(zmq.PUB)
    port = sock.bind_to_random_port("tcp://127.0.0.1")  # held by the test throughout
    endpoints = {
        "--zmq-pub": ipc(tmp_path, "pub"),
        "--zmq-catchup": ipc(tmp_path, "catchup"),
        "--zmq-control": ipc(tmp_path, "control"),
        option: f"tcp://127.0.0.1:{port}",
    }
    try:
        given = [x for kv in endpoints.items() for x in kv]
        result = run(["-m", "producer", "--log-level", "WARNING", *given], tmp_path)
    finally:
        sock.close(0)
        context.term()
    one_line_error(result, 3, f"tcp://127.0.0.1:{port}", "in use", option, variable)


def test_busy_websocket_port_names_the_option_and_variable(tmp_path: Path):
    """A WebSocket port held by a program that does not share it: one line naming --ws-port
    and STREAM_WS_PORT."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            ["-m", "broadcaster", "--ws-host", "127.0.0.1", "--ws-port", str(port)]
            + ["--zmq-pub", ipc(tmp_path, "pub")],
            tmp_path,
        )
    one_line_error(result, 3, f"127.0.0.1:{port}", "--ws-port", "STREAM_WS_PORT")
