"""Samples per second into NATS JetStream, MQTT and Kafka: the bridge against a plain client.

    python bench/bridge.py [--duration 15] [--devices 100] [--rate 1000] [--quick | --smoke]
                           [--only nats,mqtt,kafka] [--kafka HOST:PORT]

Baseline, in the same run on the same brokers: a plain client publishing one sample per
message and waiting as such clients do (JetStream: publish_async, acknowledgements awaited
per 2,000; MQTT QoS 1: each PUBACK awaited before the next publish). Then the real
producer at DEVICES x RATE samples/s feeds the real bridge, with each setting, and the
rate is what the broker acknowledged per second in the second half of the run; the
bridge "holds" the producer's rate when what it holds unacknowledged stays under a
second of samples. Brokers: one JetStream node, a three-node cluster (three replicas)
and mosquitto, on loopback, started here. --smoke only checks that the script runs end to
end: a low rate for 1 s per setting, without the cluster (and without Kafka unless
--only names it).

Kafka (one KRaft node from brokers/kafka.py, its JVM at full speed): the baselines are a
plain confluent-kafka producer (acks=all, idempotent, the bridge's settings) writing the
very messages the bridge writes (payloads, keys, partitions, headers, rendered by the
bridge's own code) as fast as it can: without transactions, with a transaction per 20,000
messages (the bridge's window), and in 10-sample batches with a transaction per 1,000
(what --batch makes at 100 Hz: samples linger 100 ms). Then the bridge with transactions
(the default), without, and with --batch, fed 1000 devices x 100 Hz (does it hold 100 k
samples/s?), and with transactions fed more than it can take (1000 x 150 Hz). Each setting
is compared with the plain producer of the same guarantees (transactions with transactions,
--batch with batches): its acknowledged rate over the plain one's, and, since on a small
machine the producer feeding the bridge takes CPU the plain producer has to itself, the
plain producer's CPU per sample over the bridge's (how close the bridge comes per core).
CPU per sample: the bridge process's (the producer feeding it not counted), and the plain
producer's own (its librdkafka threads included). "made" is what the producer really
published per second during the measurement.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench._util import Usage, ready, start, stop, table, write  # noqa: E402
from brokers import Mosquitto, Nats, _local_kafka  # noqa: E402


async def _plain_jetstream(url: str, stream: str, count: int, replicas: int = 1) -> float:
    import nats
    from nats.js.api import StreamConfig

    nc = await nats.connect(url)
    js = nc.jetstream()
    config = StreamConfig(name=stream, subjects=[f"{stream.lower()}.>"], num_replicas=replicas)
    await js.add_stream(config)
    payload = b'{"timestamp":"2026-11-28 00:05:07.000","cpu":47.2,"mem":62.1,"disk_io":120.0,'
    payload += b'"net":58.0,"device":"host-001","seq":17,"anomaly":null,"anomaly_id":null}'
    began = time.perf_counter()
    pending = []
    for i in range(count):
        subject = f"{stream.lower()}.host-{i % 100:03d}"
        headers = {"Nats-Msg-Id": f"host-{i % 100:03d}:{i}"}
        pending.append(await js.publish_async(subject, payload, headers=headers))
        if len(pending) >= 2000:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    took = time.perf_counter() - began
    await nc.close()
    return count / took


def _plain_mqtt(port: int, count: int) -> float:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-plain")
    client.connect("127.0.0.1", port)
    client.loop_start()
    payload = b'{"timestamp":"2026-11-28 00:05:07.000","cpu":47.2,"device":"host-001","seq":17}'
    began = time.perf_counter()
    for i in range(count):
        client.publish(f"plain/host-{i % 100:03d}", payload, qos=1).wait_for_publish(10)
    took = time.perf_counter() - began
    client.disconnect()
    client.loop_stop()
    return count / took


def _figure(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return float(re.search(rf"^stream_{name}(?:_total)? (\S+)$", text, re.M)[1])


def _ratio(a: float, b: float) -> float | None:
    """a / b, or None where b measured nothing (a smoke run's half second can use no
    CPU tick at all)."""
    return a / b if b else None


def _times(ratio: float | None, what: str) -> str:
    return f" ({ratio:.2f}x {what})" if ratio is not None else f" (n/a x {what})"


def _through_bridge(
    work: Path, name: str, url: str, args: list[str], devices: int, rate: int, duration: float
) -> dict:
    """The producer at devices x rate, the bridge with `args`: acknowledged samples/s."""
    pub, catchup = f"ipc://{work}/{name}.pub", f"ipc://{work}/{name}.catchup"
    producer = start(
        "producer",
        *("--zmq-pub", pub, "--zmq-catchup", catchup, "--zmq-control", f"ipc://{work}/{name}.ctl"),
        *("--devices", str(devices), "--rate", str(rate), "--state", str(work / f"{name}.json")),
        cwd=work,
    )
    ready(producer)
    bridge = start(
        "bridge",
        *("--zmq-pub", pub, "--zmq-catchup", catchup, "--to", url, "--metrics-port", "any"),
        *("--gaps-file", str(work / f"{name}.gaps.csv"), *args),
        cwd=work,
    )
    port = ready(bridge)["metrics_port"]
    usage = Usage(bridge.pid)
    try:
        time.sleep(duration / 2)  # warm up: streams created, first samples through
        acked, began = _figure(port, "samples_acknowledged"), time.monotonic()
        received = _figure(port, "samples_received")
        usage.restart()
        time.sleep(duration / 2)
        done = _figure(port, "samples_acknowledged") - acked
        fed = _figure(port, "samples_received") - received
        took = time.monotonic() - began
        rate_acked = done / took
        cpu = usage.report()
        lag = _figure(port, "bridge_lag_samples")
        dropped = _figure(port, "samples_dropped")
    finally:
        stop(bridge, producer)
    offered = devices * rate
    return {
        "setting": name,
        "offered": offered,
        "received_per_s": fed / took,  # what the producer really made (a busy machine: less)
        "acknowledged_per_s": rate_acked,
        "cpu_us_per_sample": cpu["cpu_percent"] / 100 * cpu["wall_s"] / max(done, 1) * 1e6,
        "lag_samples": lag,
        "dropped": dropped,
        "holds": lag < offered and dropped == 0,
    }


def _kafka_messages(count: int, devices: int, batch_max: int) -> list:
    """`count` samples of `devices` devices as the bridge makes them into messages."""
    import numpy as np

    from bridge.message import messages
    from common import schema

    ticks = count // devices
    rows = schema.empty_rows(ticks * devices)
    rng = np.random.default_rng(1)
    rows["device"] = np.tile([f"host-{d + 1:04d}".encode() for d in range(devices)], ticks)
    rows["seq"] = np.repeat(np.arange(ticks), devices)
    rows["ts_ms"] = 1_790_000_000_000 + 10 * rows["seq"].astype(np.int64)
    for metric in schema.METRICS:
        rows[metric] = np.round(rng.uniform(0, 100, len(rows)), 1)
    batch = schema.Batch(rows, schema.MILLISECONDS)
    if batch_max <= 1:
        return messages(batch)
    # what the bridge's outbox hands over: each take (a window's worth) cut per device
    take = 20_000 * batch_max
    return [
        m
        for a in range(0, len(rows), take)
        for m in messages(batch.with_rows(rows[a : a + take]), batch_max)
    ]


def _read_back(bootstrap: str, topic: str, gaps_file: Path) -> dict:
    """The topic as a read_committed consumer sees it, against the bridge's gaps file: per
    device, seqs stored twice, and seqs missing between its first and last stored that no
    gap record names (lost in silence). Seqs from the records' headers (a batch: first-last)."""
    import csv
    from collections import defaultdict

    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-read-{topic}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    seqs: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    records = 0
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        left, deadline = set(partitions), time.monotonic() + 300
        while left and time.monotonic() < deadline:
            for record in consumer.consume(10_000, timeout=1):
                if record.error() is not None:
                    if record.error().code() == KafkaError._PARTITION_EOF:
                        left.discard(record.partition())
                    continue
                records += 1
                headers = dict(record.headers() or ())
                first, _, last = headers["seq"].partition(b"-")
                seqs[record.key()].append((int(first), int(last or first)))
    finally:
        consumer.close()
    given_up: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    if gaps_file.exists():
        with gaps_file.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row["last_missing_seq"]:
                    span = (int(row["first_missing_seq"]), int(row["last_missing_seq"]))
                    given_up[row["device"].encode()].append(span)
    stored = duplicates = silent = 0
    for device, spans in seqs.items():
        have: set[int] = set()
        for first, last in spans:
            for seq in range(first, last + 1):
                duplicates += seq in have
                have.add(seq)
        stored += len(have)
        named = {q for a, b in given_up.get(device, []) for q in range(a, b + 1)}
        silent += sum(1 for q in range(min(have), max(have) + 1) if q not in have | named)
    return {
        "records": records,
        "samples": stored,
        "devices": len(seqs),
        "duplicates": duplicates,
        "missing_unrecorded": silent,
    }


