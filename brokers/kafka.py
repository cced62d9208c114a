#!/usr/bin/env python3
"""A local Apache Kafka (KRaft) for a first try and for the tests: no Docker, no tarball.

    python brokers/kafka.py                  # one node on a free port, until Ctrl-C
    python brokers/kafka.py --port 9092      # on 9092
    python brokers/kafka.py --nodes 3        # a three-node quorum (replication factor 3)

The broker comes from Maven Central: brokers/kafka/pom.xml names it, and the jars are fetched
once into brokers/kafka/lib/ (`mvn dependency:copy-dependencies`, done here when missing).
Each node gets its folder in a temporary directory (removed at the end): server.properties,
storage formatted by `kafka.tools.StorageTool`, and broker.log. A node counts as started
when it answers a Metadata request listing every node of the cluster. Needs Java 17+ (and
Maven for the first fetch). Only the standard library, so the tests can use it as it is.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent / "kafka"
LIB = HERE / "lib"
POM = HERE / "pom.xml"
LOG_CONFIG = HERE / "log4j2.properties"
# JVM settings: a small heap with the serial collector (one node of a test or a first try
# needs no more), and, unless asked for full speed, only the quick JIT compiler, which
# halves the start on a busy machine (4-8 s instead of 11-13 s on two loaded cores).
JVM = ["-XX:+UseSerialGC", "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={LOG_CONFIG}"]
QUICK_START = ["-XX:TieredStopAtLevel=1"]


class BrokerError(RuntimeError):
    """The broker cannot be fetched, formatted or started; the message says why."""


def ensure_jars(lib: Path = LIB) -> Path:
    """The folder of the broker's jars, fetched with Maven if it holds none yet."""
    if any(lib.glob("kafka_2.13-*.jar")):
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("maven (mvn) is not installed: it fetches the broker's jars once")
    run = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies"]
        + ["-DincludeScope=runtime", f"-DoutputDirectory={lib}"],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0 or not any(lib.glob("kafka_2.13-*.jar")):
        tail = (run.stdout + run.stderr).strip().splitlines()[-5:]
        raise BrokerError("cannot fetch the broker's jars with maven: " + " | ".join(tail))
    return lib


def java() -> str:
    found = shutil.which("java")
    if found is None:
        raise BrokerError("java is not installed: the Kafka broker needs Java 17 or later")
    return found


def free_port() -> int:
    """A port the kernel has just handed out on 127.0.0.1 (and taken back)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_cluster_id() -> str:
    """16 random bytes, URL-safe base64 without padding: what StorageTool expects. Never
    one starting with `-` (1 in 64 would): StorageTool's parser takes it for an option, and
    Kafka's own Uuid.randomUuid() draws again for the same reason."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass
