"""Several broadcasters on one port (SO_REUSEPORT): the kernel spreads the clients over them,
each relays the whole stream, and the clients of one that dies move to the others."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from websockets.sync.client import connect

from conftest import REPO, Pipeline, Proc, ready_info, unused_port, wait_until


def health(http_url: str) -> tuple[int, dict]:
    """GET /healthz on a new connection: (status, body); the body names the answering pid."""
    try:
        with urllib.request.urlopen(http_url + "/healthz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503 while stale, with the same body
        return exc.code, json.loads(exc.read())


def clients_by_pid(
    http_url: str, done: Callable[[dict[int, int]], bool], timeout: float
) -> dict[int, int]:
    """Ask /healthz until `done(latest clients per pid)`: each GET is a new connection, which
    the kernel gives to any of the broadcasters sharing the port, so asking often enough
    reaches every one of them."""
    latest: dict[int, int] = {}

    def ask() -> bool:
        _, body = health(http_url)
        latest[body["pid"]] = body["clients"]
        return done(latest)

    wait_until(ask, timeout=timeout, interval=0.02, message=f"/healthz kept saying {latest}")
    return dict(latest)


def two_broadcasters(pipeline: Pipeline) -> tuple[Proc, Proc, str]:
    """A producer (20 Hz, 2 devices) and two broadcasters on one port: (first, second, url)."""
    pipeline.producer("--rate", "20", "--devices", "2")
    # 127.0.0.1, not localhost: with port 0 each address family gets a port of its own, and
    # the second broadcaster is to share the first one's port, whatever localhost resolves to.
    first = pipeline.broadcaster("--ws-host", "127.0.0.1")
    port = first.info["ws_port"]
    second = pipeline.start(
        "broadcaster",
        *("--zmq-pub", pipeline.zmq, "--zmq-catchup", pipeline.catchup),
        *("--ws-host", "127.0.0.1", "--ws-port", str(port)),
    )
    info = second.ready()
    assert info["ws_port"] == port and info["url"] == first.info["url"], (first.info, info)
    return first, second, first.info["url"]


def contiguous(samples: list[dict]) -> dict[str, list[int]]:
    """The seqs per device, asserting that none is missing or repeated."""
    seqs: dict[str, list[int]] = defaultdict(list)
    for sample in samples:
        seqs[sample["device"]].append(sample["seq"])
    for device, got in seqs.items():
        assert got == list(range(got[0], got[0] + len(got))), f"{device}: {got}"
    return seqs


def enough(samples: list[dict], each: int = 10) -> bool:
    """Both devices' samples, `each` of them or more, none missing (asserted)."""
    seqs = contiguous(samples)
    return set(seqs) == {"host-01", "host-02"} and min(map(len, seqs.values())) >= each


def test_two_broadcasters_share_one_port_and_each_relays_everything(pipeline: Pipeline):
    """Forty connections to one port are spread over both broadcasters, and every connection
    gets both devices' samples without a gap, the same samples whichever broadcaster sent them."""
    first, second, url = two_broadcasters(pipeline)
    http_url = url.replace("ws://", "http://").rstrip("/")
    pids = {first.popen.pid, second.popen.pid}
    n = 40
    with ExitStack() as stack:
        connections = [
            stack.enter_context(connect(url, open_timeout=10, max_size=None)) for _ in range(n)
        ]
        counts = clients_by_pid(
            http_url,
            lambda seen: set(seen) == pids and sum(seen.values()) == n,
            timeout=15,
        )
        assert all(counts[pid] > 0 for pid in pids), counts
        print(f"clients per broadcaster: {counts}")
        # /metrics answers on the shared port too, with the figures of whichever answered.
        with urllib.request.urlopen(http_url + "/metrics", timeout=5) as response:
            text = response.read().decode()
        line = next(x for x in text.splitlines() if x.startswith("stream_clients "))
        assert int(float(line.split()[1])) in counts.values(), (line, counts)

        seen: dict[tuple[str, int], str] = {}
        for ws in connections:
            samples: list[dict] = []
            deadline = time.monotonic() + 15
            while not enough(samples):
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"only {len(samples)} samples within 15 s"
                message = ws.recv(timeout=remaining)
                sample = json.loads(message)
                samples.append(sample)
                key = (sample["device"], sample["seq"])
                assert seen.setdefault(key, message) == message, "two versions of one sample"
    for proc in (first, second):
        assert proc.popen.poll() is None


