"""The bridge into a real Apache Kafka (KRaft, started by the tests from the jars of
brokers/kafka/pom.xml), with the real producer, logger and bridge processes: exactly once
for a read_committed consumer, across SIGKILLs, a broker killed or stopped, and shards."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bridge.kafka_tails import partition_of
from bridging import (
    assert_contiguous_once,
    assert_one_line_error,
    assert_same_sample,
    bridge,
    figure,
    gap_rows,
    given_up,
    logged,
    run_bridge,
    settled,
)
from brokers import Kafka, Mosquitto, Nats, by_device, certificate, read_topic
from conftest import REPO, Pipeline, Proc, unused_port, wait_until


@pytest.fixture(scope="module")
def kafka_and_certificates(tmp_path_factory: pytest.TempPathFactory):
    """One broker for the tests that leave it running (each uses its own topic): a plain
    listener, a TLS one (a certificate made here) and SASL/SCRAM ones (user u, password
    p); the certificate, and one of a CA that did not sign it."""
    home = tmp_path_factory.mktemp("kafka")
    cert, key = certificate(home, "broker")
    stranger, _ = certificate(home, "stranger")
    cluster = Kafka(home, tls=(cert, key), user=("u", "p"))
    yield cluster, cert, stranger
    cluster.close()


@pytest.fixture(scope="module")
def kafka(kafka_and_certificates) -> Kafka:
    return kafka_and_certificates[0]


@pytest.fixture(scope="module")
def secured(kafka_and_certificates):
    return kafka_and_certificates


@pytest.fixture
def own_kafka(tmp_path: Path):
    """A broker of this test's own, for a test that stops it."""
    cluster = Kafka(tmp_path)
    yield cluster
    cluster.close()


def last_logged(pipeline: Pipeline) -> dict[str, int]:
    """The producer's last seq of each device, from the logger's CSV."""
    last: dict[str, int] = {}
    for device, seq in logged(pipeline.cwd / "data" / "stream_log.csv"):
        last[device] = max(seq, last.get(device, -1))
    return last


def assert_exact(
    records: list[tuple[dict, dict]], pipeline: Pipeline, devices: int, labels: bool = True
) -> None:
    """Every (device, seq) once, contiguous up to the producer's last, in seq order within
    its partition; headers and labels as the logger wrote them (`labels`: some are)."""
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
    assert compared > 0.75 * len(samples) and (labelled > 0) == labels, (compared, labelled)


