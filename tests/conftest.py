"""Fixtures that run the real processes as subprocesses in a temporary directory."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.sync.client import connect

REPO = Path(__file__).resolve().parent.parent


class Proc:
    """A running `python -m <module>`, its stderr collected line by line in a thread."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        full_env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        full_env.update(env or {})
        self.args = args
        self.popen = subprocess.Popen(
            [sys.executable, *args],
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.out: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(
            target=self._read, args=(self.popen.stderr, self.lines), daemon=True
        ).start()
        threading.Thread(target=self._read, args=(self.popen.stdout, self.out), daemon=True).start()

    def _read(self, stream, into: list[str]) -> None:
        for line in stream:
            with self._changed:
                into.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 10.0, stream: str = "err") -> re.Match[str]:
        """The first line (from the start) matching `pattern`; fail after `timeout` seconds."""
        lines = self.lines if stream == "err" else self.out
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in lines:
                    if match := regex.search(line):
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.popen.poll() is not None and not self._changed.wait(0.2)
                ):
                    raise AssertionError(
                        f"{self.args}: no line matching {pattern!r} within {timeout}s; "
                        f"exit={self.popen.poll()}; stderr:\n" + "\n".join(self.lines[-30:])
                    )
                self._changed.wait(min(remaining, 0.2))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> tuple[int, float]:
        """Send `sig`, wait for exit; return (exit code, seconds taken). Kills on timeout."""
        start = time.monotonic()
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
            raise AssertionError(
                f"{self.args} did not exit within {timeout}s of signal {sig}"
            ) from None
        return code, time.monotonic() - start

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)


@dataclass
class Pipeline:
    """Endpoints of a running pipeline and a way to start more processes against it."""

    cwd: Path
    zmq: str
    procs: list[Proc]
    ws_url: str = ""

    def start(self, module: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        proc = Proc(["-m", module, *args], self.cwd, env)
        self.procs.append(proc)
        return proc

    def start_script(self, script: str, *args: str) -> Proc:
        proc = Proc([str(REPO / script), *args], self.cwd)
        self.procs.append(proc)
        return proc

    @property
    def replay(self) -> str:
        return f"ipc://{self.cwd}/replay.sock"

    def producer(self, *args: str) -> Proc:
        proc = self.start("producer", "--zmq-pub", self.zmq, "--zmq-replay", self.replay, *args)
        proc.wait_for(r"publishing on")
        return proc

    def logger(self, *args: str) -> Proc:
        proc = self.start("logger", "--zmq-pub", self.zmq, "--zmq-replay", self.replay, *args)
        proc.wait_for(r"appending to")
        return proc

    def broadcaster(self, *args: str) -> Proc:
        proc = self.start("broadcaster", "--zmq-pub", self.zmq, "--ws-port", "0", *args)
        port = proc.wait_for(r"listening on ws://127\.0\.0\.1:(\d+)").group(1)
        self.ws_url = f"ws://127.0.0.1:{port}"
        return proc


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    """An empty pipeline in a temp dir, bound to an ipc endpoint there; all stopped at the end."""
    pipe = Pipeline(cwd=tmp_path, zmq=f"ipc://{tmp_path}/samples.sock", procs=[])
    yield pipe
    for proc in pipe.procs:
        proc.kill()


def receive(url: str, count: int, timeout: float = 10.0) -> list[dict]:
    """`count` samples from a real WebSocket connection, parsed, in arrival order."""
    samples: list[dict] = []
    deadline = time.monotonic() + timeout
    with connect(url, open_timeout=timeout, max_size=None) as ws:
        while len(samples) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"got {len(samples)} of {count} samples within {timeout}s")
            samples.append(json.loads(ws.recv(timeout=remaining)))
    return samples


def connect_with_retry(url: str, timeout: float = 10.0):
    """A connection to a server that may still be starting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect(url, open_timeout=2, max_size=None)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def wait_until(predicate, timeout: float, interval: float = 0.1, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(message or f"condition not met within {timeout}s")
        time.sleep(interval)