def test_clients_of_a_killed_broadcaster_move_to_the_survivor(pipeline: Pipeline):
    """After kill -9 of one of two broadcasters on a port, its test clients reconnect to the
    other within a few seconds and go on receiving, while the survivor's /healthz stays 200."""
    first, second, url = two_broadcasters(pipeline)
    http_url = url.replace("ws://", "http://").rstrip("/")
    by_pid = {first.popen.pid: first, second.popen.pid: second}
    n = 8
    clients = [pipeline.start_script("clients/test_client.py", "--url", url) for _ in range(n)]
    for client in clients:
        client.wait_for(r"^Received: ", timeout=20, stream="out")
    counts = clients_by_pid(
        http_url, lambda seen: set(seen) == set(by_pid) and sum(seen.values()) == n, timeout=15
    )
    # The one with more clients dies: it has at least n/2, however the kernel spread them.
    victim_pid = max(counts, key=counts.get)
    survivor_pid = next(pid for pid in by_pid if pid != victim_pid)
    print(f"clients per broadcaster: {counts}; killing {victim_pid}")

    marks = {client: len(client.out) for client in clients}  # lines printed before the kill
    killed = time.monotonic()
    by_pid[victim_pid].kill()  # SIGKILL: no close frames, no clean-up

    def moved() -> bool:
        status, body = health(http_url)
        assert status == 200 and body["pid"] == survivor_pid, (status, body)
        return body["clients"] == n

    wait_until(moved, timeout=5, interval=0.05, message="the clients did not all come back")
    took = time.monotonic() - killed
    print(f"all {n} clients on the survivor {took:.2f} s after the kill")

    def received(client: Proc) -> list[dict]:
        """The samples of the client's current connection."""
        out = list(client.out)
        last = max(i for i, line in enumerate(out) if line.startswith("Connected to server"))
        return [json.loads(x.removeprefix("Received: ")) for x in out[last + 1 :]]

    # Everyone goes on receiving from the survivor, the moved ones on their new connection,
    # the others on their first one, without a gap: at 20 Hz, 10 samples per device soon.
    wait_until(
        lambda: all(enough(received(c)) and len(c.out) >= marks[c] + 20 for c in clients),
        timeout=10,
        message="a client stopped receiving",
    )
    moved_clients = [c for c in clients if any("reconnecting" in line for line in c.lines)]
    assert len(moved_clients) == counts[victim_pid], [c.lines for c in clients]
    for client in moved_clients:
        assert sum(x.startswith("Connected to server") for x in client.out) == 2
    health_status, body = health(http_url)
    assert health_status == 200 and body["pid"] == survivor_pid
    assert by_pid[survivor_pid].popen.poll() is None


def test_a_broadcaster_that_does_not_share_is_refused(pipeline: Pipeline):
    """--no-reuse-port on a port that broadcasters share stops with status 3 and one line."""
    first = pipeline.broadcaster("--ws-host", "127.0.0.1")
    port = first.info["ws_port"]
    loner = subprocess.run(
        [
            *(sys.executable, "-m", "broadcaster", "--zmq-pub", pipeline.zmq),
            *("--ws-host", "127.0.0.1", "--ws-port", str(port), "--no-reuse-port"),
        ],
        cwd=pipeline.cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert loner.returncode == 3, loner.stderr
    lines = loner.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}: address already in use" in lines[0], lines
    assert first.popen.poll() is None