class Node:
    """One broker+controller of a KRaft cluster, in its own folder."""

    home: Path
    node_id: int
    port: int  # PLAINTEXT, also between the brokers
    controller_port: int
    ssl_port: int = 0  # SSL (and SASL_SSL on sasl_ssl_port) when the cluster has a certificate
    sasl_port: int = 0  # SASL_PLAINTEXT (SCRAM) when the cluster has a user
    sasl_ssl_port: int = 0
    heap: str = "512m"
    jvm: list[str] = field(default_factory=list)  # more JVM options
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    def listeners(self) -> list[tuple[str, int]]:
        named = [("PLAINTEXT", self.port)]
        named += [("SSL", self.ssl_port)] if self.ssl_port else []
        named += [("SASL_PLAINTEXT", self.sasl_port)] if self.sasl_port else []
        named += [("SASL_SSL", self.sasl_ssl_port)] if self.sasl_ssl_port else []
        return named

    def start(self) -> None:
        log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            [java(), f"-Xmx{self.heap}", f"-Xms{self.heap}", *JVM, *self.jvm]
            + ["-cp", f"{ensure_jars()}/*", "kafka.Kafka", str(self.properties_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal reaches the launcher only
        )
        log.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Signal the broker and wait for it to exit (SIGKILL after `timeout` s)."""
        if not self.alive:
            return
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def answers(self, nodes: int) -> bool:
        """The broker answers a Metadata request, listing `nodes` brokers."""
        try:
            return brokers_listed("127.0.0.1", self.port) >= nodes
        except (OSError, struct.error, ValueError):
            return False


def brokers_listed(host: str, port: int, timeout: float = 2.0) -> int:
    """How many live brokers a broker lists in its answer to a Metadata request (v4, the
    oldest Kafka 4 serves); raises OSError if it does not answer."""
    client = b"local-kafka"
    body = struct.pack(">hhih", 3, 4, 1, len(client)) + client + struct.pack(">ib", -1, 0)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(body)) + body)
        head = _read(s, 4)
        answer = _read(s, struct.unpack(">i", head)[0])
    correlation, _throttle, brokers = struct.unpack(">iii", answer[:12])
    if correlation != 1:
        raise ValueError("not an answer to this request")
    return brokers


def _read(s: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = s.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


class Cluster:
    """A KRaft cluster of `nodes` combined broker+controller nodes on 127.0.0.1, in `home`.

    One node uses a dynamic quorum (`StorageTool format --standalone`); several use static
    voters. Internal topics (offsets, transactions, share state) get the cluster's size as
    replication factor, up to 3, and min.insync.replicas 2 from three nodes on, so that a
    transactional producer can start on one node and survive the loss of one of three.
    `tls` is a certificate and its key (PEM files) for SSL listeners; `user` a SCRAM user
    and password (SCRAM-SHA-256 and -512) for SASL listeners. `properties` override any
    broker setting. `quick_start` runs the JVM with the quick JIT compiler only: it starts
    twice as fast, and runs slower (not for benchmarks).
    """

    def __init__(
        self,
        home: Path,
        nodes: int = 1,
        port: int = 0,
        tls: tuple[Path, Path] | None = None,
        user: tuple[str, str] | None = None,
        heap: str = "512m",
        properties: dict[str, str] | None = None,
        ports: list[int] | None = None,
        quick_start: bool = True,
    ) -> None:
        if nodes < 1:
            raise BrokerError(f"a cluster needs at least one node, got {nodes}")
        self.home = home
        self.cluster_id = new_cluster_id()
        self.tls, self.user = tls, user
        self.quick_start = quick_start
        self.properties = dict(properties or {})
        # Each node needs 2 ports, 3 with TLS, 4 with SCRAM, 5 with both.
        per_node = 2 + (1 if tls else 0) + (1 if user else 0) + (1 if tls and user else 0)
        given = list(ports or [])
        if port:
            given.insert(0, port)
        taken: set[int] = set(given)
        while len(given) < per_node * nodes:
            candidate = free_port()
            if candidate not in taken:
                taken.add(candidate)
                given.append(candidate)
        pick = iter(given)
        self.nodes: list[Node] = []
        for i in range(1, nodes + 1):
            jvm = QUICK_START if quick_start else []
            node = Node(home / f"node{i}", i, next(pick), 0, heap=heap, jvm=jvm)
            self.nodes.append(node)
        for node in self.nodes:  # client ports first, so `port` is node 1's PLAINTEXT port
            node.controller_port = next(pick)
            node.ssl_port = next(pick) if tls else 0
            node.sasl_port = next(pick) if user else 0
            node.sasl_ssl_port = next(pick) if tls and user else 0
        for node in self.nodes:
            node.home.mkdir(parents=True, exist_ok=True)
            node.properties_file.write_text(self._properties(node))

    def bootstrap(self, listener: str = "PLAINTEXT") -> str:
        """HOST:PORT,... of every node's listener of that name."""
        return ",".join(
            f"127.0.0.1:{port}"
            for n in self.nodes
            for name, port in n.listeners()
            if name == listener
        )

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap()}"

    def _properties(self, node: Node) -> str:
        count = len(self.nodes)
        replicas = min(3, count)
        isr = 2 if count >= 3 else 1
        listeners = [*node.listeners(), ("CONTROLLER", node.controller_port)]
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "listeners": ",".join(f"{n}://127.0.0.1:{p}" for n, p in listeners),
            "advertised.listeners": ",".join(f"{n}://127.0.0.1:{p}" for n, p in node.listeners()),
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
            "SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
            "log.dirs": str(node.home / "data"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",  # clients create what they use
            "offsets.topic.replication.factor": str(replicas),
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": str(isr),
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": str(replicas),
            "share.coordinator.state.topic.min.isr": str(isr),
            "group.initial.rebalance.delay.ms": "0",
        }
        if count == 1:
            props["controller.quorum.bootstrap.servers"] = f"127.0.0.1:{node.controller_port}"
        else:
            props["controller.quorum.voters"] = ",".join(
                f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes
            )
        if self.tls:
            keystore = node.home / "keystore.pem"  # the key and its certificate, one PEM file
            cert, key = self.tls
            keystore.write_text(Path(key).read_text() + Path(cert).read_text())
            props.update({"ssl.keystore.type": "PEM", "ssl.keystore.location": str(keystore)})
        if self.user:
            props["sasl.enabled.mechanisms"] = "SCRAM-SHA-256,SCRAM-SHA-512"
            login = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            for name in ("sasl_plaintext", "sasl_ssl"):
                for mechanism in ("scram-sha-256", "scram-sha-512"):
                    props[f"listener.name.{name}.{mechanism}.sasl.jaas.config"] = login
        props.update(self.properties)
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def format(self) -> None:
        """Format every node's storage (in parallel: each is a JVM start)."""
        runs = []
        for node in self.nodes:
            args = [java(), *JVM, *QUICK_START, "-cp", f"{ensure_jars()}/*"]
            args += ["kafka.tools.StorageTool"]
            args += ["format", "-t", self.cluster_id, "-c", str(node.properties_file)]
            if len(self.nodes) == 1:
                args.append("--standalone")
            if self.user:
                name, password = self.user
                for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                    args += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
            runs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        for node, run in zip(self.nodes, runs, strict=True):
            out = run.communicate(timeout=120)[0].decode(errors="replace").strip()
            if run.returncode != 0:
                raise BrokerError(f"cannot format node {node.node_id}: {out.splitlines()[-1:]}")

    def start(self, timeout: float = 90.0) -> float:
        """Format, start every node and wait until each answers; the seconds it took."""
        began = time.monotonic()
        ensure_jars()
        self.format()
        for node in self.nodes:
            node.start()
        try:
            self.wait(timeout)
        except BaseException:
            self.close()
            raise
        return time.monotonic() - began

    def wait(self, timeout: float = 90.0, nodes: list[Node] | None = None) -> None:
        """Until every node (or those given) answers listing all the cluster's brokers."""
        deadline = time.monotonic() + timeout
        for node in nodes or self.nodes:
            while not node.answers(len(self.nodes)):
                if not node.alive:
                    raise BrokerError(f"node {node.node_id} exited: {self.tail(node)}")
                if time.monotonic() > deadline:
                    raise BrokerError(f"node {node.node_id} not ready in {timeout:.0f} s")
                time.sleep(0.1)

    def restart(self, node: Node, timeout: float = 90.0) -> None:
        node.start()
        self.wait(timeout, [node])

    def tail(self, node: Node, lines: int = 3) -> str:
        try:
            text = node.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " | ".join(text[-lines:]) or "no log"

    def close(self) -> None:
        """Stop every node: SIGTERM to all at once, then wait (a cluster stops together)."""
        for node in self.nodes:
            if node.alive:
                assert node.proc is not None
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop()

    def rss_mb(self) -> float:
        """Resident memory of all the nodes' JVMs, in MiB (from /proc)."""
        total = 0
        for node in self.nodes:
            if node.alive:
                assert node.proc is not None
                try:
                    status = Path(f"/proc/{node.proc.pid}/status").read_text()
                except OSError:
                    continue
                total += next(
                    int(line.split()[1])
                    for line in status.splitlines()
                    if line.startswith("VmRSS:")
                )
        return total / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="brokers/kafka.py", description="Run a local Apache Kafka (KRaft) until Ctrl-C."
    )
    parser.add_argument("--nodes", type=int, default=1, help="nodes in the cluster (default 1)")
    parser.add_argument("--port", type=int, default=0, help="first node's port (default: free)")
    parser.add_argument("--heap", default="512m", help="JVM heap per node (default 512m)")
    parser.add_argument(
        "--full-speed",
        action="store_true",
        help="the JVM's optimising compiler too: slower start, faster broker (benchmarks)",
    )
    parser.add_argument("--dir", type=Path, help="keep the nodes' folders here (default: temp)")
    parser.add_argument("--ready-file", type=Path, help="write the bootstrap servers here, as JSON")
    parser.add_argument("--fetch-only", action="store_true", help="fetch the jars and exit")
    args = parser.parse_args(argv)
    try:
        ensure_jars()
        if args.fetch_only:
            print(f"broker jars in {LIB}")
            return 0
        home = args.dir or Path(tempfile.mkdtemp(prefix="local-kafka-"))
        home.mkdir(parents=True, exist_ok=True)
        cluster = Cluster(
            home, args.nodes, args.port, heap=args.heap, quick_start=not args.full_speed
        )
    except BrokerError as exc:
        print(f"kafka: error: {exc}", file=sys.stderr)
        return 3
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        took = cluster.start()
        print(
            f"kafka {len(cluster.nodes)} node(s) ready in {took:.1f} s at {cluster.url} "
            f"(logs in {home}); Ctrl-C stops it",
            flush=True,
        )
        if args.ready_file:
            args.ready_file.write_text(
                json.dumps(
                    {"bootstrap": cluster.bootstrap(), "url": cluster.url, "pid": os.getpid()}
                )
            )
        while not stop and all(n.alive for n in cluster.nodes):
            time.sleep(0.2)
        if not stop:
            print("kafka: error: a node exited; see its broker.log", file=sys.stderr)
            return 1
        return 0
    except BrokerError as exc:
        print(f"kafka: error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.close()
        if args.ready_file:
            args.ready_file.unlink(missing_ok=True)
        if args.dir is None:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