def _plain_kafka(
    bootstrap: str, topic: str, made: list, transactions: bool, per_transaction: int = 20_000
) -> dict:
    """A plain confluent-kafka producer writing `made` as fast as it can, with transactions
    of `per_transaction` messages or none: msgs/s, samples/s, CPU per sample (this process:
    the Python calls and librdkafka's threads)."""
    from confluent_kafka import Producer

    from bridge.kafka import producer_config, record_headers
    from bridge.kafka_tails import partition_of

    conf = producer_config({"bootstrap.servers": bootstrap})
    if transactions:
        conf.update({"transactional.id": f"bench-{topic}", "transaction.timeout.ms": 10_000})
    producer = Producer(conf)
    if transactions:
        producer.init_transactions(30)
    keys = {m.device: m.device.encode() for m in made}
    parts = {d: partition_of(k, 6) for d, k in keys.items()}
    samples = sum(m.samples for m in made)
    began, cpu = time.perf_counter(), os.times()
    for a in range(0, len(made), per_transaction):  # the bridge's (its Kafka --window)
        if transactions:
            producer.begin_transaction()
        for m in made[a : a + per_transaction]:
            key = keys[m.device]
            while True:
                try:
                    producer.produce(
                        topic,
                        m.payload,
                        key,
                        partition=parts[m.device],
                        headers=record_headers(m, key),
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0)
        if transactions:
            producer.commit_transaction(30)
    producer.flush(60)
    took = time.perf_counter() - began
    used = os.times()
    cpu_s = used.user + used.system - cpu.user - cpu.system
    return {
        "msgs_per_s": len(made) / took,
        "samples_per_s": samples / took,
        "cpu_us_per_sample": cpu_s / samples * 1e6,
    }


