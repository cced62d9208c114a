"""Runtime control of a running producer with `python -m producer ctl`."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd

from conftest import REPO, Pipeline, receive, wait_until


def ctl(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "producer", "ctl", "--zmq-control", control(pipeline), *args],
        cwd=pipeline.cwd,
        env={"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=20,
    )


def control(pipeline: Pipeline) -> str:
    return f"ipc://{pipeline.cwd}/control.sock"


def start(pipeline: Pipeline, *args: str):
    return pipeline.producer("--zmq-control", control(pipeline), "--anomaly-rate", "0", *args)


def test_injected_anomaly_is_labelled_and_windowed(pipeline: Pipeline):
    start(pipeline, "--rate", "10", "--devices", "2")
    pipeline.logger("--flush-interval", "0.1")
    pipeline.broadcaster()
    result = ctl(
        pipeline, "inject", "spike", "--device", "host-02", "--metric", "net", "--duration", "2s"
    )
    assert result.returncode == 0, result.stderr
    event = json.loads(result.stdout)
    assert event["kind"] == "spike" and event["metrics"] == ["net"]
    samples = receive(pipeline.ws_url, 40)
    labelled = [s for s in samples if s["anomaly_id"] == event["anomaly_id"]]
    assert labelled and all(s["device"] == "host-02" and s["anomaly"] == "spike" for s in labelled)
    assert all(s["anomaly"] is None for s in samples if s["device"] == "host-01")
    windows = pipeline.cwd / "data" / "stream_log.windows.csv"
    wait_until(lambda: str(event["anomaly_id"]) in windows.read_text(), timeout=10)


def test_rate_change_re_anchors_without_a_burst(pipeline: Pipeline):
    start(pipeline, "--rate", "5")
    pipeline.broadcaster()
    before = receive(pipeline.ws_url, 3)
    assert ctl(pipeline, "rate", "20").returncode == 0
    time.sleep(0.3)
    began = time.monotonic()
    after = receive(pipeline.ws_url, 40)
    took = time.monotonic() - began
    assert 1.5 < took < 2.6  # 40 samples at 20 Hz, not a catch-up burst
    stamps = pd.to_datetime([s["timestamp"] for s in after])
    assert (pd.Series(stamps).diff().dropna() == pd.Timedelta(milliseconds=50)).all()
    seqs = [s["seq"] for s in after]
    assert seqs == list(range(seqs[0], seqs[0] + 40)) and seqs[0] > before[-1]["seq"]


def test_pause_and_resume_are_recorded_as_not_produced(pipeline: Pipeline):
    start(pipeline, "--rate", "20", "--devices", "2")
    pipeline.logger("--flush-interval", "0.1")
    path = pipeline.cwd / "data" / "stream_log.csv"
    wait_until(lambda: path.exists() and len(path.read_text().splitlines()) > 20, timeout=10)
    assert json.loads(ctl(pipeline, "pause").stdout) == {"paused": True}
    time.sleep(0.5)
    rows = len(path.read_text().splitlines())
    time.sleep(1.0)
    assert len(path.read_text().splitlines()) == rows  # nothing while paused
    assert json.loads(ctl(pipeline, "status").stdout)["paused"] is True
    ctl(pipeline, "resume")
    gaps = pipeline.cwd / "data" / "stream_log.gaps.csv"
    wait_until(lambda: len(gaps.read_text().splitlines()) >= 3, timeout=10)
    assert set(pd.read_csv(gaps)["reason"]) == {"not_produced"}


def test_bad_commands_get_clear_errors(pipeline: Pipeline):
    start(pipeline, "--rate", "5")
    for args, words in [
        (["inject", "spike", "--device", "host-99"], "unknown device 'host-99'"),
        (["inject", "spike", "--metric", "mem"], "spike alters one of cpu, disk_io, net"),
        (["inject", "volcano"], "'volcano' is not one of 'spike'"),
        (["rate", "0"], "Invalid value for 'RATE'"),
        (["explode"], "No such command 'explode'"),
    ]:
        result = ctl(pipeline, *args)
        assert result.returncode != 0
        assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr, (
            result.stderr
        )