@pytest.mark.slow
def test_kafka_exactly_once_with_labels_and_order(pipeline: Pipeline, kafka: Kafka):
    """100 devices at 100 Hz for 3 s into a one-node Kafka, by two bridges side by side, one
    sample per record and --batch: a read_committed consumer gets each (device, seq) once,
    in order in its device's partition (murmur2 of the key, as Java clients choose), with
    the labels in the value and in the headers."""
    pipeline.producer("--rate", "100", "--devices", "100", "--anomaly-rate", "60")
    logger = pipeline.logger("--flush-interval", "0.1")
    settings = {"exact-single": [], "exact-batch": ["--batch", "--batch-max", "50"]}
    procs = {
        topic: bridge(
            pipeline,
            kafka.url(),
            "--partitions",
            "4",
            "--topic",
            topic,
            *mode,
            gaps=f"{topic}.gaps.csv",
            wait=False,
        )
        for topic, mode in settings.items()
    }
    for proc in procs.values():
        proc.ready(timeout=30)
        assert proc.info["to"] == kafka.url()
    time.sleep(3)  # the scenario: 3 s under load
    pipeline.procs[0].stop()
    settled(*procs.values())
    for proc in procs.values():
        assert figure(proc, "kafka_transactions") > 0
        code, took = proc.stop()
        assert code == 0 and took < 2.5, (code, took)
    logger.stop()
    for topic in settings:
        records = read_topic(kafka.bootstrap, topic)
        assert_exact(records, pipeline, 100)
        assert len(records) >= 100 * 100 * 3 * 0.9
        where: dict[str, set[int]] = defaultdict(set)
        for _, sample in records:
            where[sample["device"]].add(partition_of(sample["device"].encode(), 4))
        assert all(len(p) == 1 for p in where.values())
        assert not gap_rows(pipeline.cwd / f"{topic}.gaps.csv")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_kafka_sigkill_three_times(pipeline: Pipeline, kafka: Kafka):
    """The bridge SIGKILLed three times at random moments under 100 devices x 100 Hz and
    started again each time: the restarted one takes over the transactional id (the dead
    one's open transaction is aborted), reads where each device stopped, refills the rest
    from the producer's history: still every (device, seq) once, contiguous."""
    rng = random.Random()
    pipeline.producer("--rate", "100", "--devices", "100", "--anomaly-rate", "60")
    logger = pipeline.logger("--flush-interval", "0.1")
    args = ("--topic", "killed")
    proc: Proc = bridge(pipeline, kafka.url(), *args)
    for _ in range(3):
        # Killed at a random moment once it has stored something (else a restart has
        # nothing to resume from): mid-transaction, mid-commit or between the two.
        wait_until(lambda p=proc: figure(p, "kafka_transactions") > 0, 30)
        time.sleep(rng.uniform(0.0, 1.0))
        proc.kill()
        proc = bridge(pipeline, kafka.url(), *args)
    assert proc.wait_for(r"resuming 100 device\(s\) where the last run stopped", 30)
    # The producer answers the refill of what was missed while restarting before it stops.
    wait_until(lambda: figure(proc, "samples_refilled") > 0, 30)
    pipeline.procs[0].stop()
    settled(proc)
    assert proc.stop()[0] == 0
    logger.stop()
    assert_exact(read_topic(kafka.bootstrap, "killed"), pipeline, 100)
    assert not gap_rows(pipeline.cwd / "bridge.gaps.csv")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kafka_cluster_broker_killed_and_restarted(pipeline: Pipeline, tmp_path: Path):
    """Three KRaft nodes, a topic of replication factor 3 and min.insync.replicas 2: one
    broker SIGKILLed under load and started again; nothing lost, nothing doubled."""
    cluster = Kafka(tmp_path, nodes=3)
    try:
        pipeline.producer("--rate", "100", "--devices", "20", "--anomaly-rate", "0")
        logger = pipeline.logger("--flush-interval", "0.1")
        proc = bridge(pipeline, cluster.url(), "--replicas", "3", "--partitions", "3")
        # Under way first: every device met (where it stands in the topic read, what came
        # before the bridge refilled). Met while a leader is down, a device's tail cannot be
        # read until the cluster fences that broker (9 s), and by then the producer that
        # could refill what came before has stopped: the gap is recorded, not this test's.
        wait_until(lambda: figure(proc, "samples_acknowledged") >= 2000, 30)
        time.sleep(1)  # the scenario: 1 s with three nodes, 2 s with two, 1 s with three again
        victim = cluster.nodes[1]
        victim.stop(signal.SIGKILL)
        time.sleep(2)
        cluster.restart(victim)
        time.sleep(1)
        pipeline.procs[0].stop()
        settled(proc, timeout=60)
        assert proc.stop()[0] == 0
        logger.stop()
        records = read_topic(cluster.bootstrap)
    finally:
        for node in cluster.nodes:  # its data is thrown away: no need to stop cleanly
            node.stop(signal.SIGKILL)
        cluster.close()
    assert_exact(records, pipeline, 20, labels=False)
    assert not gap_rows(pipeline.cwd / "bridge.gaps.csv")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_kafka_stopped_for_5_s(pipeline: Pipeline, own_kafka: Kafka):
    """The broker stopped for 5 s and started again: a bridge within its bound loses
    nothing; one past its bound records in its gaps file exactly the seqs the topic lacks.
    The outage outlasts the transactions' timeout: the broker aborts the open one and the
    sink goes on with a new producer after reading where each device stands."""
    roomy = bridge(pipeline, own_kafka.url(), gaps="roomy.gaps.csv", wait=False)
    tight = bridge(
        pipeline,
        own_kafka.url(),
        *("--max-unsent", "5000", "--topic", "tight"),
        gaps="tight.gaps.csv",
        wait=False,
    )
    roomy.ready(timeout=30)
    tight.ready(timeout=30)
    # Started after the bridges: nothing to refill at start, only the outage can overflow.
    producer = pipeline.producer("--rate", "100", "--devices", "20", "--anomaly-rate", "0")
    logger = pipeline.logger("--flush-interval", "0.1")
    wait_until(lambda: figure(tight, "samples_acknowledged") >= 4000, 30)
    assert figure(tight, "samples_dropped") == 0
    node = own_kafka.nodes[0]
    node.stop()
    time.sleep(5)  # the scenario: 5 s without the broker, then 1 s with it again
    own_kafka.restart(node)
    time.sleep(1)
    producer.stop()
    settled(roomy, tight, timeout=60)
    assert figure(tight, "samples_dropped") > 0
    assert figure(roomy, "samples_dropped") == 0
    for proc in (roomy, tight, logger):
        assert proc.stop()[0] == 0
    records = read_topic(own_kafka.bootstrap)
    assert_exact(records, pipeline, 20, labels=False)
    assert {min(s) for s in by_device([s for _, s in records]).values()} == {0}
    assert not gap_rows(pipeline.cwd / "roomy.gaps.csv")
    lost = given_up(pipeline.cwd / "tight.gaps.csv")
    assert lost
    partial = by_device([s for _, s in read_topic(own_kafka.bootstrap, "tight")])
    last = last_logged(pipeline)
    assert len(partial) == 20
    for device, seqs in partial.items():
        assert len(seqs) == len(set(seqs)), f"{device}: duplicates"
        missing = [s for a, b in lost.get(device, []) for s in range(a, b + 1)]
        assert not set(missing) & set(seqs), f"{device}: given up, yet in the topic"
        assert sorted(seqs + missing) == list(range(last[device] + 1)), device


