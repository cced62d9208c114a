"""Real servers for the tests: nats-server (JetStream, one node or a three-node cluster),
mosquitto and Apache Kafka (KRaft, one node or three; brokers/kafka.py) for the bridge,
prometheus for the broadcaster's /metrics/samples, each started on free ports in the
test's temporary directory."""

from __future__ import annotations

import asyncio
import collections
import getpass
import importlib.util
import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, unused_port

NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def need(binary: str, package: str) -> None:
    if not Path(binary).exists():
        pytest.skip(f"{package} is not installed (apt-get install {package})")


def certificate(cwd: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files): the certificate is
    also the CA file that trusts it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (apt-get install openssl)")
    cert, key = cwd / f"{name}.pem", cwd / f"{name}.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def _free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(unused_port())
    return list(ports)


class NatsNode:
    """One nats-server with JetStream; its monitoring port answers /healthz when ready."""

    def __init__(self, cwd: Path, name: str, port: int, monitor: int, args: list[str]) -> None:
        self.cwd, self.name, self.port, self.monitor, self.args = cwd, name, port, monitor, args
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.cwd / f"{self.name}.log", "a")
        self.proc = subprocess.Popen(
            [NATS, "-js", "-n", self.name, "-a", "127.0.0.1", "-p", str(self.port)]
            + ["-m", str(self.monitor), "-sd", str(self.cwd / self.name), *self.args],
            stdout=log,
            stderr=log,
        )

    def healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.monitor}/healthz"
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Nats:
    """A JetStream deployment: one node, or a cluster of `nodes` on loopback."""

    def __init__(self, cwd: Path, nodes: int = 1, extra: list[str] | None = None) -> None:
        need(NATS, "nats-server")
        ports = _free_ports(3 * nodes)
        self.nodes: list[NatsNode] = []
        routes = ",".join(f"nats://127.0.0.1:{ports[2 * nodes + i]}" for i in range(nodes))
        for i in range(nodes):
            args = list(extra or [])
            if nodes > 1:
                here = routes.split(",")[i]
                args += ["--cluster_name", "c", "--cluster", here, "--routes", routes]
            self.nodes.append(NatsNode(cwd, f"n{i + 1}", ports[i], ports[nodes + i], args))
        for node in self.nodes:
            node.start()
        try:
            self.wait_healthy()
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.nodes[0].port}"

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while not node.healthy():
                assert node.proc and node.proc.poll() is None, f"nats-server {node.name} exited"
                assert time.monotonic() < deadline, f"nats-server {node.name} not healthy"
                time.sleep(0.05)

    def close(self) -> None:
        for node in self.nodes:
            node.stop()


class Mosquitto:
    """A mosquitto broker on a free port (anonymous, or with one user), ready once it accepts."""

    def __init__(
        self,
        cwd: Path,
        user: tuple[str, str] | None = None,
        persistence: bool = False,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        need(MOSQUITTO, "mosquitto")
        self.port = unused_port()
        self.cwd = cwd
        self.tls = tls is not None
        conf = [f"listener {self.port} 127.0.0.1"]
        if tls is not None:  # this listener speaks TLS only, with that certificate and key
            conf += [f"certfile {tls[0]}", f"keyfile {tls[1]}"]
        if persistence:  # sessions and their queued QoS 1/2 messages saved on exit, reloaded
            conf += ["persistence true", f"persistence_location {cwd}/"]
        else:
            conf.append("persistence false")
        conf += ["max_queued_messages 0", "max_inflight_messages 0"]  # no limits: the test counts
        conf.append(f"user {getpass.getuser()}")  # as root it would read its files as 'mosquitto'
        if user is None:
            conf.append("allow_anonymous true")
        else:
            passwords = cwd / "mosquitto.passwd"
            passwords.write_text("")
            subprocess.run(
                ["mosquitto_passwd", "-b", str(passwords), *user], check=True, capture_output=True
            )
            conf += ["allow_anonymous false", f"password_file {passwords}"]
        self.conf = cwd / "mosquitto.conf"
        self.conf.write_text("\n".join(conf) + "\n")
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.cwd / "mosquitto.log", "a")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.proc.poll() is None, "mosquitto exited"
                assert time.monotonic() < deadline, "mosquitto does not accept connections"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    close = stop


def read_stream(
    url: str, stream: str = "SAMPLES", ca: Path | None = None
) -> list[tuple[str, dict]]:
    """Every message of a JetStream stream, in stream order: (message id, sample) per sample;
    `ca`: over TLS, trusting that CA file."""

    async def read() -> list[tuple[str, dict]]:
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig

        tls = ssl.create_default_context(cafile=str(ca)) if ca else None
        nc = await nats.connect(url, tls=tls)
        try:
            js = nc.jetstream()
            total = (await js.stream_info(stream)).state.messages
            sub = await js.pull_subscribe(
                ">", stream=stream, config=ConsumerConfig(ack_policy=AckPolicy.NONE)
            )
            out: list[tuple[str, dict]] = []
            got = 0
            while got < total:
                for msg in await sub.fetch(5000, timeout=5):
                    got += 1
                    body = json.loads(msg.data)
                    for sample in body if isinstance(body, list) else [body]:
                        out.append(((msg.headers or {}).get("Nats-Msg-Id", ""), sample))
            return out
        finally:
            await nc.close()

    for attempt in range(5):  # a cluster that lost a node may time out while it elects
        try:
            return asyncio.run(read())
        except TimeoutError:
            if attempt == 4:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


