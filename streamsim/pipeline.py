"""`Pipeline`: the live pipeline started from Python (a notebook, a script, a test), each
process a subprocess, every endpoint private to it, stopped when asked or at exit.

ZeroMQ runs over ipc sockets in a folder of the pipeline's own and the WebSocket on a port
the kernel chooses, so it never meets a `honcho start` (or another Pipeline) on the same
machine; that holds for detectors' alerts too: the broadcaster sends them to the
pipeline's own scorer, never to one on the default port. Readiness comes from the
processes' ready files. The processes are configured by the arguments given here only:
STREAM_* variables of the caller's environment are not passed on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import weakref
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from streamsim import options
from streamsim._isolated import project, repository
from streamsim.scoring import LiveReport, scorer_options

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0  # honcho's grace before SIGKILL: every process stops well inside it
REPORT_TIMEOUT_S = 30.0


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
    """A producer and a broadcaster (a logger with `logger=True`, a scorer with
    `scorer=True`) running until `stop()` or the end of a `with` block; `url` is the
    WebSocket to `stream` from.

    The simulation options are the producer's (`devices`, `rate`, `seed`, `start`, `speed`:
    simulated seconds per wall second, `roles`, `scenario`, `anomaly_rate`,
    `anomaly_kinds`, `anomaly_durations`, `history`: seconds kept for resuming clients), in
    the forms `generate` takes; None leaves the producer's default. `labels` is the
    broadcaster's label policy: `sent`, `blind` (only to clients that ask) or `never`.
    With `scorer=True` a scorer scores the detectors that send alerts on `url`
    (`Stream.alert`), with `scoring` its settings (the keywords of `score`: `early_s`,
    `late_s`, `threshold`, ...); `report()` gives its report. `folder` holds the sockets,
    the state and ready files, each process's log (`producer.log`, ...), the logger's CSV
    (`stream_log.csv`) and the scorer's report (`scorer_report.json`); default: a new
    temporary folder, removed at stop.

    Guarantees: when the constructor returns, every process is serving (its ready file is
    written); a value a process refuses raises ValueError with its one-line message (a
    start-up failure OSError); alerts sent on `url` reach this pipeline's scorer only; the
    processes are stopped by `stop()`, at the end of the `with` block, when the object is
    collected, or when the interpreter exits.
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
        labels: str | None = None,
        logger: bool = False,
        scorer: bool = False,
        scoring: Mapping[str, Any] | None = None,
        folder: str | Path | None = None,
        timeout: float = READY_TIMEOUT_S,
    ) -> None:
        if scoring and not scorer:
            raise ValueError("scoring settings need a scorer: Pipeline(scorer=True, scoring=...)")
        settings = scorer_options(scoring or {})  # refused before anything starts
        self._temporary = (
            tempfile.TemporaryDirectory(prefix="streamsim-") if folder is None else None
        )
        self.folder = Path(self._temporary.name if self._temporary else folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.zmq_pub = f"ipc://{self.folder}/samples.sock"
        self.zmq_catchup = f"ipc://{self.folder}/catchup.sock"
        self.zmq_control = f"ipc://{self.folder}/control.sock"
        self.zmq_alerts = f"ipc://{self.folder}/alerts.sock"  # never the default port's
        self.csv: Path | None = self.folder / "stream_log.csv" if logger else None
        self.report_path: Path | None = self.folder / "scorer_report.json" if scorer else None
        self.processes: list[Process] = []
        self._final: dict[str, Any] = {}  # the scorer's report written at its stop
        # Called by stop(), when the object is collected, or at the interpreter's exit.
        self._stopper = weakref.finalize(
            self, _stop_all, self.processes, self._temporary, self.report_path, self._final
        )
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
            if scorer:
                scoring_args = [
                    *bus,
                    *("--zmq-alerts", self.zmq_alerts, "--report", str(self.report_path)),
                    *("--picture", "", "--table", "off", "--metrics-port", "any"),
                    *settings,
                ]
                self.processes.append(Process("scorer", scoring_args, self.folder, timeout))
            broadcaster = [
                *bus,
                *("--ws-host", "127.0.0.1", "--ws-port", "0", "--no-reuse-port"),
                *("--zmq-alerts", self.zmq_alerts, "--metrics-port", "any"),
            ]
            if labels is not None:
                broadcaster += ["--labels", labels]
            if scenario is not None:
                broadcaster += ["--scenario", str(Path(scenario).resolve())]
            self.processes.append(Process("broadcaster", broadcaster, self.folder, timeout))
        except BaseException:
            self.stop()
            raise
        self.url: str = self.processes[-1].info["url"].rstrip("/")

    def report(self, timeout: float = REPORT_TIMEOUT_S) -> LiveReport:
        """The scorer's report on everything so far (`scorer=True`): once every alert the
        broadcaster took has reached the scorer (or `timeout` s passed), the scorer writes
        it on request (SIGUSR1) and it is read back. After `stop()`, the report the scorer
        wrote as it stopped. RuntimeError if there is no scorer, or it wrote nothing."""
        if not self._stopper.alive:
            if "report" not in self._final:
                raise RuntimeError("the pipeline is stopped and no scorer wrote a report")
            return LiveReport.of(self._final["report"])
        scorer = self._process("scorer")
        if scorer is None or self.report_path is None:
            raise RuntimeError("this pipeline has no scorer: start it with Pipeline(scorer=True)")
        deadline = time.monotonic() + timeout
        self._wait_for_alerts(scorer, deadline)
        before = _identity(self.report_path)
        scorer.popen.send_signal(signal.SIGUSR1)
        while _identity(self.report_path) == before:
            if scorer.popen.poll() is not None:
                raise RuntimeError(f"the scorer exited (status {scorer.popen.returncode})")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the scorer wrote no report within {timeout:g} s")
            time.sleep(0.05)
        return LiveReport.of(json.loads(self.report_path.read_text()))

    def _wait_for_alerts(self, scorer: Process, deadline: float) -> None:
        """Until the alerts the broadcaster passed on are received (or known lost) by the
        scorer: it takes them from a queue, a moment after the detector was acknowledged."""
        broadcaster = self._process("broadcaster")
        assert broadcaster is not None
        while time.monotonic() < deadline:
            sent, got = _figures(broadcaster), _figures(scorer)
            passed_on = sent["stream_alerts_accepted_total"]
            passed_on -= sent["stream_alerts_undelivered_total"]
            if got["stream_alerts_received_total"] + got["stream_alerts_lost_total"] >= passed_on:
                return
            time.sleep(0.05)

    def _process(self, name: str) -> Process | None:
        return next((p for p in self.processes if p.name == name), None)

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


def _identity(path: Path) -> tuple[int, int] | None:
    """What tells one version of a file from the next (it is replaced, never rewritten)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _figures(process: Process) -> dict[str, float]:
    """A process's unlabelled figures on its /metrics (`--metrics-port any`), by name."""
    url = f"http://127.0.0.1:{process.info['metrics_port']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


def _stop_all(
    processes: list[Process],
    temporary: tempfile.TemporaryDirectory | None,
    report: Path | None,
    final: dict[str, Any],
) -> None:
    """The broadcaster, the scorer and the logger first, the producer last (they refill from
    it); the scorer's last report is kept before a temporary folder goes."""
    for process in reversed(processes):
        process.stop()
    if report is not None and report.exists():
        final["report"] = json.loads(report.read_text())
    if temporary is not None:
        temporary.cleanup()