@pytest.mark.slow
def test_kafka_two_shards_into_one_topic(pipeline: Pipeline, kafka: Kafka):
    """Two bridges, --shard 1/2 and 2/2, into one topic: each writes only its own devices
    (its own transactional id), and the union is exact."""
    from common.shards import Shard

    pipeline.producer("--rate", "100", "--devices", "20", "--anomaly-rate", "60")
    logger = pipeline.logger("--flush-interval", "0.1")
    url, topic = kafka.url(), ("--topic", "shared")
    shards = [
        bridge(pipeline, url, *topic, "--shard", f"{i}/2", gaps=f"s{i}.gaps.csv", wait=False)
        for i in (1, 2)
    ]
    for proc in shards:
        proc.ready(timeout=30)
    time.sleep(2)  # the scenario: 2 s, one shard killed and restarted, 1.5 s more
    shards[1].kill()
    shards[1] = bridge(pipeline, url, *topic, "--shard", "2/2", gaps="s2.gaps.csv")
    time.sleep(1.5)
    pipeline.procs[0].stop()
    settled(*shards)
    counts = [figure(b, "samples_acknowledged") for b in shards]
    for proc in (*shards, logger):
        assert proc.stop()[0] == 0
    records = read_topic(kafka.bootstrap, "shared")
    assert_exact(records, pipeline, 20)
    mine = [sum(1 for _, s in records if Shard(i, 2).owns(s["device"])) for i in (1, 2)]
    assert 0 < counts[0] == mine[0], (counts, mine)  # the first ran all along: all of its share
    assert 0 < counts[1] <= mine[1], (counts, mine)
    assert not gap_rows(pipeline.cwd / "s1.gaps.csv") + gap_rows(pipeline.cwd / "s2.gaps.csv")


def test_kafka_same_shard_twice_is_fenced(pipeline: Pipeline, kafka: Kafka):
    """A second bridge with the same topic and shard takes over the transactional id: the
    first stops with one line naming --shard, status 3, and nothing is written twice."""
    pipeline.producer("--rate", "50", "--devices", "5")
    first = bridge(pipeline, kafka.url(), "--topic", "twice", gaps="a.gaps.csv")
    second = bridge(pipeline, kafka.url(), "--topic", "twice", gaps="b.gaps.csv")
    first.wait_for(r"another bridge took over transactional id stream-bridge-twice-1-of-1", 30)
    assert first.popen.wait(10) == 3
    wait_until(lambda: figure(second, "samples_acknowledged") >= 100, 20)
    pipeline.procs[0].stop()
    settled(second)
    assert second.stop()[0] == 0
    seqs = by_device([s for _, s in read_topic(kafka.bootstrap, "twice")])
    assert len(seqs) == 5
    assert_contiguous_once(seqs)


def test_kafka_over_tls_with_scram(pipeline: Pipeline, secured):
    """kafka+ssl:// with --tls-ca and SASL/SCRAM credentials: every sample arrives."""
    cluster, cert, _ = secured
    url = cluster.url("SASL_SSL").replace("kafka+ssl://", "kafka+ssl://u:p@")
    pipeline.producer("--rate", "50", "--devices", "5")
    proc = bridge(pipeline, url, "--tls-ca", str(cert), "--topic", "secret")
    assert proc.info["to"] == cluster.url("SASL_SSL")  # no credentials shown
    wait_until(lambda: figure(proc, "samples_acknowledged") >= 200, 30)
    pipeline.procs[0].stop()
    settled(proc)
    assert proc.stop()[0] == 0
    seqs = by_device([s for _, s in read_topic(cluster.bootstrap, "secret")])
    assert len(seqs) == 5
    assert_contiguous_once(seqs)


