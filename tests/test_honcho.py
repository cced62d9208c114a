"""`honcho start` with the repository's Procfile starts the whole pipeline."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd

from conftest import REPO, Proc, cpu_wait, ready_info, wait_until


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
    me = (os.getpid(), threading.get_native_id())
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
        # The machine's part of the time to the first sample is what it kept waiting for a
        # CPU, one after the other: honcho until it has started the processes, the producer
        # and the broadcaster side by side until both serve (the lesser of the two), this
        # test starting the client, the client. What is left is the pipeline's own start.
        honcho_wait, serving_wait = 0.0, {}
        children = Path(f"/proc/{honcho.pid}/task/{honcho.pid}/children")

        def serving() -> bool:
            nonlocal honcho_wait
            if not children.exists() or not children.read_text().split():
                honcho_wait = cpu_wait(honcho.pid)  # the last figure before its first child
            for name in ("producer", "broadcaster"):
                if name not in serving_wait and (info := ready_info(ready / f"{name}.1.json")):
                    serving_wait[name] = cpu_wait(info["pid"])
            return len(serving_wait) == 2 or honcho.poll() is not None

        wait_until(serving, timeout=10, interval=0.02, message="no ready file of both")
        assert honcho.poll() is None, "honcho stopped"
        mine = cpu_wait(*me)
        url = ready_info(ready / "broadcaster.1.json")["url"]
        client = Proc([str(REPO / "clients/test_client.py"), "--url", url], tmp_path)
        machine_s = honcho_wait + min(serving_wait.values()) + cpu_wait(*me) - mine
        client.wait_for(r"^Received: ", timeout=10, stream="out")
        first_sample_s = time.monotonic() - started
        machine_s += cpu_wait(client.popen.pid)
        print(f"honcho start -> first sample: {first_sample_s:.2f} s ({machine_s:.2f} s waiting)")
        assert first_sample_s - machine_s < 3.0, (first_sample_s, machine_s)
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
