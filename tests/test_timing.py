"""The producer's schedule: absolute deadlines, exact spacing, no drift, keeping up."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from common import schema
from conftest import Pipeline, Proc, cpu_wait


def collect(
    endpoint: str, seconds: float, producer: Proc
) -> list[tuple[float, float, schema.Batch]]:
    """(lateness, the schedule's lateness, batch) for every message in the `seconds` after the
    first one, in ms: how long after its last sample's timestamp it arrived here, and that
    less the time the machine kept the threads it passed through waiting for a CPU in
    between (`cpu_wait`), which is the machine's and not the schedule's.

    The `seconds` are the measurement itself, not a wait for something to happen."""
    before = io_threads(os.getpid())
    context = zmq.Context()
    sock = context.socket(zmq.SUB)
    sock.linger = 0
    sock.setsockopt(zmq.SUBSCRIBE, schema.TOPIC)
    sock.connect(endpoint)
    # a message's way: the producer's loop, its ZeroMQ I/O thread, ours, this thread
    path = [(producer.popen.pid, t) for t in [producer.popen.pid, *io_threads(producer.popen.pid)]]
    path += [(os.getpid(), t) for t in io_threads(os.getpid()) - before]
    path.append((os.getpid(), threading.get_native_id()))
    arrived: list[tuple[float, schema.Batch]] = []
    looks: list[tuple[float, float]] = []  # (time, what the path has waited so far)
    try:
        assert sock.poll(10_000), "nothing published within 10 s"
        end = time.time() + seconds
        while (remaining := end - time.time()) > 0:
            ready = sock.poll(min(int(remaining * 1000) + 1, 2))
            now = time.time()
            if ready:
                arrived.append((now, schema.decode(sock.recv_multipart())))
            looks.append((now, sum(cpu_wait(*thread) for thread in path)))
    finally:
        sock.close()
        context.term()
    times, waited = np.array([t for t, _ in looks]), np.array([w for _, w in looks])
    out = []
    for arrival, batch in arrived:
        due = batch.rows["ts_ms"][-1] / 1000
        # the waits between the deadline and the arrival, the figure at the deadline
        # interpolated between the looks around it
        machine_s = np.interp(arrival, times, waited) - np.interp(due, times, waited)
        late = (arrival - due) * 1000
        out.append((late, late - max(0.0, machine_s) * 1000, batch))
    return out


def io_threads(pid: int) -> set[int]:
    """The ZeroMQ I/O threads of a process."""
    return {
        int(task.name)
        for task in Path(f"/proc/{pid}/task").iterdir()
        if (task / "comm").read_text().startswith("ZMQbg/IO")
    }


def test_samples_leave_on_their_deadlines_exactly_one_period_apart(pipeline: Pipeline):
    """20 Hz: timestamps 50 ms apart, one sample per tick, each sent right at its time."""
    producer = pipeline.producer("--rate", "20")
    got = collect(pipeline.zmq, 5.0, producer)
    rows = np.concatenate([b.rows for _, _, b in got])
    ts = rows["ts_ms"]
    assert np.all(np.diff(ts) == 50)
    assert np.all(np.diff(rows["seq"].astype(np.int64)) == 1)
    # every tick through the first 4 s of the window at least (the last second leaves room
    # for what a busy machine delivers late)
    assert np.count_nonzero(ts < ts[0] + 4000) == 80 and len(rows) <= 101
    assert min(late for late, _, _ in got) > -1  # never early
    lateness_ms = np.array([own for _, own, _ in got])
    assert np.percentile(lateness_ms, 99) < 20, np.percentile(lateness_ms, [50, 99, 100])


def test_one_hertz_one_sample_a_second_on_time(pipeline: Pipeline):
    """At 1 Hz, one sample a second, timestamps 1 s apart, each sent right at its time: the
    long sleeps of a slow rate keep to the deadlines too."""
    producer = pipeline.producer("--rate", "1")
    got = collect(pipeline.zmq, 4.0, producer)
    rows = np.concatenate([b.rows for _, _, b in got])
    assert 4 <= len(rows) <= 5  # the first one, then one per second of the 4
    assert np.all(np.diff(rows["ts_ms"]) == 1000)
    assert np.all(np.diff(rows["seq"].astype(np.int64)) == 1)
    assert min(late for late, _, _ in got) > -1  # never early
    assert max(own for _, own, _ in got) < 20, [round(own, 1) for _, own, _ in got]


def test_keeps_up_at_100_hz_times_10_devices(pipeline: Pipeline):
    """Every tick of every device arrives, in order, within a few ms of its timestamp."""
    producer = pipeline.producer("--rate", "100", "--devices", "10")
    got = collect(pipeline.zmq, 4.0, producer)
    rows = np.concatenate([b.rows for _, _, b in got])
    assert len(np.unique(rows["device"])) == 10
    for device in np.unique(rows["device"]):
        mine = rows[rows["device"] == device]
        assert np.all(np.diff(mine["seq"].astype(np.int64)) == 1)
        # every tick, 10 ms apart, through the first 3 s of the window at least (the last
        # second leaves room for what a busy machine delivers late)
        assert np.all(np.diff(mine["ts_ms"]) == 10)
        assert np.count_nonzero(mine["ts_ms"] < mine["ts_ms"][0] + 3000) == 300
    lateness_ms = np.array([own for _, own, _ in got])
    assert np.percentile(lateness_ms, 99) < 30, np.percentile(lateness_ms, [50, 99, 100])