def test_kafka_failures_are_one_line_errors(tmp_path: Path, secured):
    """Refused credentials, an untrusted certificate and TLS to a plain port stop the
    bridge with one line saying what to do, and status 3; a bad URL or a CA file for a
    plain URL, status 2."""
    cluster, cert, stranger = secured
    sasl = cluster.url("SASL_PLAINTEXT")
    ssl_url = cluster.url("SSL")
    plain_as_tls = cluster.url().replace("kafka://", "kafka+ssl://")

    def folder(i: int) -> Path:
        (tmp_path / str(i)).mkdir(exist_ok=True)
        return tmp_path / str(i)

    cases = [
        (["--to", sasl, "--username", "u", "--password", "wrong"], 3, "refused the credentials"),
        (["--to", sasl.replace("kafka://", "kafka://u:wrong@")], 3, "refused the credentials"),
        (
            ["--to", ssl_url, "--tls-ca", str(stranger)],
            3,
            rf"TLS certificate of {re.escape(ssl_url)} not trusted .*give the CA .* --tls-ca",
        ),
        (
            ["--to", plain_as_tls, "--tls-ca", str(cert)],
            3,
            rf"TLS handshake with {re.escape(plain_as_tls)} failed .*: is it a TLS port\?",
        ),
        (["--to", "kafka://127.0.0.1:99999"], 2, "malformed broker URL"),
        (["--to", "kafka://a:1,"], 2, "malformed broker URL"),
        (["--to", "kafka://127.0.0.1:1", "--topic", "a/b"], 2, "topic 'a/b'"),
        (
            ["--to", "kafka://127.0.0.1:1", "--tls-ca", str(cert)],
            2,
            r"a CA file is for TLS: use kafka\+ssl:// instead of kafka://127\.0\.0\.1:1",
        ),
    ]
    # One bridge process each, all at once (each in its own folder: its own gaps file).
    with ThreadPoolExecutor(len(cases)) as pool:
        runs = list(pool.map(lambda i: run_bridge(folder(i), *cases[i][0]), range(len(cases))))
    for (_, status, pattern), run in zip(cases, runs, strict=True):
        assert_one_line_error(run, status, pattern)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_side_by_side_and_one_client_for_every_engine(
    pipeline: Pipeline, kafka: Kafka, tmp_path: Path
):
    """A NATS, an MQTT and a Kafka bridge started together with the same settings and no
    file named (each writes data/bridge-<broker>.gaps.csv), and the test client reading
    ws://, kafka://, nats:// and mqtt:// at once: the same samples give the same lines."""
    nats = Nats(tmp_path)
    mosquitto = Mosquitto(tmp_path)
    try:
        pipeline.producer("--rate", "20", "--devices", "5", "--anomaly-rate", "60")
        pipeline.broadcaster()
        shared = {"STREAM_ZMQ_PUB": pipeline.zmq, "STREAM_ZMQ_CATCHUP": pipeline.catchup}
        bridges = {}
        for family, url in (
            ("nats", nats.url),
            ("mqtt", mosquitto.url),
            ("kafka", f"{kafka.url()}"),
        ):
            args = ("--to", url, "--topic", "engines", "--metrics-port", "any")
            bridges[family] = pipeline.start("bridge", *args, env=shared)
        for proc in bridges.values():
            proc.ready(timeout=30)
        for family in bridges:
            assert (pipeline.cwd / "data" / f"bridge-{family}.gaps.csv").exists()
        urls = {
            "ws": pipeline.ws_url,
            "kafka": f"{kafka.url()}/engines",
            "nats": nats.url,
            "mqtt": mosquitto.url,
        }
        # 6 s of the stream each: clients that start seconds apart on a busy machine (a Kafka
        # consumer takes a while to be assigned its partitions) still read common samples.
        clients = {
            name: pipeline.start_script("clients/test_client.py", "--url", url, "--count", "600")
            for name, url in urls.items()
        }
        lines: dict[str, dict[tuple[str, int], str]] = {}
        for name, client in clients.items():
            assert client.popen.wait(60) == 0, (name, client.lines[-5:])
            got = [line for line in client.out if line.startswith("Received: ")]
            assert len(got) == 600, (name, len(got))
            parsed = {}
            for line in got:
                sample = json.loads(line.removeprefix("Received: "))
                parsed[(sample["device"], sample["seq"])] = line
            lines[name] = parsed
    finally:
        for proc in pipeline.procs:
            proc.kill()
        nats.close()
        mosquitto.close()
    common = set.intersection(*(set(v) for v in lines.values()))
    assert len(common) >= 50, {k: len(v) for k, v in lines.items()}
    for key in common:
        assert len({lines[name][key] for name in lines}) == 1, {n: lines[n][key] for n in lines}


