"""A real multi-host deployment on this machine: producers, logger and outsiders in network
namespaces of their own, joined by veth pairs to a bridge in a "switch" namespace.

Every namespace, link and address is made by the fixture and removed by it, even when a test
fails; nothing touches the root namespace's network, and traffic stays on 10.77.0.0/24 inside
the namespaces. Needs root and iproute2 (`ip netns`); the module is skipped otherwise.

The deployment recipe under test: one keys directory (`python -m producer keys`) copied to
every host, the same comma lists of endpoints everywhere (each producer binds its own entry,
loggers and broadcasters connect to all of them).
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common import schema
from conftest import REPO, wait_ready, wait_until

pytestmark = pytest.mark.slow

SUBNET = "10.77.0"
RATE = 50
DEVICES = 8
FLEET = [
    *("--seed", "7", "--devices", str(DEVICES), "--rate", str(RATE)),
    *("--start", "2025-08-04T00:00:00", "--history", "120"),
]
CUT_SECONDS = 10.0
_runs = itertools.count(1)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


def endpoints(hosts: list[Host], port: int) -> str:
    return ",".join(f"tcp://{h.address}:{port}" for h in hosts)


@pytest.fixture(scope="module")
def namespaces_work() -> None:
    """Skip unless this is root on Linux with iproute2, and a network namespace can be made."""
    if not sys.platform.startswith("linux"):
        pytest.skip("network namespaces are Linux only")
    if os.geteuid() != 0:
        pytest.skip("multi-host tests need root for `ip netns`")
    if shutil.which("ip") is None:
        pytest.skip("multi-host tests need iproute2's `ip`")
    probe = f"mh{os.getpid()}-probe"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        pytest.skip(f"`ip netns add` does not work here: {made.stderr.strip()}")
    try:  # the switch needs a bridge and veth pairs too
        for link in (["br0", "type", "bridge"], ["v0", "type", "veth", "peer", "v1"]):
            added = ip("-n", probe, "link", "add", *link, check=False)
            if added.returncode != 0:
                pytest.skip(f"`ip link add {' '.join(link)}` fails: {added.stderr.strip()}")
    finally:
        ip("netns", "del", probe, check=False)


@dataclass
class HostProc:
    """`python -m module args` inside a host's namespace, stderr in a file of the host's."""

    host: Host
    name: str
    popen: subprocess.Popen
    ready_file: Path
    log: Path
    info: dict = field(default_factory=dict)

    def ready(self, timeout: float = 20.0) -> dict:
        """The ready file's contents once the process serves (`ip netns exec` execs, so the
        pid in the file is the one we started)."""
        self.info = wait_ready(self.ready_file, self.popen, timeout, self.stderr)
        return self.info

    def stderr(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then the exit status (killed and failed if it takes over `timeout`)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
            raise AssertionError(f"{self.name} did not exit within {timeout}s of SIGTERM") from None


@dataclass
class Host:
    """One namespace on the switch: an address, a working directory, its processes."""

    net: Net
    name: str
    ns: str
    address: str
    port: str  # the veth end in the switch namespace
    cwd: Path

    def run(self, module: str, *args: str) -> HostProc:
        """Start `python -m module args` here with a ready file (not waited for)."""
        index = len(self.net.procs)
        ready = self.cwd / "ready" / f"{module}-{index}.json"
        log = self.cwd / f"{module}-{index}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
        env.pop("HONCHO_PROCESS_NAME", None)
        env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        with open(log, "w") as err:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, "-m", module]
                + ["--ready-file", str(ready), *args],
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        proc = HostProc(self, module, popen, ready, log)
        self.net.procs.append(proc)
        return proc

    def python(self, code: str, *args: str, timeout: float = 30.0) -> str:
        """Run a Python snippet here to the end; its stdout."""
        result = subprocess.run(
            ["ip", "netns", "exec", self.ns, sys.executable, "-c", code, *args],
            cwd=self.cwd,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def link(self, up: bool) -> None:
        """Plug this host's cable into the switch, or pull it out."""
        ip("-n", self.net.switch, "link", "set", self.port, "up" if up else "down")


