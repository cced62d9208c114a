"""Fixtures that run the real processes as subprocesses in a temporary directory."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

# Property-based tests run a bounded number of examples (CI time stays predictable);
# HYPOTHESIS_PROFILE=deep looks much harder.
settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("deep", max_examples=20_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = Path(__file__).resolve().parent.parent

# Most tests wait (processes starting, brokers, rates) far more than they compute, so the
# suite runs in this many pytest-xdist workers, one test file each at a time (module
# fixtures such as a Kafka broker stay in one worker): one more than the cores keeps them
# busy (four on two cores ran faster, but the bridges' load tests then starved each other).
WORKERS = (os.cpu_count() or 1) + 1


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """What `-n auto` (pyproject's addopts) means here: WORKERS for the suite or a folder,
    none for tests of one file, which then run in this process as without xdist."""
    files = set()
    for arg in config.args:
        path = config.invocation_params.dir / arg.split("::")[0]
        if not path.is_file():
            return WORKERS
        files.add(path.resolve())
    return WORKERS if len(files) > 1 else 0


class Proc:
    """A running `python -m <module>`, its stderr collected line by line in a thread."""

    def __init__(
        self,
        args: list[str],
        cwd: Path,
        env: dict[str, str] | None = None,
        ready_file: Path | None = None,
    ) -> None:
        full_env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        full_env.pop("HONCHO_PROCESS_NAME", None)
        full_env.update(env or {})
        self.args = args
        self.ready_file = ready_file
        self.info: dict = {}
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

    def ready(self, timeout: float = 20.0) -> dict:
        """What the process wrote to its ready file (endpoints, ports), once it is serving."""
        assert self.ready_file is not None, f"{self.args} was started without a ready file"
        self.info = wait_ready(
            self.ready_file, self.popen, timeout, lambda: "\n".join(self.lines[-30:])
        )
        return self.info

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> tuple[int, float]:
        """Send `sig`, wait for exit; return (exit code, seconds its shutdown took). Kills
        after `timeout` seconds of wall time.

        The seconds taken leave out the time the machine kept the process's main thread
        waiting for a CPU (`cpu_wait`): on a busy machine that is the machine's time, not
        the shutdown's; every sleep, wait and computation of the shutdown still counts."""
        start = time.monotonic()
        waited_before = waited = cpu_wait(self.popen.pid)
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        while (code := self.popen.poll()) is None:
            if time.monotonic() - start > timeout:
                self.popen.kill()
                self.popen.wait(5)
                raise AssertionError(f"{self.args} did not exit within {timeout}s of signal {sig}")
            waited = max(waited, cpu_wait(self.popen.pid))  # the last figure before it exits
            time.sleep(0.005)
        return code, time.monotonic() - start - (waited - waited_before)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)


