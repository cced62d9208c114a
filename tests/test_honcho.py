"""`honcho start` with the repository's Procfile starts the whole pipeline."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from conftest import REPO, Proc, wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_honcho_start_runs_everything(tmp_path: Path):
    """From `honcho start` to the first sample at the test client, then a clean stop."""
    shutil.copy(REPO / "Procfile", tmp_path / "Procfile")
    port = free_port()
    (tmp_path / ".env").write_text(
        f"STREAM_ZMQ_PUB=ipc://{tmp_path}/samples.sock\nSTREAM_WS_PORT={port}\n"
        f"STREAM_ZMQ_REPLAY=ipc://{tmp_path}/replay.sock\n"
    )
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    started = time.monotonic()
    honcho = subprocess.Popen(
        [os.path.join(bin_dir, "honcho"), "start"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    client = Proc(
        [str(REPO / "clients/test_client.py"), "--url", f"ws://localhost:{port}"], tmp_path
    )
    try:
        client.wait_for(r"^Received: ", timeout=10, stream="out")
        first_sample_s = time.monotonic() - started
        print(f"honcho start -> first sample: {first_sample_s:.2f} s")
        assert first_sample_s < 3.0
        path = tmp_path / "data" / "stream_log.csv"
        wait_until(lambda: path.exists() and len(path.read_text().splitlines()) >= 3, timeout=10)
    finally:
        client.kill()
        honcho.send_signal(signal.SIGTERM)
        try:
            output, _ = honcho.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            raise
    for name in ("producer", "logger", "broadcaster"):
        assert f"{name}.service: stopped" in output, output
    assert "Traceback" not in output
    assert len(pd.read_csv(path, parse_dates=["timestamp"])) >= 2
