"""clients/test_client.py: the spec's output, --count, and reconnecting with backoff."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading

from conftest import REPO, Pipeline, wait_until

CLIENT = str(REPO / "clients/test_client.py")


def run_client(pipeline: Pipeline, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """The test client run to its end (it must exit by itself within `timeout` seconds)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    env.pop("HONCHO_PROCESS_NAME", None)
    return subprocess.run(
        [sys.executable, CLIENT, *args],
        cwd=pipeline.cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class StandIn:
    """A port the test holds from start to end: until `forward_to` is called nothing serves
    it (each connection is reset at once and counted), then it relays to the real server.

    So the client can be started before the broadcaster exists without anyone guessing a
    free port for the broadcaster: its own port is chosen by the kernel as usual."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.refused = 0
        self.target: tuple[str, int] | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    def forward_to(self, host: str, port: int) -> None:
        self.target = (host, port)

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            if self.target is None:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()  # a reset: no server here yet
                self.refused += 1
                continue
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        for sock in (source, sink):
            sock.close()


def test_waits_for_the_server_then_prints_the_spec_lines(pipeline: Pipeline):
    """Started before the broadcaster, the client prints one line saying it is retrying, however
    often it retries, then the spec's lines once the broadcaster is up."""
    pipeline.producer("--rate", "10")
    stand_in = StandIn()
    try:
        url = f"ws://127.0.0.1:{stand_in.port}"
        client = pipeline.start_script("clients/test_client.py", "--url", url)
        client.wait_for(f"reconnecting to {re.escape(url)}")
        wait_until(lambda: stand_in.refused >= 5, timeout=10, message="the client gave up")
        assert sum("reconnecting" in line for line in client.lines) == 1  # one line per outage
        broadcaster = pipeline.broadcaster()
        stand_in.forward_to("127.0.0.1", broadcaster.info["ws_port"])
        client.wait_for(r"^Connected to server\. Listening for data\.\.\.$", stream="out")
        line = client.wait_for(r"^Received: (.*)$", stream="out")[1]
        sample = json.loads(line)
        assert list(sample)[:5] == ["timestamp", "cpu", "mem", "disk_io", "net"]
        assert sum("reconnecting" in line for line in client.lines) == 1
        client.stop()
    finally:
        stand_in.close()


def test_count_exits_zero_after_n_samples(pipeline: Pipeline):
    """With --count 5 the client prints its greeting and five spec lines, then exits with 0."""
    pipeline.producer("--rate", "10")
    pipeline.broadcaster()
    result = run_client(pipeline, "--url", pipeline.ws_url, "--count", "5", timeout=15)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0] == "Connected to server. Listening for data..."
    received = [line for line in out if line.startswith("Received: ")]
    assert len(received) == 5 and len(out) == 6
    for line in received:
        sample = json.loads(line.removeprefix("Received: "))
        assert list(sample)[:5] == ["timestamp", "cpu", "mem", "disk_io", "net"]


def test_filters_csv_format_and_stats(pipeline: Pipeline):
    """--devices, --fields and --format csv shape the output; --stats reports on stderr."""
    pipeline.producer("--rate", "10", "--devices", "3")
    pipeline.broadcaster()
    result = run_client(
        pipeline,
        *("--url", pipeline.ws_url, "--devices", "host-02", "--fields", "cpu,net"),
        *("--format", "csv", "--stats", "--count", "15"),
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0] == (
        "timestamp,cpu,net,device,seq,anomaly,anomaly_id,anomaly_root,event,anomaly_metrics"
    )
    rows = [line.split(",") for line in out[1:]]
    assert len(rows) == 15 and {r[3] for r in rows} == {"host-02"}
    assert re.search(
        r"stats: \d+ samples/s, latency p50 [\d.]+ ms p99 [\d.]+ ms, 0 missing",
        result.stderr,
    ), result.stderr


def test_table_format_without_a_terminal_prints_lines(pipeline: Pipeline):
    """--format table with stdout not a terminal prints a header, then one plain line per
    sample, blank where a value or label is missing (never `None`)."""
    pipeline.producer("--rate", "10", "--devices", "2")
    pipeline.broadcaster()
    result = run_client(
        pipeline,
        *("--url", pipeline.ws_url, "--format", "table", "--count", "4", "--max-rate", "2"),
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    header = ["device", "timestamp", "cpu", "mem", "disk_io", "net", "seq", "anomaly"]
    assert out[0].split() == header
    assert len(out) == 5 and all(line.startswith("host-0") for line in out[1:])
    assert "None" not in result.stdout


def load_client():
    """clients/test_client.py as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("test_client_script", CLIENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_resume_query_is_exact_per_device_and_short_when_it_must_be():
    """The client resumes with one bare seq for most devices and DEVICE:SEQ for the others;
    past what fits in a URL it asks from the lowest seq and drops what it already showed."""
    client = load_client()
    seqs = client.Seqs()
    assert seqs.since() == []
    for message in [
        '{"device":"a","seq":5}',
        '{"device":"b:1,\\"x\\"","seq":5}',
        '[{"device":"c","seq":9}]',
    ]:
        assert seqs.fresh(message) == message
    assert seqs.since() == [("since", "5"), ("since", "c:9")]
    query = client.with_params("ws://h:1/?devices=a", seqs.since())
    assert query == "ws://h:1/?devices=a&since=5&since=c%3A9"
    many = client.Seqs()
    for i in range(1000):
        many.fresh(json.dumps({"device": f"device-{i:04d}", "seq": i}))
    assert many.since() == [("since", "0")] and many.repeats_possible
    assert many.fresh('{"device":"device-0500","seq":500}') is None
    assert many.fresh(
        '[{"device":"device-0500","seq":500},{"device":"device-0500","seq":501}]'
    ) == ('[{"device":"device-0500","seq":501}]')
    assert many.fresh('{"gap":{"ranges":[]}}') == '{"gap":{"ranges":[]}}'