class Net:
    """A switch namespace with a bridge, and hosts plugged into it by veth pairs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix = f"mh{os.getpid()}-{next(_runs)}"
        self.switch = f"{self.prefix}-switch"
        self.namespaces: list[str] = []
        self.procs: list[HostProc] = []
        self._add_namespace(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")

    def _add_namespace(self, ns: str) -> None:
        ip("netns", "add", ns)
        self.namespaces.append(ns)
        ip("-n", ns, "link", "set", "lo", "up")

    def host(self, name: str, last_octet: int, keys: Path | None = None) -> Host:
        """A new host at 10.77.0.N with its own directory (and a copy of `keys`, if given)."""
        ns = f"{self.prefix}-{name}"
        self._add_namespace(ns)
        port = f"p{last_octet}"
        ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "eth0", "netns", ns)
        ip("-n", self.switch, "link", "set", port, "master", "br0")
        ip("-n", self.switch, "link", "set", port, "up")
        address = f"{SUBNET}.{last_octet}"
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        cwd = self.root / name
        cwd.mkdir()
        if keys is not None:
            shutil.copytree(keys, cwd / "keys")
        return Host(self, name, ns, address, port, cwd)

    def teardown(self) -> None:
        """Kill every process started here, and anything else left in our namespaces, then
        delete the namespaces (which deletes their veths and the bridge)."""
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.kill()
                proc.popen.wait(5)
        for ns in self.namespaces:
            pids = ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:  # only processes in a namespace this test made
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for ns in reversed(self.namespaces):
            ip("netns", "del", ns, check=False)
        left = [n for n in ip("netns", "list").stdout.split() if n.startswith(self.prefix)]
        assert not left, f"namespaces left behind: {left}"


@pytest.fixture
def net(namespaces_work, tmp_path: Path) -> Iterator[Net]:
    """An empty switch; every process and namespace is gone after the test, pass or fail."""
    network = Net(tmp_path)
    try:
        yield network
    finally:
        network.teardown()


def make_keys(directory: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "producer", "keys", "--dir", str(directory)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
        capture_output=True,
        timeout=30,
    )
    return directory


@dataclass
class Deployment:
    producers: list[Host]
    procs: list[HostProc]
    pub: str  # every producer's PUB endpoint, as a comma list
    catchup: str

    def logger_args(self) -> list[str]:
        return ["--zmq-pub", self.pub, "--zmq-catchup", self.catchup, "--flush-interval", "0.1"]


def deploy_producers(net: Net, keys: Path) -> Deployment:
    """prodA (shard 1/2) and prodB (2/2), CURVE on, the same endpoint lists on both."""
    hosts = [net.host("prodA", 1, keys), net.host("prodB", 2, keys)]
    # The whole list, not just the host's own endpoint: given one tcp endpoint, producer 2/2
    # would bind it moved along by common.shards.PORT_STRIDE (10.77.0.2:5566, not :5556).
    pub, catchup, control = (endpoints(hosts, port) for port in (5556, 5557, 5558))
    procs = [
        host.run(
            "producer",
            *("--shard", f"{i}/2", "--zmq-pub", pub, "--zmq-catchup", catchup),
            *("--zmq-control", control, "--curve-dir", "keys", *FLEET),
        )
        for i, host in enumerate(hosts, 1)
    ]
    for proc, host in zip(procs, hosts, strict=True):
        info = proc.ready()
        assert info["pub"] == f"tcp://{host.address}:5556", info  # its own entry of the list
    return Deployment(hosts, procs, pub, catchup)


def rows(path: Path) -> list[list[str]]:
    """The CSV's whole rows, split, without the header."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()[1:]
    return [row for row in csv.reader(lines) if len(row) == len(schema.COLUMNS)]


def seqs_by_device(path: Path) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for row in rows(path):
        found.setdefault(row[5], []).append(int(row[6]))
    return found


