"""The bridge's loss is visible as the logger's is (tests/test_loss_visible.py): a bridge that
meets a series mid-way, and messages it refuses, leave gap records naming exactly the
samples the broker lacks. Real producer, bridge and nats-server (JetStream)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_loss_visible import Foreign

from bridging import bridge, figure, gap_rows, settled
from brokers import Nats, by_device, read_stream
from conftest import Pipeline, wait_until


@pytest.fixture
def nats(tmp_path: Path):
    server = Nats(tmp_path)
    yield server
    server.close()


def records(path: Path) -> dict[str, list[tuple[int, int, str]]]:
    """Per device, the (first, last, reason) of each gap record of a gaps file."""
    out: dict[str, list[tuple[int, int, str]]] = {}
    for row in gap_rows(path):
        span = (int(row["first_missing_seq"]), int(row["last_missing_seq"]), row["reason"])
        out.setdefault(row["device"], []).append(span)
    return out


@pytest.mark.slow
def test_a_bridge_started_mid_series_records_what_came_before(pipeline: Pipeline, nats: Nats):
    """A bridge started after the producer has run longer than its history sends what the
    history holds, and records the older samples of the series, from its first seq, as one
    'not_held' gap per device; the stream and the gaps file together hold every seq."""
    pipeline.producer("--rate", "20", "--devices", "2", "--history", "1")
    time.sleep(3)  # the scenario: the series runs 3 s (60 samples a device) before the bridge
    proc = bridge(pipeline, nats.url)
    gaps = pipeline.cwd / "bridge.gaps.csv"
    wait_until(lambda: figure(proc, "samples_acknowledged") > 40 and len(gap_rows(gaps)) >= 2, 10)
    settled(proc)
    assert proc.stop()[0] == 0
    stored = by_device([s for _, s in read_stream(nats.url)])
    recorded = records(gaps)
    assert set(stored) == set(recorded) == {"host-01", "host-02"}
    for device, seqs in stored.items():
        first_sent = min(seqs)
        assert recorded[device] == [(0, first_sent - 1, "not_held")]  # a series begins at 0
        assert first_sent > 10  # 3 s in: the oldest seconds are no longer held
        assert sorted(seqs) == list(range(first_sent, max(seqs) + 1))


@pytest.mark.slow
def test_a_bridge_started_with_the_series_sends_it_from_its_first_seq(
    pipeline: Pipeline, nats: Nats
):
    """A bridge started just after a fresh producer sends each series from seq 0 (whatever
    it missed while connecting comes from the history), and records no gap at all."""
    pipeline.producer("--rate", "50", "--devices", "3")
    proc = bridge(pipeline, nats.url)
    wait_until(lambda: figure(proc, "samples_acknowledged") > 150, timeout=10)
    settled(proc)
    assert proc.stop()[0] == 0
    stored = by_device([s for _, s in read_stream(nats.url)])
    assert len(stored) == 3
    for seqs in stored.values():
        assert sorted(seqs) == list(range(0, max(seqs) + 1))
    assert not gap_rows(pipeline.cwd / "bridge.gaps.csv")


@pytest.mark.slow
def test_refused_messages_become_gap_records(pipeline: Pipeline, nats: Nats, tmp_path: Path):
    """Messages a bridge must refuse (a value out of its domain) are recorded as 'refused'
    gaps naming their device and seqs, for a device already sent and for one never seen
    (whose earlier seqs no producer could confirm: 'unavailable'); an unreadable message (an
    old wire version) is counted; the valid samples reach the broker."""
    gaps = pipeline.cwd / "bridge.gaps.csv"
    with Foreign(tmp_path) as foreign:
        proc = bridge(
            pipeline, nats.url, "--zmq-pub", foreign.endpoint, "--zmq-catchup", foreign.nobody
        )
        wait_until(lambda: foreign.first() or figure(proc, "samples_acknowledged") >= 3, 15)
        foreign.then()
        wait_until(
            lambda: figure(proc, "samples_acknowledged") >= 5 and len(gap_rows(gaps)) >= 2, 15
        )
        wait_until(lambda: figure(proc, "malformed_messages") == 3, 10)
        assert proc.stop()[0] == 0
    recorded = records(gaps)
    assert recorded["dev,1"] == [(3, 4, "refused")]
    assert sorted(recorded["ghost \u00e9"]) == [(0, 6, "unavailable"), (7, 8, "refused")]
    stored = by_device([s for _, s in read_stream(nats.url)])
    assert sorted(stored["dev,1"]) == [0, 1, 2, 5, 6]
    assert "ghost \u00e9" not in stored