def test_kafka_unreachable_is_retried_and_a_collision_is_named(pipeline: Pipeline):
    """With no broker listening the bridge logs a retry line and stays up, holding its
    gaps file: a second bridge to the same kind of broker in that folder stops with one
    line naming the bridge and --gaps-file, status 3; SIGTERM stops the first at once."""
    url = f"kafka://127.0.0.1:{unused_port()}"
    first = pipeline.start("bridge", "--zmq-pub", pipeline.zmq, "--to", url)
    first.wait_for(r"broker kafka://127\.0\.0\.1:\d+ unreachable .*; retrying in", timeout=30)
    second = run_bridge(pipeline.cwd, "--to", url, "--gaps-file", "data/bridge-kafka.gaps.csv")
    assert_one_line_error(
        second,
        3,
        r"data/bridge-kafka\.gaps\.csv is already being written by another bridge; "
        r"give each bridge its own --gaps-file",
    )
    code, took = first.stop()
    assert code == 0 and took < 2.5, (code, took)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_bridge_kafka_smoke(tmp_path: Path, kafka: Kafka):
    """bench/bridge.py --smoke --only kafka runs against a real broker (this module's) and
    reports the plain producer's baselines and the bridge with and without transactions
    and --batch, each read back from its topic."""
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bridge.py"), "--smoke", "--only", "kafka"]
        + ["--kafka", kafka.bootstrap],
        cwd=REPO,
        env={**os.environ, "STREAM_BENCH_RESULTS": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((tmp_path / "bridge.json").read_text())
    assert [r["setting"] for r in report["bridge"]] == [
        "kafka, transactions",
        "kafka, no transactions",
        "kafka, transactions, --batch",
    ]
    # A smoke size (1 s a setting) says nothing of rates on a busy machine: that the bridge
    # gave nothing up and that its topic holds every sample once is what it checks.
    assert not any(r["dropped"] for r in report["bridge"]), report["bridge"]
    for r in report["bridge"]:  # what it read back from the topic: 20 devices, exactly once
        back = r["read_back"]
        assert back["devices"] == 20 and back["samples"] > 0, r
        assert back["duplicates"] == back["missing_unrecorded"] == 0, r
    assert report["kafka"]["baselines"]["kafka, plain producer"]["samples_per_s"] > 0


@pytest.mark.slow
def test_kafka_confirmations_held_until_final_and_stuck_when_a_marker_is_missing(kafka: Kafka):
    """What a commit confirmed is held while an open transaction keeps the partitions'
    stable end in front of it (read_committed readers cannot see it yet), counted as stuck
    once that lasts past the bound, and let go as soon as the stable end passes it."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from bridge.kafka_confirm import Confirmations
    from bridge.kafka_tails import Tails
    from bridge.message import Message

    topic = "held-until-final"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
    # Another transactional producer's open transaction: the stable end stays before it.
    holder = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": "holder"})
    holder.init_transactions(30)
    holder.begin_transaction()
    holder.produce(topic, b"open", b"k", partition=0)
    holder.flush(30)
    ours = Producer({"bootstrap.servers": kafka.bootstrap})
    ours.produce(topic, b"ours", b"k", partition=0)
    ours.flush(30)
    tails = Tails({"bootstrap.servers": kafka.bootstrap}, admin, topic, 1)
    held = Confirmations(tails, stuck_after=2.0)
    held.add([Message("d", 0, 0, 0, 0, b"{}")])

    def check() -> Confirmations:
        held._next_check = 0.0  # look now, not CHECK_EVERY after the last look
        held.check()
        return held

    try:
        wait_until(lambda: check()._checkpoint is not None, 30, message="no checkpoint")
        assert len(held) == 1 and not held.stuck()
        wait_until(lambda: check().stuck(), 10, message="never counted as stuck")
        assert len(held) == 1  # still in front of the stable end
        holder.commit_transaction(30)
        wait_until(lambda: not len(check()), 10, message="the stable end passed, yet held")
        assert not held.stuck()
    finally:
        tails.close()