def verify(host: Host) -> subprocess.CompletedProcess:
    """`python -m logger verify` of the host's log; fails the test unless it exits 0."""
    report = subprocess.run(
        [sys.executable, "-m", "logger", "verify", "data/stream_log.csv"],
        cwd=host.cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stdout + report.stderr
    assert "recorded gaps (missing samples): none" in report.stdout, report.stdout
    assert f"{DEVICES} device(s)" in report.stdout, report.stdout
    return report


WATCH_CODE = r"""
import collections, json, sys, time
from websockets.sync.client import connect
url, devices, per_device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seqs, end = collections.defaultdict(list), time.monotonic() + 15
with connect(url, open_timeout=10, max_size=None) as ws:
    while time.monotonic() < end and (
        len(seqs) < devices or min(map(len, seqs.values())) < per_device
    ):
        sample = json.loads(ws.recv(timeout=max(0.01, end - time.monotonic())))
        seqs[sample["device"]].append(sample["seq"])
print(json.dumps(seqs))
"""


def test_logger_cut_off_for_ten_seconds_misses_nothing(net: Net, tmp_path: Path):
    """A logger whose link is cut for 10 s while two remote producers publish ends with every
    sample of all 8 devices exactly once and no hole where the cut was, while a broadcaster on
    a fourth host relays both producers' devices."""
    keys = make_keys(tmp_path / "keys")
    deployment = deploy_producers(net, keys)
    host = net.host("logger", 3, keys)
    logger = host.run("logger", *deployment.logger_args(), "--curve-dir", "keys")
    relay = net.host("broadcaster", 4, keys)
    broadcaster = relay.run(
        "broadcaster", "--zmq-pub", deployment.pub, "--curve-dir", "keys", "--ws-port", "0"
    )
    logger.ready()
    url = broadcaster.ready()["url"]
    log = host.cwd / "data" / "stream_log.csv"
    wait_until(
        lambda: len(seqs_by_device(log)) == DEVICES, timeout=20, message="not all 8 devices logged"
    )

    host.link(up=False)
    cut_at = time.monotonic()
    time.sleep(1.0)  # what was already on the wire or waiting for a flush is written
    before = seqs_by_device(log)
    cut_from = {device: max(s) for device, s in before.items()}
    # Meanwhile the broadcaster host, still on the network, relays both producers' devices.
    watched = json.loads(relay.python(WATCH_CODE, url, str(DEVICES), str(RATE)))
    # The scenario itself: the logger host stays off the network while the producers go on.
    time.sleep(max(0.0, CUT_SECONDS - (time.monotonic() - cut_at)))
    during = seqs_by_device(log)
    host.link(up=True)
    assert {d: max(s) for d, s in during.items()} == cut_from, "the cut let samples through"

    # Caught up: every device's log runs, without a hole, past the cut by 3 s of samples.
    # (A 10 s cut loses nothing on the wire: each PUB queues for its subscriber and TCP
    # retransmits once the link is back, so this logger needs no catch-up; the next test
    # makes it need one.)
    past_cut = {device: seq + int((CUT_SECONDS + 3) * RATE) for device, seq in cut_from.items()}

    def caught_up() -> bool:
        now = seqs_by_device(log)
        return all(
            max(now.get(d, [-1])) >= seq and len(set(now[d])) == max(now[d]) - min(now[d]) + 1
            for d, seq in past_cut.items()
        )

    wait_until(caught_up, timeout=45, interval=0.25, message="the logger did not catch up")
    assert logger.stop() == 0, logger.stderr()
    assert broadcaster.stop() == 0, broadcaster.stderr()
    for proc in deployment.procs:
        assert proc.stop() == 0, proc.stderr()

    assert sorted(watched) == [f"host-0{i}" for i in range(1, DEVICES + 1)], watched.keys()
    for device, seqs in watched.items():  # a second of each, in order, none lost or repeated
        assert len(seqs) >= RATE and seqs == list(range(seqs[0], seqs[0] + len(seqs))), device
    logged = seqs_by_device(log)
    assert sorted(logged) == [f"host-0{i}" for i in range(1, DEVICES + 1)]
    for device, seqs in logged.items():
        assert len(seqs) == len(set(seqs)), f"{device}: a seq logged twice"
        assert sorted(seqs) == list(range(min(seqs), max(seqs) + 1)), f"{device}: a hole"
        assert min(seqs) < cut_from[device] and max(seqs) >= past_cut[device]
    verify(host)


METRICS_CODE = r"""
import sys, urllib.request
print(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode())
"""


def metrics(host: Host, port: int) -> dict[str, float]:
    """A process's /metrics, read inside its host (it serves on that host's loopback)."""
    text = host.python(METRICS_CODE, str(port))
    pairs = (line.split() for line in text.splitlines() if line and not line.startswith("#"))
    return {name: float(value) for name, value in pairs}


def test_logger_restarted_while_cut_off_refills_from_both_histories(net: Net, tmp_path: Path):
    """A logger restarted while its link is down gets no answer at start, and once the link is
    back refills the 10 s it missed from both remote producers' histories, leaving no hole."""
    keys = make_keys(tmp_path / "keys")
    deployment = deploy_producers(net, keys)
    host = net.host("logger", 3, keys)
    args = [*deployment.logger_args(), "--curve-dir", "keys", "--metrics-port", "any"]
    first = host.run("logger", *args)
    first.ready()
    log = host.cwd / "data" / "stream_log.csv"
    wait_until(
        lambda: len(seqs_by_device(log)) == DEVICES, timeout=20, message="not all 8 devices logged"
    )

    host.link(up=False)
    cut_at = time.monotonic()
    assert first.stop() == 0, first.stderr()
    cut_from = {device: max(s) for device, s in seqs_by_device(log).items()}
    second = host.run("logger", *args)
    info = second.ready()  # after its start-up catch-up found nobody (2 s)
    assert info["caught_up"] is None, info
    assert "no answer from the catch-up endpoint" in second.log.read_text()
    # The scenario: the restarted logger stays off the network for the rest of the 10 s; its
    # new connections will carry only what the producers publish from then on.
    time.sleep(max(0.0, CUT_SECONDS - (time.monotonic() - cut_at)))
    host.link(up=True)
    past_cut = {device: seq + int((CUT_SECONDS + 3) * RATE) for device, seq in cut_from.items()}

    def caught_up() -> bool:
        now = seqs_by_device(log)
        return all(max(now.get(d, [-1])) >= seq for d, seq in past_cut.items())

    wait_until(caught_up, timeout=45, interval=0.25, message="the logger did not catch up")
    figures = metrics(host, info["metrics_port"])
    assert second.stop() == 0, second.stderr()
    for proc in deployment.procs:
        assert proc.stop() == 0, proc.stderr()

    assert figures["stream_catchup_requests_total"] >= 2, figures  # at start, and the refill
    assert figures["stream_gaps_total"] == 0, figures
    logged = seqs_by_device(log)
    assert sorted(logged) == [f"host-0{i}" for i in range(1, DEVICES + 1)]
    for device, seqs in logged.items():
        assert sorted(seqs) == list(range(min(seqs), max(seqs) + 1)), f"{device}: hole or twice"
    verify(host)


SUBSCRIBE_CODE = r"""
import json, socket, sys, time
import zmq
from common import schema
endpoints, seconds = sys.argv[1].split(","), float(sys.argv[2])
reachable = []
for endpoint in endpoints:  # the network lets us through: only the keys can stop us
    host, port = endpoint[len("tcp://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5):
        reachable.append(endpoint)
context = zmq.Context()
sub = context.socket(zmq.SUB)
sub.linger = 0
sub.setsockopt(zmq.SUBSCRIBE, schema.TOPIC)
for endpoint in endpoints:
    sub.connect(endpoint)
count, end = 0, time.monotonic() + seconds
while (left := end - time.monotonic()) > 0:
    if sub.poll(int(left * 1000) + 1):
        count += len(schema.decode(sub.recv_multipart()))
sub.close()
context.term()
print(json.dumps({"reachable": reachable, "samples": count}))
"""


def test_hosts_without_the_keys_get_nothing(net: Net, tmp_path: Path):
    """On the same switch, a logger with other CURVE keys and a subscriber with none receive
    no sample, while the logger with the deployment's keys does."""
    keys = make_keys(tmp_path / "keys")
    deployment = deploy_producers(net, keys)
    legit = net.host("logger", 3, keys)
    legit.run("logger", *deployment.logger_args(), "--curve-dir", "keys").ready()
    legit_log = legit.cwd / "data" / "stream_log.csv"
    wait_until(lambda: len(rows(legit_log)) > 50, timeout=20, message="the real logger got none")

    intruder = net.host("intruder", 9)
    make_keys(intruder.cwd / "other")
    intruder.run("logger", *deployment.logger_args(), "--curve-dir", "other").ready()
    intruder_log = intruder.cwd / "data" / "stream_log.csv"
    before = len(rows(legit_log))
    # Both outsiders listen over the same seconds (the snippet runs 4 s) as the real logger.
    keyless = json.loads(intruder.python(SUBSCRIBE_CODE, deployment.pub, "4"))
    assert keyless == {"reachable": deployment.pub.split(","), "samples": 0}
    assert len(rows(legit_log)) > before + RATE, "the real logger stopped receiving"
    assert rows(intruder_log) == [], "a logger with the wrong keys logged samples"