def test_honcho_scales_every_part(tmp_path: Path):
    """`honcho start -c producer=2,logger=2,broadcaster=2` with the shipped Procfile runs:
    the producers share out the devices, two broadcasters answer on the same port, the two
    loggers' files hold every sample once (verify checks their union), and SIGTERM stops
    everything cleanly."""
    shutil.copy(REPO / "Procfile", tmp_path / "Procfile")
    ready = tmp_path / "ready"
    port = unused_port()
    (tmp_path / ".env").write_text(
        f"STREAM_ZMQ_PUB=ipc://{tmp_path}/samples.sock\n"
        f"STREAM_ZMQ_CATCHUP=ipc://{tmp_path}/catchup.sock\n"
        f"STREAM_ZMQ_CONTROL=ipc://{tmp_path}/control.sock\n"
        f"STREAM_WS_PORT={port}\n"
        "STREAM_RATE=10\nSTREAM_DEVICES=6\nSTREAM_FLUSH_INTERVAL=0.1\n"
        f"STREAM_READY_FILE={ready}/{{instance}}.json\n"
    )
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    for name in [k for k in env if k.startswith("STREAM_") or k == "HONCHO_PROCESS_NAME"]:
        del env[name]  # only the .env configures this pipeline
    log_path = tmp_path / "honcho.log"
    with open(log_path, "w") as log:
        honcho = subprocess.Popen(
            [os.path.join(bin_dir, "honcho"), "start", "-c", "producer=2,logger=2,broadcaster=2"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    names = [f"{kind}.{i}" for kind in ("producer", "logger", "broadcaster") for i in (1, 2)]
    client = None
    try:
        wait_until(
            lambda: (
                all(ready_info(ready / f"{name}.json") for name in names)
                or honcho.poll() is not None
            ),
            timeout=15,
            interval=0.02,
            message="not every process wrote its ready file: " + log_path.read_text(),
        )
        assert honcho.poll() is None, log_path.read_text()
        one, two = (ready_info(ready / f"broadcaster.{i}.json") for i in (1, 2))
        assert one["ws_port"] == two["ws_port"] == port, (one, two)
        assert one["pid"] != two["pid"]
        http_url = one["url"].replace("ws://", "http://").rstrip("/")
        clients_by_pid(http_url, lambda seen: set(seen) == {one["pid"], two["pid"]}, timeout=10)
        client = Proc(
            [str(REPO / "clients/test_client.py"), "--url", one["url"], "--count", "3"], tmp_path
        )
        assert client.popen.wait(15) == 0, client.lines
        assert sum(line.startswith("Received: ") for line in client.out) == 3
        producers = [ready_info(ready / f"producer.{i}.json") for i in (1, 2)]
        assert producers[0]["pub"] != producers[1]["pub"]
        logs = [tmp_path / "data" / f"stream_log.{i}-of-2.csv" for i in (1, 2)]
        wait_until(
            lambda: all(p.exists() and len(p.read_text().splitlines()) > 20 for p in logs),
            timeout=15,
        )
    finally:
        if client is not None:
            client.kill()
        honcho.send_signal(signal.SIGTERM)
        try:
            honcho.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait(5)
            raise AssertionError("honcho did not stop within 5 s of SIGTERM") from None
    output = log_path.read_text()
    for name in names:
        assert f"{name} stopped (rc=0)" in output, output
    assert honcho.returncode == 143, output  # honcho's own status after a SIGTERM: 128 + 15
    assert not list(ready.glob("*.json")), "a process left its ready file"
    assert "Traceback" not in output
    devices = [{line.split(",")[5] for line in p.read_text().splitlines()[1:]} for p in logs]
    assert not devices[0] & devices[1] and len(devices[0] | devices[1]) == 6
    audit = subprocess.run(
        [sys.executable, "-m", "logger", "verify", *map(str, logs)],
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert audit.returncode == 0, audit.stdout
