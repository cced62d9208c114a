"""The producer's schedule: absolute deadlines, exact spacing, no drift, keeping up."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from common import schema
from conftest import Pipeline


def collect(endpoint: str, seconds: float) -> list[tuple[float, schema.Batch]]:
    """(arrival time, batch) for every message in the `seconds` after the first one.

    The `seconds` are the measurement itself, not a wait for something to happen."""
    context = zmq.Context()
    sock = context.socket(zmq.SUB)
    sock.linger = 0
    sock.setsockopt(zmq.SUBSCRIBE, schema.TOPIC)
    sock.connect(endpoint)
    got = []
    try:
        assert sock.poll(10_000), "nothing published within 10 s"
        end = time.time() + seconds
        while (remaining := end - time.time()) > 0:
            if sock.poll(int(remaining * 1000) + 1):
                frames = sock.recv_multipart()
                got.append((time.time(), schema.decode(frames)))
    finally:
        sock.close()
        context.term()
    return got


def test_samples_leave_on_their_deadlines_exactly_one_period_apart(pipeline: Pipeline):
    """20 Hz: timestamps 50 ms apart, one sample per tick, each sent right at its time."""
    pipeline.producer("--rate", "20")
    got = collect(pipeline.zmq, 5.0)
    rows = np.concatenate([b.rows for _, b in got])
    ts = rows["ts_ms"]
    assert np.all(np.diff(ts) == 50)
    assert np.all(np.diff(rows["seq"].astype(np.int64)) == 1)
    assert abs(len(rows) - 100) <= 1
    lateness_ms = np.array([arrived * 1000 - b.rows["ts_ms"][-1] for arrived, b in got])
    assert lateness_ms.min() > -1  # never early
    assert np.percentile(lateness_ms, 99) < 20, np.percentile(lateness_ms, [50, 99, 100])


@pytest.mark.slow
def test_one_hertz_count_over_ten_seconds(pipeline: Pipeline):
    """At 1 Hz, 10 s of wall time hold 10 samples (plus or minus one)."""
    pipeline.producer("--rate", "1")
    got = collect(pipeline.zmq, 10.0)
    assert 9 <= sum(len(b) for _, b in got) <= 11


def test_keeps_up_at_100_hz_times_10_devices(pipeline: Pipeline):
    """Every tick of every device arrives, in order, within a few ms of its timestamp."""
    pipeline.producer("--rate", "100", "--devices", "10")
    got = collect(pipeline.zmq, 4.0)
    rows = np.concatenate([b.rows for _, b in got])
    for device in np.unique(rows["device"]):
        seq = rows["seq"][rows["device"] == device].astype(np.int64)
        assert np.all(np.diff(seq) == 1)
    assert abs(len(rows) - 4000) <= 20
    lateness_ms = np.array([arrived * 1000 - b.rows["ts_ms"][-1] for arrived, b in got])
    assert np.percentile(lateness_ms, 99) < 30, np.percentile(lateness_ms, [50, 99, 100])
