"""`honcho start` with the repository's Procfile starts the whole pipeline."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from conftest import REPO, Proc, ready_info, wait_until


def test_honcho_start_runs_everything(tmp_path: Path):
    """From `honcho start` to the first sample at the test client, then a clean stop."""
    shutil.copy(REPO / "Procfile", tmp_path / "Procfile")
    ready = tmp_path / "ready"
    # Every endpoint is in tmp_path and every port is chosen by the kernel, so a pipeline
    # already running on this machine with the defaults is no obstacle.
    (tmp_path / ".env").write_text(
        f"STREAM_ZMQ_PUB=ipc://{tmp_path}/samples.sock\n"
        f"STREAM_ZMQ_CATCHUP=ipc://{tmp_path}/catchup.sock\n"
        f"STREAM_ZMQ_CONTROL=ipc://{tmp_path}/control.sock\n"
        "STREAM_WS_PORT=0\n"
        f"STREAM_READY_FILE={ready}/{{instance}}.json\n"
    )
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    for name in [k for k in env if k.startswith("STREAM_") or k == "HONCHO_PROCESS_NAME"]:
        del env[name]  # only the .env configures this pipeline
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
    client = None
    try:
        wait_until(
            lambda: (
                ready_info(ready / "broadcaster.1.json") is not None or honcho.poll() is not None
            ),
            timeout=10,
            interval=0.02,
            message="the broadcaster wrote no ready file",
        )
        assert honcho.poll() is None, "honcho stopped"
        url = ready_info(ready / "broadcaster.1.json")["url"]
        client = Proc([str(REPO / "clients/test_client.py"), "--url", url], tmp_path)
        client.wait_for(r"^Received: ", timeout=10, stream="out")
        first_sample_s = time.monotonic() - started
        print(f"honcho start -> first sample: {first_sample_s:.2f} s")
        assert first_sample_s < 3.0
        for name in ("producer", "logger", "broadcaster"):
            info = ready_info(ready / f"{name}.1.json")
            assert info and info["process"] == name and info["instance"] == f"{name}.1", info
        path = tmp_path / "data" / "stream_log.csv"
        wait_until(lambda: path.exists() and len(path.read_text().splitlines()) >= 3, timeout=10)
    finally:
        if client is not None:
            client.kill()
        honcho.send_signal(signal.SIGTERM)
        try:
            output, _ = honcho.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            raise
    for name in ("producer", "logger", "broadcaster"):
        assert f"{name}.service: stopped" in output, output
        assert not (ready / f"{name}.1.json").exists(), f"{name} left its ready file"
    assert "Traceback" not in output
    assert len(pd.read_csv(path, parse_dates=["timestamp"])) >= 2
