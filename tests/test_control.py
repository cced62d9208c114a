"""Runtime control of a running producer with `python -m producer ctl`."""

from __future__ import annotations

import json
import time

import pandas as pd
from websockets.sync.client import connect

from conftest import Pipeline, receive, wait_until
from producer.control.client import ask


def start(pipeline: Pipeline, *args: str):
    """A producer without random anomalies, steered through the pipeline's control socket."""
    return pipeline.producer("--anomaly-rate", "0", *args)


def test_injected_anomaly_is_labelled_and_windowed(pipeline: Pipeline):
    """An injected spike labels only its device's samples with its id, and the logger records
    its window."""
    start(pipeline, "--rate", "10", "--devices", "2")
    pipeline.logger("--flush-interval", "0.1")
    pipeline.broadcaster()
    result = pipeline.ctl(
        "inject", "spike", "--device", "host-02", "--metric", "net", "--duration", "2s"
    )
    assert result.returncode == 0, result.stderr
    event = json.loads(result.stdout)
    assert event["kind"] == "spike" and event["metrics"] == ["net"]
    samples = receive(pipeline.ws_url, 40)
    labelled = [s for s in samples if s["anomaly_id"] == event["anomaly_id"]]
    assert labelled and all(s["device"] == "host-02" and s["anomaly"] == "spike" for s in labelled)
    assert all(s["anomaly"] is None for s in samples if s["device"] == "host-01")
    windows = pipeline.cwd / "data" / "stream_log.windows.csv"
    wait_until(
        lambda: windows.exists() and str(event["anomaly_id"]) in windows.read_text(), timeout=10
    )


def test_rate_change_re_anchors_without_a_burst(pipeline: Pipeline):
    """After `ctl rate 20` the samples come every 50 ms from the first one at the new rate,
    with no catch-up burst and no gap in seq."""
    start(pipeline, "--rate", "5")
    pipeline.broadcaster()
    with connect(pipeline.ws_url, open_timeout=5, max_size=None) as ws:
        before = [json.loads(ws.recv(timeout=5)) for _ in range(3)]
        result = pipeline.ctl("rate", "20")
        assert result.returncode == 0, result.stderr
        from_seq = json.loads(result.stdout)["from_seq"]
        while (sample := json.loads(ws.recv(timeout=5)))["seq"] < from_seq:
            pass  # published at the old rate
        began = time.monotonic()  # the first sample at the new rate has just arrived
        after = [sample] + [json.loads(ws.recv(timeout=5)) for _ in range(39)]
        took = time.monotonic() - began
    assert 1.5 < took < 2.6  # 40 samples at 20 Hz, not a catch-up burst
    stamps = pd.to_datetime([s["timestamp"] for s in after])
    assert (pd.Series(stamps).diff().dropna() == pd.Timedelta(milliseconds=50)).all()
    seqs = [s["seq"] for s in after]
    assert seqs == list(range(seqs[0], seqs[0] + 40)) and seqs[0] > before[-1]["seq"]


def test_pause_and_resume_are_recorded_as_not_produced(pipeline: Pipeline):
    """Nothing is logged while paused, and the ticks skipped are recorded as not produced."""
    start(pipeline, "--rate", "20", "--devices", "2")
    pipeline.logger("--flush-interval", "0.1")
    path = pipeline.cwd / "data" / "stream_log.csv"
    wait_until(lambda: path.exists() and len(path.read_text().splitlines()) > 20, timeout=10)
    assert json.loads(pipeline.ctl("pause").stdout) == {"paused": True}
    status = json.loads(pipeline.ctl("status").stdout)
    assert status["paused"] is True
    last = status["last_seq"]  # the last tick published, for every device

    def logged_up_to_last() -> bool:
        seqs = pd.read_csv(path).groupby("device")["seq"].max()
        return len(seqs) == 2 and (seqs == last).all()

    wait_until(logged_up_to_last, timeout=10, message=f"the logger never wrote seq {last}")
    rows = len(path.read_text().splitlines())
    time.sleep(1.0)  # the scenario: a second of pause, in which nothing may be logged
    assert len(path.read_text().splitlines()) == rows  # nothing while paused
    assert json.loads(pipeline.ctl("status").stdout)["paused"] is True
    assert json.loads(pipeline.ctl("resume").stdout) == {"paused": False}
    gaps = pipeline.cwd / "data" / "stream_log.gaps.csv"
    wait_until(lambda: gaps.exists() and len(gaps.read_text().splitlines()) >= 3, timeout=10)
    assert set(pd.read_csv(gaps)["reason"]) == {"not_produced"}


def test_bad_commands_get_clear_errors(pipeline: Pipeline):
    """Unknown devices, metrics, kinds and commands and a bad rate each fail with one line."""
    start(pipeline, "--rate", "5")
    for args, words in [
        (["inject", "spike", "--device", "host-99"], "unknown device 'host-99'"),
        (["inject", "spike", "--metric", "mem"], "spike alters one of cpu, disk_io, net"),
        (["inject", "volcano"], "'volcano' is not one of 'spike'"),
        (["rate", "0"], "Invalid value for 'RATE'"),
        (["explode"], "No such command 'explode'"),
        (["inject", "spike", "--device", "a\tb"], "holds a control or format character"),
        (["inject", "spike", "--device", "é" * 33], "is 66 bytes of UTF-8, at most 64"),
    ]:
        result = pipeline.ctl(*args)
        assert result.returncode != 0
        assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr, (
            result.stderr
        )


def test_inject_checks_the_device_id_on_the_producer_too(pipeline: Pipeline):
    """A control request that bypasses the ctl command, naming a device id that is not a
    valid one or not text, gets a one-line error from the producer itself."""
    start(pipeline)
    for device, words in [(" host-01", "starts or ends with a space"), (7, "got 7")]:
        reply = ask(pipeline.control, {"cmd": "inject", "kind": "spike", "device": device}, 5)
        assert reply["ok"] is False and words in reply["error"], reply
        assert "\n" not in reply["error"]