def _kafka(
    work: Path, smoke: bool, quick: bool, duration: float, broker: str
) -> tuple[dict, list[dict]]:
    """The Kafka part: baselines and bridge settings on one broker started here (or on
    `broker`, HOST:PORT, already running: its start time and memory are then not known)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    cluster = None
    started = memory = 0.0
    if not broker:
        cluster = _local_kafka().Cluster(work / "kafka", heap="1g", quick_start=smoke)
        started = cluster.start()
    bootstrap = broker or cluster.bootstrap()
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        topics = [f"{t}-{work.name}" for t in ("plain", "plain-txn", "plain-batch")]
        for future in admin.create_topics([NewTopic(t, 6, 1) for t in topics]).values():
            future.result()
        count = 4_000 if smoke else 50_000 if quick else 300_000
        # --batch at 1000 devices x 100 Hz: samples linger 100 ms, 10 a message, and a
        # take (a transaction) every 100 ms holds 1,000 messages
        single, batched = _kafka_messages(count, 1000, 1), _kafka_messages(count, 1000, 10)
        plain, plain_txn, plain_batch = topics
        # The broker's JIT warms up first (the first run is slower by half, measured),
        # then the plain producer runs before and after the bridge: the machine is shared.
        if not smoke:
            _plain_kafka(bootstrap, plain, single, False)
        before = _plain_kafka(bootstrap, plain, single, False)
        baselines = {
            "kafka, plain producer, transaction per 20,000": _plain_kafka(
                bootstrap, plain_txn, single, True
            ),
            "kafka, plain producer, 10-sample batches, transaction per 1,000": _plain_kafka(
                bootstrap, plain_batch, batched, True, per_transaction=1_000
            ),
        }
        devices, rate = (20, 50) if smoke else (1000, 100)
        url = f"kafka://{bootstrap}"
        run = work.name  # topics of their own, should the broker be a running one
        settings = [
            ("kafka, transactions", ["--topic", f"t1-{run}"], rate),
            ("kafka, no transactions", ["--topic", f"t2-{run}", "--no-transactions"], rate),
            (
                "kafka, transactions, --batch",
                ["--topic", f"t3-{run}", "--batch"],
                rate,
            ),
        ]
        if not smoke:
            # Fed just above what it can take: fed far more, its share of the two cores goes
            # to the producer feeding it and to giving samples up.
            saturated = ("kafka, transactions, saturated", ["--topic", f"t4-{run}"], rate * 3 // 2)
            settings.append(saturated)
        results = []
        for i, (name, args, r) in enumerate(settings):
            results.append(_through_bridge(work, f"k{i}", url, args, devices, r, duration))
            results[-1]["setting"] = name
            topic = args[args.index("--topic") + 1]
            results[-1]["read_back"] = _read_back(bootstrap, topic, work / f"k{i}.gaps.csv")
        after = before if smoke else _plain_kafka(bootstrap, plain, single, False)
        if cluster:
            memory = cluster.rss_mb()
    finally:
        if cluster:
            cluster.close()
    baselines = {
        "kafka, plain producer": {k: (before[k] + after[k]) / 2 for k in before},
        "kafka, plain producer, before the bridge": before,
        "kafka, plain producer, after the bridge": after,
        **baselines,
    }
    for r in results:
        # Each setting against the plain producer with the same guarantees: transactions
        # against a transaction per 20,000, --batch against batches, the rest against plain.
        r["baseline"] = (
            "kafka, plain producer, 10-sample batches, transaction per 1,000"
            if "--batch" in r["setting"]
            else "kafka, plain producer"
            if "no transactions" in r["setting"]
            else "kafka, plain producer, transaction per 20,000"
        )
        base = baselines[r["baseline"]]
        r["over_plain"] = _ratio(r["acknowledged_per_s"], base["samples_per_s"])
        r["over_no_transactions"] = _ratio(
            r["acknowledged_per_s"], baselines["kafka, plain producer"]["samples_per_s"]
        )
        r["cpu_over_plain"] = _ratio(base["cpu_us_per_sample"], r["cpu_us_per_sample"])
    return {"baselines": baselines, "broker_start_s": started, "broker_rss_mb": memory}, results


@click.command()
@click.option("--duration", default=16.0, show_default=True, help="Seconds per bridge setting.")
@click.option("--devices", default=100, show_default=True)
@click.option("--rate", default=1000, show_default=True, help="Samples/s per device.")
@click.option("--quick", is_flag=True, help="4 s per setting, 100 devices x 200 Hz.")
@click.option(
    "--only",
    default="",
    help="Comma list of nats, mqtt, kafka (default: all; with --smoke: nats and mqtt).",
)
@click.option(
    "--kafka",
    "kafka_broker",
    default="",
    help="HOST:PORT of a running Kafka broker to use instead of starting one.",
)
@click.option(
    "--smoke",
    is_flag=True,
    help="A check that it runs, not a measurement: 1 s per setting at 50 Hz, one "
    "JetStream node with and without --batch and MQTT QoS 1 (no cluster).",
)
def main(
    duration: float,
    devices: int,
    rate: int,
    quick: bool,
    only: str,
    kafka_broker: str,
    smoke: bool,
) -> None:
    engines = set(only.split(",")) if only else {"nats", "mqtt"} | (set() if smoke else {"kafka"})
    if smoke:
        duration, rate = 1.0, 50
    elif quick:
        duration, rate = 4.0, 200
    work = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    kafka, kafka_results = (
        _kafka(work, smoke, quick, duration, kafka_broker) if "kafka" in engines else ({}, [])
    )
    if not engines & {"nats", "mqtt"}:
        _report({}, kafka, kafka_results, quick, smoke)
        return
    plain_count = 1_000 if smoke else 5_000 if quick else 30_000
    (work / "one").mkdir()
    (work / "three").mkdir()
    (work / "mqtt").mkdir()
    brokers = [Nats(work / "one")]
    try:
        if not smoke:
            brokers.append(Nats(work / "three", nodes=3))
        brokers.append(Mosquitto(work / "mqtt"))
        one, mosquitto = brokers[0], brokers[-1]
        three = None if smoke else brokers[1]
        baselines = {
            "jetstream, 1 node": asyncio.run(_plain_jetstream(one.url, "PLAIN", plain_count)),
        }
        if three:
            baselines["jetstream, 3 replicas"] = asyncio.run(
                _plain_jetstream(three.url, "PLAIN3", plain_count, replicas=3)
            )
        baselines["mqtt qos 1"] = _plain_mqtt(mosquitto.port, plain_count // 5)
        settings = [
            ("jetstream, 1 node", one.url, []),
            (
                "jetstream, 1 node, --batch",
                one.url,
                ["--batch", "--stream", "B1", "--prefix", "b1"],
            ),
        ]
        if three:
            settings += [
                ("jetstream, 3 replicas", three.url, ["--replicas", "3"]),
                (
                    "jetstream, 3 replicas, --batch",
                    three.url,
                    ["--replicas", "3", "--batch", "--stream", "B3", "--prefix", "b3"],
                ),
            ]
        settings.append(("mqtt qos 1", mosquitto.url, ["--qos", "1"]))
        if not smoke:
            settings += [
                ("mqtt qos 1, --batch", mosquitto.url, ["--qos", "1", "--batch"]),
                ("mqtt qos 0", mosquitto.url, ["--qos", "0"]),
            ]
        settings = [s for s in settings if ("mqtt" if s[0][:4] == "mqtt" else "nats") in engines]
        results = []
        for i, (name, url, args) in enumerate(settings):
            results.append(_through_bridge(work, f"s{i}", url, args, devices, rate, duration))
            results[-1]["setting"] = name
    finally:
        for broker in brokers:
            broker.close()
    _report(baselines, kafka, results + kafka_results, quick, smoke)


def _report(baselines: dict, kafka: dict, results: list[dict], quick: bool, smoke: bool) -> None:
    rows = [
        [
            "setting",
            "plain client msgs/s",
            "bridge samples/s",
            "offered/s (made)",
            "holds it",
            "bridge CPU us/sample",
        ]
    ]
    for r in results:
        base = next((v for k, v in baselines.items() if r["setting"].startswith(k)), None)
        cpu = f"{r['cpu_us_per_sample']:.1f}"
        if r["setting"].startswith("kafka"):
            base = kafka["baselines"][r["baseline"]]["samples_per_s"]
            cpu += _times(r["cpu_over_plain"], "plain's efficiency")
        rows.append(
            [
                r["setting"],
                f"{base:,.0f}" if base else "",
                f"{r['acknowledged_per_s']:,.0f}"
                + (_times(r["over_plain"], "plain") if "over_plain" in r else ""),
                f"{r['offered']:,} ({r['received_per_s']:,.0f})",
                "yes" if r["holds"] else f"no (lag {r['lag_samples']:,.0f})",
                cpu,
            ]
        )
    print(table(rows))
    for r in results:
        if "read_back" in r:
            b = r["read_back"]
            print(
                f"{r['setting']}: read back (read_committed) {b['samples']:,} samples of "
                f"{b['devices']} devices, {b['duplicates']} stored twice, "
                f"{b['missing_unrecorded']} missing without a gap record"
            )
    if kafka:
        rows = [["kafka baseline", "msgs/s", "samples/s", "CPU us/sample"]]
        for name, b in kafka["baselines"].items():
            rows.append(
                [
                    name,
                    f"{b['msgs_per_s']:,.0f}",
                    f"{b['samples_per_s']:,.0f}",
                    f"{b['cpu_us_per_sample']:.1f}",
                ]
            )
        print(table(rows))
        if kafka["broker_start_s"]:
            print(
                f"kafka broker: started in {kafka['broker_start_s']:.1f} s, "
                f"{kafka['broker_rss_mb']:.0f} MB resident at the end"
            )
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (2 cores, shared)")
    path = write(
        "bridge",
        {
            "load_average": load,
            "baselines_msgs_per_s": baselines,
            "kafka": kafka,
            "bridge": results,
            "quick": quick,
            "smoke": smoke,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