class MqttReader:
    """A real MQTT subscriber (paho) collecting every sample under `prefix/#`; `persistent`:
    an MQTT 3.1.1 session kept by the broker (clean session false), reconnecting quickly;
    `ca`: over TLS, trusting that CA file."""

    def __init__(
        self,
        port: int,
        prefix: str = "samples",
        qos: int = 1,
        persistent: bool = False,
        ca: Path | None = None,
    ) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.samples: list[dict] = []
        self.messages = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"reader-{prefix}-{port}",
            clean_session=not persistent,
        )
        if persistent:
            self.client.reconnect_delay_set(0.1, 0.5)
        if ca is not None:
            self.client.tls_set_context(ssl.create_default_context(cafile=str(ca)))
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{prefix}/#", qos)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "the MQTT reader could not subscribe"

    def _on_message(self, client, userdata, msg) -> None:
        body = json.loads(msg.payload)
        with self._lock:
            self.samples.extend(body if isinstance(body, list) else [body])
            self.messages += 1

    def pause(self) -> None:
        """Stop the network thread (and its reconnecting): the subscriber stays away."""
        self.client.loop_stop()

    def come_back(self) -> None:
        """Connect again with the same client id (its session) and resume the thread."""
        self.client.reconnect()
        self.client.loop_start()

    def received(self) -> set[tuple[str, int]]:
        """Every (device, seq) received so far, each once."""
        with self._lock:
            return {(s["device"], s["seq"]) for s in self.samples}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def by_device(samples: list[dict]) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = collections.defaultdict(list)
    for sample in samples:
        seqs[sample["device"]].append(sample["seq"])
    return seqs


def _local_kafka():
    """brokers/kafka.py, the launcher users run, as a module."""
    module = sys.modules.get("local_kafka")
    if module is None:
        spec = importlib.util.spec_from_file_location("local_kafka", REPO / "brokers" / "kafka.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["local_kafka"] = module
        spec.loader.exec_module(module)
    return module


def need_kafka() -> None:
    """Skip unless Java is there and the broker's jars are (.ci/run fetches them)."""
    local = _local_kafka()
    if shutil.which("java") is None:
        pytest.skip("java is not installed (apt-get install openjdk-17-jre-headless)")
    if not any(local.LIB.glob("kafka_2.13-*.jar")):
        if shutil.which("mvn") is None:
            pytest.skip("the Kafka broker's jars are missing: python brokers/kafka.py --fetch-only")
        local.ensure_jars()


class Kafka:
    """A real Kafka cluster (KRaft, `nodes` combined broker+controller nodes) on free ports,
    started and ready (every node lists every broker); `tls`: SSL listeners with that
    certificate and key; `user`: SASL/SCRAM listeners knowing that user and password."""

    def __init__(
        self,
        cwd: Path,
        nodes: int = 1,
        tls: tuple[Path, Path] | None = None,
        user: tuple[str, str] | None = None,
    ) -> None:
        need_kafka()
        local = _local_kafka()
        per_node = 2 + bool(tls) + bool(user) + bool(tls and user)
        self.cluster = local.Cluster(
            cwd / "kafka",
            nodes,
            tls=tls,
            user=user,
            heap="384m",
            ports=_free_ports(per_node * nodes),
        )
        self.started_in = self.cluster.start()

    def url(self, listener: str = "PLAINTEXT") -> str:
        scheme = "kafka+ssl" if "SSL" in listener else "kafka"
        return f"{scheme}://{self.cluster.bootstrap(listener)}"

    @property
    def bootstrap(self) -> str:
        return self.cluster.bootstrap()

    @property
    def nodes(self) -> list:
        return self.cluster.nodes

    def restart(self, node) -> None:
        self.cluster.restart(node)

    def close(self) -> None:
        self.cluster.close()


def read_topic(
    bootstrap: str, topic: str = "samples", timeout: float = 30.0
) -> list[tuple[dict, dict]]:
    """Every record of a topic as a read_committed consumer sees it, partition by partition
    in offset order: (headers, sample) per sample (a batch record gives each of its samples,
    with the record's headers)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "test-reader",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        open_ = set(partitions)
        out: dict[int, list[tuple[dict, dict]]] = {p: [] for p in partitions}
        deadline = time.monotonic() + timeout
        while open_:
            assert time.monotonic() < deadline, f"partitions {open_} of {topic} not read to the end"
            for record in consumer.consume(10_000, timeout=1):
                error = record.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, error
                    open_.discard(record.partition())
                    continue
                headers = {k: v.decode() for k, v in record.headers() or []}
                body = json.loads(record.value())
                for sample in body if isinstance(body, list) else [body]:
                    out[record.partition()].append((headers, sample))
        return [item for p in sorted(out) for item in out[p]]
    finally:
        consumer.close()


class Prometheus:
    """A Prometheus server on a free port, scraping `targets` (a job name -> scrape config
    entries) every `interval`; ready once /-/ready answers."""

    def __init__(self, cwd: Path, jobs: dict[str, dict], interval: str = "1s") -> None:
        need(PROMETHEUS, "prometheus")
        self.port = unused_port()
        self.cwd = cwd
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [{"job_name": name, **job} for name, job in jobs.items()],
        }
        (cwd / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        log = open(cwd / "prometheus.log", "a")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cwd / 'prometheus.yml'}"]
            + [f"--storage.tsdb.path={cwd / 'tsdb'}"]
            + [f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 20
        while not self._ready():
            log_text = (cwd / "prometheus.log").read_text()[-2000:]
            assert self.proc.poll() is None, f"prometheus exited: {log_text}"
            assert time.monotonic() < deadline, "prometheus not ready"
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def query(self, promql: str) -> list[dict]:
        """The result of an instant query (its HTTP API), now."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]["result"]

    def targets(self) -> list[dict]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/targets", timeout=5) as r:
            return json.loads(r.read())["data"]["activeTargets"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
