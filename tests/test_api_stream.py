"""streamsim.stream and astream against real producers and broadcasters: resuming across a
restart without a gap, gaps named and raised when asked, count and timeout, in a running
event loop as in Jupyter, and the refusals."""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
import time
import urllib.request
from collections import defaultdict

import pytest

import streamsim
from conftest import Pipeline, Proc, unused_port, wait_until


def by_device(samples: list[dict]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = defaultdict(list)
    for sample in samples:
        found[sample["device"]].append(sample["seq"])
    return dict(found)


def contiguous(seqs: list[int]) -> bool:
    return all(b == a + 1 for a, b in itertools.pairwise(seqs))


def last_seq(producer: Proc) -> int:
    """The producer's last published seq, from its /metrics (`--metrics-port any`)."""
    url = f"http://127.0.0.1:{producer.info['metrics_port']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return int(float(re.search(r"^stream_last_seq (\S+)$", text, re.M)[1]))


def restartable(pipeline: Pipeline, *args: str) -> tuple[str, str]:
    """A broadcaster on a port of its own that a second one can take after it: (url, port)."""
    port = str(unused_port())
    pipeline.broadcaster("--ws-host", "127.0.0.1", "--ws-port", port, *args)
    return f"ws://127.0.0.1:{port}", port


def test_stream_resumes_across_a_broadcaster_restart_without_a_gap(pipeline: Pipeline):
    """The broadcaster is killed and another takes its port while a stream is read: the
    stream reconnects by itself and delivers every seq of every device once, in order."""
    producer = pipeline.producer("--rate", "20", "--devices", "2", "--metrics-port", "any")
    url, port = restartable(pipeline)
    samples: list[dict] = []
    plain = streamsim.stream(url, timeout=30, resume=False)
    next(plain)
    with streamsim.stream(url, timeout=30) as live:
        for sample in live:
            samples.append(sample)
            if len(samples) == 20:
                pipeline.procs[-1].stop(signal.SIGKILL)
                down_at = last_seq(producer)
                wait_until(lambda at=down_at: last_seq(producer) > at + 20, timeout=10)
                pipeline.broadcaster("--ws-host", "127.0.0.1", "--ws-port", port)
            if len(samples) > 20 and min(s[-1] for s in by_device(samples).values()) > down_at + 40:
                break
        assert live.connections == 2
        assert live.gaps == []
    seqs = by_device(samples)
    assert set(seqs) == {"host-01", "host-02"}
    for device, found in seqs.items():
        assert contiguous(found), (device, found)
    for _ in plain:  # without resuming: it goes on live and names what it skipped
        if len(plain.gaps) == 2:
            break
    plain.close()
    assert {(g.device, g.reason) for g in plain.gaps} == {
        ("host-01", "unannounced"),
        ("host-02", "unannounced"),
    }
    assert all(g.to_seq - g.from_seq >= 19 for g in plain.gaps)
    assert all(s["timestamp"].tzinfo is not None for s in samples)


def test_a_told_gap_is_recorded_and_raised_only_when_asked(pipeline: Pipeline):
    """The broadcaster is down longer than the producer's 1 s history: on resuming, the
    server names the seqs it no longer holds. A stream records them in `.gaps` and goes on
    after them; one made with raise_on_gap raises GapError naming them."""
    producer = pipeline.producer(
        "--rate", "20", "--devices", "2", "--history", "1", "--metrics-port", "any"
    )
    url, port = restartable(pipeline)
    patient = streamsim.stream(url, timeout=30)
    strict = streamsim.stream(url, timeout=30, raise_on_gap=True)
    before = [next(patient) for _ in range(6)]
    for _ in range(6):
        next(strict)
    pipeline.procs[-1].stop(signal.SIGKILL)
    down_at = last_seq(producer)
    wait_until(lambda: last_seq(producer) > down_at + 60, timeout=10)  # 3 s: past the history
    pipeline.broadcaster("--ws-host", "127.0.0.1", "--ws-port", port)
    with pytest.raises(streamsim.GapError) as raised:
        for _ in strict:
            pass
    assert {g.reason for g in raised.value.gaps} == {"not_held"}
    assert "not_held" in str(raised.value)
    after: list[dict] = []
    for sample in patient:
        after.append(sample)
        if len(patient.gaps) and len(after) >= 40:
            break
    patient.close()
    gaps = {g.device: g for g in patient.gaps}
    assert set(gaps) == {"host-01", "host-02"}, patient.gaps
    last_before = {d: s[-1] for d, s in by_device(before).items()}
    for device, seqs in by_device(after).items():
        gap = gaps[device]
        assert gap.reason == "not_held" and gap.from_seq <= last_before.get(device, -1) + 1 + 20
        missing_before = [s for s in seqs if s <= gap.to_seq]
        resumed = [s for s in seqs if s > gap.to_seq]
        assert resumed[0] == gap.to_seq + 1 and contiguous(resumed), (device, seqs, gap)
        assert all(s <= last_before[device] + 20 for s in missing_before)


def test_count_and_timeout_end_the_stream(pipeline: Pipeline):
    """`count` ends it after exactly that many samples, `timeout` after that many seconds even
    when nothing comes (a device that does not exist), and `labels`, `fields` and
    `devices` shape what comes."""
    pipeline.producer("--rate", "50", "--devices", "3")
    pipeline.broadcaster()
    counted = streamsim.stream(pipeline.ws_url, count=25)
    assert len(list(counted)) == 25 and counted.received == 25
    began = time.monotonic()
    assert list(streamsim.stream(pipeline.ws_url, devices=["host-99"], timeout=1.0)) == []
    assert 1.0 <= time.monotonic() - began < 4
    began = time.monotonic()
    some = list(streamsim.stream(pipeline.ws_url, timeout=0.5))
    assert some and time.monotonic() - began < 3
    shaped = list(
        streamsim.stream(
            pipeline.ws_url, devices=["host-02"], fields=["cpu", "net"], labels=False, count=5
        )
    )
    assert {s["device"] for s in shaped} == {"host-02"}
    assert set(shaped[0]) == {"timestamp", "cpu", "net", "device", "seq"}


def test_since_starts_the_stream_where_asked(pipeline: Pipeline):
    """since=-1 gives each series from its first sample, in order, then live; a mapping starts
    each device after its own seq; a value that is not a seq is refused at once."""
    producer = pipeline.producer("--rate", "50", "--devices", "2", "--metrics-port", "any")
    pipeline.broadcaster()
    wait_until(lambda: last_seq(producer) > 60, timeout=10)
    whole = by_device(list(streamsim.stream(pipeline.ws_url, since=-1, count=200)))
    assert {d: s[0] for d, s in whole.items()} == {"host-01": 0, "host-02": 0}
    assert all(contiguous(s) for s in whole.values())
    after = list(streamsim.stream(pipeline.ws_url, devices=["host-02"], since={"host-02": 10},
                                  count=5))
    assert [s["seq"] for s in after] == [11, 12, 13, 14, 15]
    with pytest.raises(ValueError, match="since must be a seq"):
        streamsim.stream(pipeline.ws_url, since=-2)


def test_the_sync_stream_works_inside_a_running_event_loop(pipeline: Pipeline):
    """In a coroutine (as a Jupyter cell runs, on the kernel's loop) the plain iterator still
    delivers, its connection in a thread of its own; astream delivers on the loop itself."""
    pipeline.producer("--rate", "50", "--devices", "2")
    pipeline.broadcaster()

    async def cell() -> tuple[list[dict], list[dict]]:
        plain = list(streamsim.stream(pipeline.ws_url, count=10))
        native = [s async for s in streamsim.astream(pipeline.ws_url, count=10)]
        return plain, native

    plain, native = asyncio.run(cell())
    assert len(plain) == len(native) == 10
    frame = streamsim.to_frame(plain + native)
    assert str(frame["timestamp"].dtype) == "datetime64[ms, UTC]"
    assert str(frame["anomaly_id"].dtype) == "Int64"
    assert list(frame["device"].cat.categories) == sorted({s["device"] for s in plain + native})


def test_stream_refusals_are_one_line_errors(pipeline: Pipeline):
    """A bad URL or field is refused at once, a subscription the server refuses with its
    message, a server never reached after connect_timeout, a token it wants without it."""
    with pytest.raises(ValueError, match="is not a WebSocket URL"):
        streamsim.stream("http://localhost:1")
    with pytest.raises(ValueError, match="unknown field 'cpux'; allowed: cpu, mem"):
        streamsim.stream("ws://localhost:1", fields=["cpux"])
    began = time.monotonic()
    with pytest.raises(ConnectionError, match="cannot connect to ws://127.0.0.1:1 within 0.5 s"):
        list(streamsim.stream("ws://127.0.0.1:1", count=1, connect_timeout=0.5))
    assert time.monotonic() - began < 3
    pipeline.producer("--rate", "10")
    pipeline.broadcaster("--token", "sesame")
    with pytest.raises(ConnectionRefusedError, match="HTTP 401"):
        list(streamsim.stream(pipeline.ws_url, count=1))
    assert len(list(streamsim.stream(pipeline.ws_url, count=3, token="sesame"))) == 3
    with pytest.raises(ValueError, match="is 65 bytes of UTF-8, at most 64"):
        list(streamsim.stream(pipeline.ws_url, devices=["h" * 65], count=1, token="sesame"))
