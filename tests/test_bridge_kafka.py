"""The bridge into a real Apache Kafka (KRaft, started by the tests from the jars of
brokers/kafka/pom.xml), with the real producer, logger and bridge processes: exactly once
for a read_committed consumer, across SIGKILLs, a broker killed or stopped, and shards."""

from __future__ import annotations

import random
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest

from bridge.kafka_tails import partition_of
from bridging import (
    assert_contiguous_once,
    assert_same_sample,
    bridge,
    figure,
    gap_rows,
    given_up,
    logged,
    settled,
)
from brokers import Kafka, by_device, read_topic
from conftest import Pipeline, Proc


@pytest.fixture
def kafka(tmp_path: Path):
    cluster = Kafka(tmp_path)
    yield cluster
    cluster.close()


def last_logged(pipeline: Pipeline) -> dict[str, int]:
    """The producer's last seq of each device, from the logger's CSV."""
    last: dict[str, int] = {}
    for device, seq in logged(pipeline.cwd / "data" / "stream_log.csv"):
        last[device] = max(seq, last.get(device, -1))
    return last


def assert_exact(records: list[tuple[dict, dict]], pipeline: Pipeline, devices: int) -> None:
    """Every (device, seq) once, contiguous up to the producer's last, in seq order within
    its partition; headers and labels as the logger wrote them."""
    samples = [s for _, s in records]
    seqs = by_device(samples)
    assert len(seqs) == devices
    for device, got in seqs.items():
        assert got == sorted(got), f"{device}: out of order in its partition"
    assert_contiguous_once(seqs)
    assert {d: max(s) for d, s in seqs.items()} == last_logged(pipeline), "the topic misses the end"
    rows = logged(pipeline.cwd / "data" / "stream_log.csv")
    compared = labelled = 0
    for headers, sample in records:
        assert headers["device"] == sample["device"]
        first, _, last = headers["seq"].partition("-")
        assert int(first) <= sample["seq"] <= int(last or first)
        row = rows.get((sample["device"], sample["seq"]))
        if row is not None:
            assert_same_sample(sample, row)
            compared += 1
            if row["anomaly"]:
                labelled += 1
                assert row["anomaly"] in headers["anomaly"].split(","), (headers, row)
                assert row["anomaly_id"] in headers["anomaly_id"].split(","), (headers, row)
            elif not headers["seq"].count("-"):
                assert "anomaly" not in headers, headers
    assert compared > 0.75 * len(samples) and labelled > 0, (compared, labelled)


@pytest.mark.slow
@pytest.mark.parametrize("batch", [False, True], ids=["one sample per record", "batch"])
def test_kafka_exactly_once_with_labels_and_order(pipeline: Pipeline, kafka: Kafka, batch: bool):
    """100 devices at 100 Hz for 4 s into a one-node Kafka: a read_committed consumer gets
    each (device, seq) once, in order in its device's partition (murmur2 of the key, as
    Java clients choose), with the labels in the value and in the headers."""
    pipeline.producer("--rate", "100", "--devices", "100", "--anomaly-rate", "60")
    logger = pipeline.logger("--flush-interval", "0.1")
    mode = ["--batch", "--batch-max", "50"] if batch else []
    proc = bridge(pipeline, kafka.url(), "--partitions", "4", *mode)
    assert proc.info["to"] == kafka.url()
    time.sleep(4)  # the scenario: 4 s under load
    pipeline.procs[0].stop()
    settled(proc)
    assert figure(proc, "kafka_transactions") > 0
    code, took = proc.stop()
    assert code == 0 and took < 2.5, (code, took)
    logger.stop()
    records = read_topic(kafka.bootstrap)
    assert_exact(records, pipeline, 100)
    assert sum(1 for _ in records) >= 100 * 100 * 4 * 0.9
    where: dict[str, set[int]] = defaultdict(set)
    for headers, sample in records:
        where[sample["device"]].add(partition_of(sample["device"].encode(), 4))
    assert all(len(p) == 1 for p in where.values())
    assert not gap_rows(pipeline.cwd / "bridge.gaps.csv")


@pytest.mark.slow
def test_kafka_sigkill_three_times(pipeline: Pipeline, kafka: Kafka):
    """The bridge SIGKILLed three times at random moments under 100 devices x 100 Hz and
    started again each time: the restarted one takes over the transactional id (the dead
    one's open transaction is aborted), reads where each device stopped, refills the rest
    from the producer's history: still every (device, seq) once, contiguous."""
    rng = random.Random()
    pipeline.producer("--rate", "100", "--devices", "100", "--anomaly-rate", "60")
    logger = pipeline.logger("--flush-interval", "0.1")
    proc: Proc = bridge(pipeline, kafka.url())
    for _ in range(3):
        time.sleep(rng.uniform(0.5, 2.0))  # the scenario: killed at random moments
        proc.kill()
        proc = bridge(pipeline, kafka.url())
    time.sleep(1.5)
    pipeline.procs[0].stop()
    settled(proc)
    assert proc.wait_for(r"resuming 100 device\(s\) where the last run stopped")
    assert proc.stop()[0] == 0
    logger.stop()
    assert_exact(read_topic(kafka.bootstrap), pipeline, 100)
    assert not gap_rows(pipeline.cwd / "bridge.gaps.csv")
