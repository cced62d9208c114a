"""A bridge stopped (SIGTERM or SIGKILL) while the producer goes on, then started again:
it continues where it stopped, refilling from the producer's history, and names in its
gaps file exactly what the history no longer held. Real producer, bridge and brokers."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from bridging import bridge, figure, gap_rows, given_up, settled
from brokers import Mosquitto, MqttReader, Nats, by_device, read_stream
from conftest import Pipeline, Proc, wait_until


def stopped_and_restarted(
    pipeline: Pipeline, url: str, sig: int, *args: str, down: float = 4.0
) -> Proc:
    """A bridge that bridged for a while, was stopped with `sig`, stayed down `down`
    seconds while the producer went on, and was started again with the same settings;
    returned once it has caught up and the producer has stopped."""
    first = bridge(pipeline, url, *args, gaps="first.gaps.csv")
    wait_until(lambda: figure(first, "samples_acknowledged") >= 600, 20)  # 2 s or more
    first.stop(sig)
    time.sleep(down)  # the scenario: the producer goes on without the bridge
    again = bridge(pipeline, url, *args, gaps="again.gaps.csv")
    wait_until(lambda: figure(again, "samples_acknowledged") >= 200, 20)
    pipeline.procs[0].stop()
    settled(again)
    return again


def assert_accounted_for(got: dict[str, list[int]], missing: dict[str, list[tuple[int, int]]]):
    """Per device, what arrived and what the gap records name make one contiguous run of
    seqs, and nothing is both."""
    for device, seqs in got.items():
        named = {s for a, b in missing.get(device, []) for s in range(a, b + 1)}
        assert not named & set(seqs), f"{device}: named missing, yet delivered"
        every = sorted(set(seqs) | named)
        assert every == list(range(every[0], every[-1] + 1)), f"{device}: unaccounted seqs"


@pytest.fixture
def mosquitto(tmp_path: Path):
    broker = Mosquitto(tmp_path)
    yield broker
    broker.close()


@pytest.fixture
def reader(mosquitto: Mosquitto):
    """A QoS 1 subscriber to every sample, there all along."""
    subscriber = MqttReader(mosquitto.port)
    yield subscriber
    subscriber.close()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_mqtt_bridge_continues_where_it_stopped(
    pipeline: Pipeline, mosquitto: Mosquitto, reader: MqttReader, sig: int
):
    """Restarted with its state file, an MQTT bridge refills what the producer published
    while it was down: the subscriber gets every seq, each once after a SIGTERM (after a
    SIGKILL, at most the last second's samples twice)."""
    pipeline.producer("--rate", "50", "--devices", "5")
    state = pipeline.cwd / "bridge.state.json"
    again = stopped_and_restarted(pipeline, mosquitto.url, sig, "--state-file", str(state))
    assert again.wait_for(r"resuming 5 device\(s\) where the last run stopped")
    assert figure(again, "samples_refilled") >= 5 * 50 * 3
    acknowledged = figure(again, "samples_acknowledged")
    assert again.stop()[0] == 0
    wait_until(lambda: len(reader.samples) >= acknowledged, 10)
    got = by_device(reader.samples)
    assert len(got) == 5
    assert_accounted_for(got, {})
    repeats = sum(len(s) - len(set(s)) for s in got.values())
    if sig == signal.SIGTERM:
        assert repeats == 0
    else:
        assert repeats <= 5 * 50 * 2, repeats  # the state file is saved every second
    assert not gap_rows(pipeline.cwd / "first.gaps.csv") + gap_rows(pipeline.cwd / "again.gaps.csv")


@pytest.mark.slow
def test_mqtt_bridge_down_longer_than_the_history(
    pipeline: Pipeline, mosquitto: Mosquitto, reader: MqttReader
):
    """Down longer than the producer's history (1 s), a restarted MQTT bridge refills what
    is left and its gap record names exactly the seqs the subscriber never got."""
    pipeline.producer("--rate", "50", "--devices", "5", "--history", "1")
    state = pipeline.cwd / "bridge.state.json"
    again = stopped_and_restarted(
        pipeline, mosquitto.url, signal.SIGTERM, "--state-file", str(state)
    )
    acknowledged = figure(again, "samples_acknowledged")
    assert again.stop()[0] == 0
    wait_until(lambda: len(reader.samples) >= acknowledged, 10)
    got = by_device(reader.samples)
    lost = given_up(pipeline.cwd / "again.gaps.csv", reason="not_held")
    assert set(lost) == set(got) == {f"host-{d}" for d in ("01", "02", "03", "04", "05")}
    assert all(b - a + 1 >= 50 for ranges in lost.values() for a, b in ranges)  # > 1 s of it
    assert_accounted_for(got, lost)
    assert all(len(s) == len(set(s)) for s in got.values())


@pytest.mark.slow
@pytest.mark.parametrize("history", ["600", "1"])
def test_jetstream_bridge_continues_where_it_stopped(
    pipeline: Pipeline, tmp_path: Path, history: str
):
    """A JetStream bridge killed with SIGKILL and started again asks the stream where each
    device stopped and refills from there: the stream holds every seq once; with a history
    shorter than the time it was down, the gap record names exactly what the stream lacks."""
    nats = Nats(tmp_path)
    try:
        pipeline.producer("--rate", "50", "--devices", "5", "--history", history)
        again = stopped_and_restarted(pipeline, nats.url, signal.SIGKILL)
        assert again.wait_for(r"resuming 5 device\(s\) where the last run stopped")
        assert again.stop()[0] == 0
        stored = by_device([s for _, s in read_stream(nats.url)])
    finally:
        nats.close()
    assert len(stored) == 5
    assert all(len(s) == len(set(s)) for s in stored.values()), "a sample twice in the stream"
    first = gap_rows(pipeline.cwd / "first.gaps.csv")
    # the first run names nothing, unless a 1 s history no longer held the start of a series
    # when it met it: then only that (from seq 0)
    assert all((g["first_missing_seq"], g["reason"]) == ("0", "not_held") for g in first), first
    if history == "600":
        assert not first
        assert_accounted_for(stored, {})
        assert not gap_rows(pipeline.cwd / "again.gaps.csv")
    else:
        lost = given_up(pipeline.cwd / "again.gaps.csv", reason="not_held")
        assert set(lost) == set(stored)
        assert_accounted_for(stored, lost)