def cpu_wait(pid: int, thread: int | None = None) -> float:
    """Seconds the main thread of process `pid` (or its thread `thread`) has spent runnable
    but waiting for a CPU since it started, as Linux counts it (/proc/PID/task/TID/schedstat);
    0.0 once the process is gone, or where the kernel does not say.

    Tests that bound how long something takes subtract what this grows by meanwhile: the
    bound then holds the code to its own time, however busy the machine is."""
    try:
        fields = Path(f"/proc/{pid}/task/{thread or pid}/schedstat").read_text().split()
        return int(fields[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def ready_info(path: Path) -> dict | None:
    """The JSON in a ready file, or None while there is none (it is replaced atomically)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def wait_ready(
    path: Path, popen: subprocess.Popen, timeout: float, stderr: Callable[[], str]
) -> dict:
    """The ready file of the process `popen` started, once written; fail with the process's
    last lines of stderr if it exits first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        info = ready_info(path)
        if info is not None and info.get("pid") == popen.pid:
            return info
        if popen.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(
                f"{popen.args}: not ready within {timeout}s; exit={popen.poll()}; "
                f"stderr:\n{stderr()}"
            )
        time.sleep(0.02)


@dataclass
class Pipeline:
    """A pipeline in a temp dir: every endpoint an ipc socket there, every port chosen by the
    kernel and read back from the processes' ready files, so nothing on the machine (a
    running `honcho start`, another test run) can collide with it."""

    cwd: Path
    procs: list[Proc] = field(default_factory=list)
    ws_url: str = ""

    def __post_init__(self) -> None:
        self.zmq = f"ipc://{self.cwd}/samples.sock"
        self.catchup = f"ipc://{self.cwd}/catchup.sock"
        self.control = f"ipc://{self.cwd}/control.sock"

    def start(self, module: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        """`python -m module args` with a ready file of its own (not waited for)."""
        ready = self.cwd / "ready" / f"{module}-{len(self.procs)}.json"
        proc = Proc(["-m", module, "--ready-file", str(ready), *args], self.cwd, env, ready)
        self.procs.append(proc)
        return proc

    def start_script(self, script: str, *args: str) -> Proc:
        proc = Proc([str(REPO / script), *args], self.cwd)
        self.procs.append(proc)
        return proc

    def producer(self, *args: str, env: dict[str, str] | None = None) -> Proc:
        """A producer on this pipeline's endpoints (later `args` win), once it is publishing."""
        proc = self.start(
            "producer",
            *("--zmq-pub", self.zmq, "--zmq-catchup", self.catchup),
            *("--zmq-control", self.control),
            *args,
            env=env,
        )
        proc.ready()
        return proc

    def logger(self, *args: str, env: dict[str, str] | None = None) -> Proc:
        """A logger on this pipeline's endpoints, once it is logging."""
        proc = self.start(
            "logger", "--zmq-pub", self.zmq, "--zmq-catchup", self.catchup, *args, env=env
        )
        proc.ready()
        return proc

    def broadcaster(self, *args: str, env: dict[str, str] | None = None) -> Proc:
        """A broadcaster on a free port, once it is listening; sets `ws_url`. It asks this
        pipeline's producer for the fleet's roles and planned events (/fleet.json)."""
        proc = self.start(
            "broadcaster",
            *("--zmq-pub", self.zmq, "--zmq-catchup", self.catchup, "--ws-port", "0"),
            *("--zmq-control", self.control),
            *args,
            env=env,
        )
        self.ws_url = proc.ready()["url"].rstrip("/")
        return proc

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        """`python -m producer ctl ARGS` against this pipeline's producer."""
        return subprocess.run(
            [sys.executable, "-m", "producer", "ctl", "--zmq-control", self.control, *args],
            cwd=self.cwd,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=30,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed test's report ends with the last lines each of its pipeline's processes
    wrote: what a process saw is what explains a failure seen once in CI."""
    report = yield
    pipe = getattr(item, "funcargs", {}).get("pipeline")
    if report.when == "call" and report.failed and isinstance(pipe, Pipeline):
        for proc in pipe.procs:
            name = " ".join(proc.args[:2])
            report.sections.append((f"{name} (last 60 lines)", "\n".join(proc.lines[-60:])))
    return report


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    """An empty pipeline in a temp dir; every process it started is killed at the end."""
    pipe = Pipeline(cwd=tmp_path)
    yield pipe
    for proc in pipe.procs:
        proc.kill()


def receive(url: str, count: int, timeout: float = 10.0) -> list[dict]:
    """`count` samples from a real WebSocket connection, parsed, in arrival order."""
    samples: list[dict] = []
    deadline = time.monotonic() + timeout
    # It leaves without reading what is on its way: with a bounded queue its reader would
    # stop before the server's close answer, and the close would wait 10 s for it.
    with connect(url, open_timeout=timeout, max_size=None, max_queue=None) as ws:
        while len(samples) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"got {len(samples)} of {count} samples within {timeout}s")
            samples.append(json.loads(ws.recv(timeout=remaining)))
    return samples


class Recorder:
    """A WebSocket client reading every sample of the stream in a thread, kept by (device,
    seq), until closed: what a page or a scraper showed is checked against it."""

    def __init__(self, url: str, query: str = "batch=1&history=0") -> None:
        self.seen: dict[tuple[str, int], dict] = {}
        self._opened, self._done = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._read, args=(f"{url}/?{query}",), daemon=True)
        self._thread.start()
        assert self._opened.wait(10), "the WebSocket client could not connect"

    def _read(self, url: str) -> None:
        with connect(url, open_timeout=10, max_queue=None) as ws:
            self._opened.set()
            while not self._done.is_set():
                try:
                    message = ws.recv(timeout=0.2)
                except TimeoutError:
                    continue
                except ConnectionClosed:
                    return
                for sample in json.loads(message):
                    self.seen[(sample["device"], sample["seq"])] = sample

    def state(self, device: str, seq: int) -> str:
        """The dashboard's name of the state the stream gave this sample: `anomaly:<kind>`,
        `event:<kind>` or `normal`."""
        sample = self.seen[(device, seq)]
        if sample["anomaly"]:
            return f"anomaly:{sample['anomaly']}"
        return f"event:{sample['event']}" if sample["event"] else "normal"

    def close(self) -> None:
        self._done.set()
        self._thread.join(5)


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


def read_until(ws, done, timeout: float = 15) -> tuple[list[dict], list[dict]]:
    """(other messages, samples) a WebSocket client receives until `done(seqs by device,
    in arrival order)` holds; frames of one sample or a batch alike."""
    others: list[dict] = []
    samples: list[dict] = []
    by_device: dict[str, list[int]] = defaultdict(list)
    deadline = time.monotonic() + timeout
    while not done(by_device):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"not done within {timeout}s: {dict(by_device)} {others}"
        parsed = json.loads(ws.recv(timeout=remaining))
        items = parsed if isinstance(parsed, list) else [parsed]
        got = [s for s in items if "seq" in s]
        if not got:
            others.append(parsed)
        for sample in got:
            samples.append(sample)
            by_device[sample["device"]].append(sample["seq"])
    return others, samples


def wait_until(predicate, timeout: float, interval: float = 0.1, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(message or f"condition not met within {timeout}s")
        time.sleep(interval)


def unused_port() -> int:
    """A port that nothing uses on any address of localhost, below the kernel's ephemeral range.

    `honcho start -c broadcaster=2` starts both broadcasters at once, so they need a fixed
    port to share (with 0 each would get its own). Holding it with a SO_REUSEPORT socket of
    ours would make the kernel give that socket some of the connections; so the port is
    checked free and released, and the broadcasters bind it a moment later. Below the
    ephemeral range the kernel never hands it out (to outgoing connections or to a bind of
    port 0), so only a program choosing this very port in between could take it, and then
    the broadcasters would stop with their "address already in use" line: a clear failure.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    addresses = {(i[0], i[4][0]) for i in socket.getaddrinfo("localhost", None, proto=6)}
    for port in random.sample(range(max(1024, low - 10_000), low), 100):
        try:
            for family, host in addresses:
                with socket.socket(family) as probe:
                    probe.bind((host, port))
        except OSError:
            continue
        return port
    raise AssertionError("no free port found")
