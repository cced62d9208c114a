"""`Pipeline`: the live pipeline started from Python (a notebook, a script, a test), each
process a subprocess, every endpoint private to it, stopped when asked or at exit.

ZeroMQ runs over ipc sockets in a folder of the pipeline's own and the WebSocket on a port
the kernel chooses, so it never meets a `honcho start` (or another Pipeline) on the same
machine; readiness comes from the processes' ready files. The processes are configured by
the arguments given here only: STREAM_* variables of the caller's environment are not
passed on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from streamsim import options
from streamsim._isolated import project, repository

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0  # honcho's grace before SIGKILL: every process stops well inside it


class Process:
    """One `python -m <module>` of the pipeline, its stderr in `<folder>/<name>.log`."""

    def __init__(self, name: str, args: list[str], folder: Path, timeout: float) -> None:
        self.name = name
        self.log = folder / f"{name}.log"
        ready = folder / "ready" / f"{name}.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAM_", "HONCHO_"))}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(repository()), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        env["PYTHONUNBUFFERED"] = "1"
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", name.split("-")[0], "--ready-file", str(ready), *args],
                cwd=folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        try:
            self.info = project("common.ready").wait(
                ready, self.popen.pid, timeout, lambda: self.popen.poll() is None
            )
        except (ChildProcessError, TimeoutError) as exc:
            self.stop()
            raise self._failure(exc) from None

    def _failure(self, exc: Exception) -> Exception:
        """The process's own one-line error when it refused to start, else what happened."""
        lines = self.log.read_text(errors="replace").strip().splitlines()
        said = next((line for line in reversed(lines) if ": error: " in line), None)
        if said is not None:
            message = said.split(": error: ", 1)[1]
            return ValueError(message) if self.popen.returncode == 2 else OSError(message)
        tail = "; ".join(lines[-3:]) or "no output"
        return RuntimeError(f"{self.name}: {exc} ({tail})")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT_S; its exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


class Pipeline:
    """A producer and a broadcaster (and a logger with `logger=True`) running until `stop()`
    or the end of a `with` block; `url` is the WebSocket to `stream` from.

    The simulation options are the producer's (`devices`, `rate`, `seed`, `start`, `speed`:
    simulated seconds per wall second, `roles`, `scenario`, `anomaly_rate`,
    `anomaly_kinds`, `anomaly_durations`, `history`: seconds kept for resuming clients), in
    the forms `generate` takes; None leaves the producer's default. `folder` holds the
    sockets, the state and ready files, each process's log (`producer.log`, ...) and the
    logger's CSV (`stream_log.csv`); default: a new temporary folder, removed at stop.

    Guarantees: when the constructor returns, every process is serving (its ready file is
    written); a value a process refuses raises ValueError with its one-line message (a
    start-up failure OSError); the processes are stopped by `stop()`, at the end of the
    `with` block, when the object is collected, or when the interpreter exits.
    """

    def __init__(
        self,
        *,
        devices: int | None = None,
        rate: float | None = None,
        seed: int | None = None,
        start: str | datetime | None = None,
        speed: float | None = None,
        roles: str | Mapping[str, int] | None = None,
        scenario: str | Path | None = None,
        anomaly_rate: float | None = None,
        anomaly_kinds: str | Mapping[str, float] | None = None,
        anomaly_durations: str | Mapping[str, tuple[Any, Any]] | None = None,
        history: float | timedelta | None = None,
        logger: bool = False,
        folder: str | Path | None = None,
        timeout: float = READY_TIMEOUT_S,
    ) -> None:
        self._temporary = (
            tempfile.TemporaryDirectory(prefix="streamsim-") if folder is None else None
        )
        self.folder = Path(self._temporary.name if self._temporary else folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.zmq_pub = f"ipc://{self.folder}/samples.sock"
        self.zmq_catchup = f"ipc://{self.folder}/catchup.sock"
        self.zmq_control = f"ipc://{self.folder}/control.sock"
        self.csv: Path | None = self.folder / "stream_log.csv" if logger else None
        self.processes: list[Process] = []
        # Called by stop(), when the object is collected, or at the interpreter's exit.
        self._stopper = weakref.finalize(self, _stop_all, self.processes, self._temporary)
        bus = ["--zmq-pub", self.zmq_pub, "--zmq-catchup", self.zmq_catchup]
        simulation = {
            "--devices": devices,
            "--rate": rate,
            "--seed": seed,
            "--start": start,
            "--speed": speed,
            "--roles": roles,
            "--scenario": None if scenario is None else Path(scenario).resolve(),
            "--anomaly-rate": anomaly_rate,
            "--anomaly-kinds": anomaly_kinds,
            "--anomaly-duration": anomaly_durations,
            "--history": history,
        }
        producer = [
            *bus,
            *("--zmq-control", self.zmq_control, "--state", str(self.folder / "state.json")),
            *(
                a
                for flag, v in simulation.items()
                if v is not None
                for a in (flag, options.text(v))
            ),
        ]
        try:
            self.processes.append(Process("producer", producer, self.folder, timeout))
            if logger:
                self.processes.append(
                    Process("logger", [*bus, "--csv", str(self.csv)], self.folder, timeout)
                )
            broadcaster = [*bus, "--ws-host", "127.0.0.1", "--ws-port", "0", "--no-reuse-port"]
            if scenario is not None:
                broadcaster += ["--scenario", str(Path(scenario).resolve())]
            self.processes.append(Process("broadcaster", broadcaster, self.folder, timeout))
        except BaseException:
            self.stop()
            raise
        self.url: str = self.processes[-1].info["url"].rstrip("/")

    def ctl(self, *args: str) -> Any:
        """`python -m producer ctl ARGS` against this pipeline's producer (`"status"`,
        `"inject", "spike", "--device", "host-01"`, `"pause"`, ...): its JSON answer;
        ValueError with its one-line message if it refuses."""
        done = subprocess.run(
            [sys.executable, "-m", "producer", "ctl", "--zmq-control", self.zmq_control, *args],
            cwd=self.folder,
            env={**os.environ, "PYTHONPATH": str(repository())},
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode != 0:
            line = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
            raise ValueError(line.split(": error: ", 1)[-1])
        return json.loads(done.stdout)

    def stop(self) -> None:
        """Stop every process (SIGTERM; SIGKILL after 5 s) and remove a temporary folder."""
        self._stopper()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_all(processes: list[Process], temporary: tempfile.TemporaryDirectory | None) -> None:
    """The broadcaster and the logger first, the producer last (they refill from it)."""
    for process in reversed(processes):
        process.stop()
    if temporary is not None:
        temporary.cleanup()
