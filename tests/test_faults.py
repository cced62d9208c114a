"""Fault injection with the real processes: every sample is in the CSV once, or in a gap record."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest

from common.schema import CSV_HEADER, LEGACY_CSV_HEADER
from conftest import REPO, Pipeline, Proc, wait_until


def verify(cwd, *files: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "logger", "verify", *files],
        cwd=cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def rows(path) -> int:
    return max(0, len(path.read_bytes().splitlines()) - 1) if path.exists() else 0


def metrics(proc: Proc) -> dict[str, float]:
    """The figures a process started with `--metrics-port any` serves on /metrics, by name."""
    url = f"http://127.0.0.1:{proc.info['metrics_port']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    pairs = (line.rsplit(" ", 1) for line in text.splitlines() if line and line[0] != "#")
    return {name: float(value) for name, value in pairs}


def gaps(pipeline: Pipeline) -> pd.DataFrame:
    return pd.read_csv(pipeline.cwd / "data" / "stream_log.gaps.csv")


CSV = "data/stream_log.csv"


@pytest.mark.slow
def test_kill_9_logger_and_restart_within_the_window(pipeline: Pipeline):
    """No gap, no duplicate, no torn row after a hard kill at 100 Hz x 10 devices."""
    producer = pipeline.producer("--rate", "100", "--devices", "10")
    path = pipeline.cwd / CSV
    logger = pipeline.logger("--flush-interval", "0.1")
    wait_until(lambda: rows(path) > 2000, timeout=10)
    logger.kill()
    time.sleep(2)  # the scenario: the logger stays down 2 s, well inside the 600 s history
    logger = pipeline.logger("--flush-interval", "0.1")
    # Down for 2 s at 1,000 samples/s: at least that much came back from the history.
    assert (logger.info["caught_up"] or 0) >= 2000 - 10, logger.info
    wait_until(lambda: rows(path) > 8000, timeout=10)
    producer.stop()
    assert logger.stop()[0] == 0
    result = verify(pipeline.cwd, CSV)
    assert result.returncode == 0, result.stdout
    assert "recorded gaps (missing samples): none" in result.stdout
    frame = pd.read_csv(path)
    counts = frame.groupby("device")["seq"].agg(["min", "max", "count"])
    assert (counts["max"] - counts["min"] + 1 == counts["count"]).all()


@pytest.mark.slow
def test_logger_down_longer_than_the_history_records_exactly_the_lost_range(pipeline: Pipeline):
    """Samples older than the producer's history are recorded as one 'not_held' gap per device,
    from the first seq after the CSV's last to the last one before the refilled rows."""
    pipeline.producer("--rate", "20", "--devices", "2", "--history", "1")
    path = pipeline.cwd / CSV
    logger = pipeline.logger("--flush-interval", "0.1")
    wait_until(lambda: rows(path) > 40, timeout=10)
    stopped_at = time.monotonic()
    logger.stop()
    held = pd.read_csv(path).groupby("device")["seq"].max()
    time.sleep(3)  # the scenario: the logger stays down 3 s, longer than the 1 s history
    logger = pipeline.logger("--flush-interval", "0.1")
    down = time.monotonic() - stopped_at  # 3 s and the restart (it asked before it was ready)
    wait_until(
        lambda: (pipeline.cwd / "data/stream_log.gaps.csv").exists() and len(gaps(pipeline)) >= 2,
        timeout=10,
    )
    wait_until(lambda: rows(path) > 200, timeout=10)
    logger.stop()
    recorded = gaps(pipeline).set_index("device")
    frame = pd.read_csv(path)
    for device, last_held in held.items():
        gap = recorded.loc[device]
        assert gap["first_missing_seq"] == last_held + 1
        after = frame[(frame["device"] == device) & (frame["seq"] > last_held)]["seq"].min()
        assert gap["last_missing_seq"] == after - 1
        assert gap["reason"] == "not_held"
        # The history keeps the last 1 to 1.5 s (it drops whole 0.5 s blocks), so what is lost
        # is the time down less that: about 2 s at 20 Hz, more if the restart was slow.
        lost = gap["last_missing_seq"] - gap["first_missing_seq"] + 1
        assert 30 <= lost <= (down - 0.9) * 20 + 2, (lost, down)
    result = verify(pipeline.cwd, CSV)
    assert result.returncode == 0, result.stdout


def test_producer_restart_is_recorded_as_not_produced(pipeline: Pipeline):
    """The ticks a killed producer never published are recorded as 'not_produced' gaps, and
    the logger and broadcaster live through it."""
    producer = pipeline.producer("--rate", "20", "--devices", "2")
    path = pipeline.cwd / CSV
    logger = pipeline.logger("--flush-interval", "0.1")
    broadcaster = pipeline.broadcaster()
    wait_until(lambda: rows(path) > 40, timeout=10)
    producer.kill()
    time.sleep(1.5)  # the scenario: the producer stays down 1.5 s (30 ticks never produced)
    pipeline.producer("--rate", "20", "--devices", "2")
    wait_until(
        lambda: (pipeline.cwd / "data/stream_log.gaps.csv").exists() and len(gaps(pipeline)) >= 2,
        timeout=10,
    )
    assert set(gaps(pipeline)["reason"]) == {"not_produced"}
    assert logger.popen.poll() is None and broadcaster.popen.poll() is None
    logger.stop()
    assert verify(pipeline.cwd, CSV).returncode == 0


def test_a_log_of_an_earlier_release_is_moved_aside_and_continued(pipeline: Pipeline):
    """A CSV whose header lacks the anomaly_metrics column (an earlier release's) is never
    appended to: the logger moves it, whole, to the next numbered part, says so in one line,
    and continues in a new file right after that part's last seqs: verify finds every
    sample once over both files, with no gap."""
    pipeline.producer("--rate", "20", "--devices", "2")
    path = pipeline.cwd / CSV
    logger = pipeline.logger("--flush-interval", "0.1")
    wait_until(lambda: rows(path) > 40, timeout=10)
    logger.stop()
    header, *lines = path.read_text().splitlines()
    assert header == CSV_HEADER and header.endswith(",anomaly_metrics")
    old = [LEGACY_CSV_HEADER, *(line.rsplit(",", 1)[0] for line in lines)]
    path.write_text("\n".join(old) + "\n")
    logger = pipeline.logger("--flush-interval", "0.1")
    part = pipeline.cwd / "data" / "stream_log-000001.csv"
    logger.wait_for(r"lacks the anomaly_metrics column .* moved it to stream_log-000001\.csv")
    wait_until(lambda: rows(path) > 40, timeout=10)
    logger.stop()
    assert part.read_text().splitlines() == old
    assert path.read_text().startswith(CSV_HEADER + "\n")
    result = verify(pipeline.cwd, "data/stream_log-000001.csv", CSV)
    assert result.returncode == 0, result.stdout
    assert "recorded gaps (missing samples): none" in result.stdout
    assert f"{len(lines) + rows(path)} rows" in result.stdout


def test_torn_and_nul_padded_tail_is_repaired_and_refilled(pipeline: Pipeline):
    """A torn, NUL-padded last row is cut at start and the row comes back, byte for byte,
    from the producer's history; the log ends up complete."""
    pipeline.producer("--rate", "50", "--devices", "3")
    path = pipeline.cwd / CSV
    logger = pipeline.logger("--flush-interval", "0.1")
    wait_until(lambda: rows(path) > 300, timeout=10)
    logger.kill()
    data = path.read_bytes()
    path.write_bytes(data[:-7] + b"\0" * 512)  # torn inside the last row, then NUL padding
    intact = data[: data[:-7].rfind(b"\n") + 1]  # every row before the torn one
    torn_row = data[len(intact) :]  # as it was before the tear
    logger = pipeline.logger("--flush-interval", "0.1")
    assert (logger.info["caught_up"] or 0) > 0, logger.info
    wait_until(lambda: rows(path) > 900, timeout=10)
    repaired = path.read_bytes()
    assert repaired.startswith(intact) and b"\0" not in repaired
    assert torn_row in repaired.splitlines(keepends=True)
    logger.stop()
    result = verify(pipeline.cwd, CSV)
    assert result.returncode == 0, result.stdout
    assert "recorded gaps (missing samples): none" in result.stdout


def test_second_logger_on_the_same_file_is_refused(pipeline: Pipeline):
    """A second logger on a file in use exits with status 3 and says why; another file is fine."""
    pipeline.producer("--rate", "5")
    pipeline.logger()
    second = pipeline.start("logger", "--zmq-pub", pipeline.zmq, "--zmq-catchup", pipeline.catchup)
    assert second.popen.wait(10) == 3
    wait_until(  # its stderr is collected by a thread, possibly a moment after the exit
        lambda: any("already being written by another logger" in line for line in second.lines),
        timeout=5,
        message=f"no refusal message; stderr: {second.lines}",
    )
    other = pipeline.logger("--csv", "data/other.csv")  # another file is fine
    assert other.popen.poll() is None


def test_disk_full_keeps_the_file_valid_and_recovers(pipeline: Pipeline):
    """With a file-size limit the writes fail cleanly; once lifted, nothing is missing."""
    pipeline.producer("--rate", "50", "--devices", "4")
    path = pipeline.cwd / CSV
    logger = pipeline.logger("--flush-interval", "0.1", "--metrics-port", "any")
    wait_until(lambda: rows(path) > 200, timeout=10)
    pid = logger.popen.pid
    limit = path.stat().st_size + 3000
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    logger.wait_for("cannot write", timeout=10)  # the error an operator is meant to read
    # The disk stays full while a second's worth of samples (200) piles up, kept, not lost.
    wait_until(lambda: metrics(logger)["stream_rows_pending"] >= 200, timeout=10)
    # Each retry writes part of a row before the limit and then cuts it off again, so the
    # file is whole between retries (a reader may catch one in the microseconds it takes).
    wait_until(lambda: path.read_bytes().endswith(b"\n"), timeout=5)
    assert path.stat().st_size <= limit
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    size = path.stat().st_size
    wait_until(lambda: path.stat().st_size > size + 10_000, timeout=15)
    logger.stop()
    result = verify(pipeline.cwd, CSV)
    assert result.returncode == 0, result.stdout


def test_verify_reports_problems(tmp_path):
    """Duplicates, torn rows and unrecorded gaps make verify fail with a summary."""
    header = CSV_HEADER + "\n"
    row = "2025-08-04 00:00:0{0},1.0,2.0,3.0,4.0,host-01,{0},,,,,\n"
    good = header + "".join(row.format(i) for i in range(5))
    (tmp_path / "good.csv").write_text(good)
    assert verify(tmp_path, "good.csv").returncode == 0
    (tmp_path / "dup.csv").write_text(good + row.format(4))
    result = verify(tmp_path, "dup.csv")
    assert result.returncode == 1 and "duplicates: 1" in result.stdout
    (tmp_path / "gap.csv").write_text(header + row.format(1) + row.format(5))
    result = verify(tmp_path, "gap.csv")
    assert result.returncode == 1 and "host-01 seq 2..4" in result.stdout
    (tmp_path / "gap.gaps.csv").write_text(
        "device,first_missing_seq,last_missing_seq,after,before,reason\n"
        "host-01,2,4,2025-08-04 00:00:01,2025-08-04 00:00:05,lost\n"
    )
    assert verify(tmp_path, "gap.csv").returncode == 0
    (tmp_path / "torn.csv").write_text(good + "2025-08-04 00:0")
    result = verify(tmp_path, "torn.csv")
    assert result.returncode == 1 and "torn" in result.stdout


def test_verify_names_what_is_wrong_in_a_row(tmp_path):
    """Quoted ids read back whole; a row with a field too many, a seq that is not a number,
    bytes that are not UTF-8, and both, are each reported in one line naming the file."""
    header = CSV_HEADER + "\n"
    row = '2025-08-04 00:00:0{0},1.0,2.0,3.0,4.0,"rack 4, ""a""",{0},,,,,\n'
    good = header + "".join(row.format(i) for i in range(5))
    (tmp_path / "quoted.csv").write_text(good)
    result = verify(tmp_path, "quoted.csv")
    assert result.returncode == 0 and "5 rows, 1 device(s)" in result.stdout, result.stdout
    (tmp_path / "extra.csv").write_text(good + row.format(5)[:-1] + ",\n")
    result = verify(tmp_path, "extra.csv")
    assert result.returncode == 1 and "1 malformed row(s), first at line 7" in result.stdout
    (tmp_path / "seq.csv").write_text(good + row.format(5).replace(",5,", ",5x,"))
    result = verify(tmp_path, "seq.csv")
    assert result.returncode == 1 and "seq.csv: a seq is not an integer: '5x'" in result.stdout
    not_utf8 = row.format(5).encode().replace(b"rack", b"r\xffck")
    (tmp_path / "bytes.csv").write_bytes(good.encode() + not_utf8)
    result = verify(tmp_path, "bytes.csv")
    assert result.returncode == 1 and "bytes.csv: a row is not UTF-8 text" in result.stdout
    (tmp_path / "both.csv").write_bytes(good.encode() + not_utf8[:-4] + b"\n")
    result = verify(tmp_path, "both.csv")
    assert result.returncode == 1 and "both.csv: malformed row at line 7: 9 fields, not 12" in (
        result.stdout
    )


@pytest.mark.slow
def test_verify_reads_a_million_rows_in_little_memory(tmp_path):
    """verify keeps only the device and seq of each row: a 1,000,000-row log is checked
    with a peak of a few hundred MB (Python strings for every field took over 1 GB)."""
    generate = [sys.executable, "-m", "producer", "generate", "--devices", "100"]
    generate += ["--rate", "10", "--duration", "1000s", "--seed", "3", "--out", "big.csv"]
    subprocess.run(generate, cwd=tmp_path, env={"PYTHONPATH": str(REPO)}, check=True, timeout=60)
    # A child's peak RSS counts what it held before exec: this (large) test process's pages.
    # So verify is started by a small launcher, and the launcher reports its child's peak.
    launcher = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(done.returncode, peak, done.stdout, sep='\\n')\n"
    )
    verify = [sys.executable, "-m", "logger", "verify", "big.csv"]
    run = subprocess.run(
        [sys.executable, "-c", launcher, *verify],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    code, peak_kb, out = run.stdout.split("\n", 2)
    assert code == "0" and "1000000 rows, 100 device(s)" in out, run.stdout + run.stderr
    assert int(peak_kb) < 400 * 1024, f"peak RSS {int(peak_kb) / 1024:.0f} MB"


@pytest.mark.slow
def test_sigstop_overflow_is_refilled(pipeline: Pipeline):
    """A logger frozen for 5 s while 20,000 samples pile up resumes with every one of them in
    the CSV and no gap recorded.

    (ZeroMQ queues up to 100k messages each side, 500 s at this rate, so the freeze does not
    overflow and the refill path is not reached here: nothing is missed in the first place.)
    """
    pipeline.producer("--rate", "200", "--devices", "20")
    path = pipeline.cwd / CSV
    logger = pipeline.logger("--flush-interval", "0.1")
    wait_until(lambda: rows(path) > 4000, timeout=10)
    logger.popen.send_signal(signal.SIGSTOP)
    time.sleep(5)  # the scenario: the logger is frozen for 5 s (20,000 samples)
    logger.popen.send_signal(signal.SIGCONT)
    wait_until(lambda: rows(path) > 30_000, timeout=20)
    logger.stop()
    result = verify(pipeline.cwd, CSV)
    assert result.returncode == 0, result.stdout
    assert "recorded gaps (missing samples): none" in result.stdout


@pytest.mark.slow
def test_rotation_keeps_every_sample_across_parts_and_a_crash_mid_rotation(pipeline: Pipeline):
    """Parts keep their order in their names; a crash after the rename loses nothing."""
    from logger.sink import rotated_files

    pipeline.producer("--rate", "100", "--devices", "5")
    live = pipeline.cwd / CSV
    logger = pipeline.logger("--flush-interval", "0.1", "--rotate-mb", "0.05")
    wait_until(lambda: len(rotated_files(live)) >= 3, timeout=20)
    logger.kill()
    # Crash between the two steps of a rotation: the live file was renamed, no new one yet.
    parts = rotated_files(live)
    number = len(parts) + 1
    live.rename(live.with_name(f"stream_log-{number:06d}.csv"))
    logger = pipeline.logger("--flush-interval", "0.1", "--rotate-mb", "0.05")
    # It found its last rows in the renamed part and asked for what came after them.
    assert (logger.info["caught_up"] or 0) > 0, logger.info
    wait_until(lambda: len(rotated_files(live)) >= number + 2, timeout=20)
    logger.stop()
    parts = rotated_files(live)
    assert [p.name for p in parts] == [f"stream_log-{i:06d}.csv" for i in range(1, len(parts) + 1)]
    names = [str(p.relative_to(pipeline.cwd)) for p in parts] + [CSV]
    result = verify(pipeline.cwd, *names)
    assert result.returncode == 0, result.stdout
    assert "recorded gaps (missing samples): none" in result.stdout
    for part in parts:
        assert part.read_text().startswith("timestamp,cpu,mem,disk_io,net,device,seq")


class Crowd:
    """Many WebSocket clients in one background thread, each reconnecting on its own."""

    def __init__(self, url: str, size: int) -> None:
        import asyncio
        import threading

        self.url = url
        self.connects = [0] * size
        self.received = [0] * size
        self._stop = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(size,), daemon=True)
        self._thread.start()

    def _run(self, size: int) -> None:
        import asyncio

        async def main() -> None:
            await asyncio.gather(*(self._client(i) for i in range(size)))

        self._loop.run_until_complete(main())

    async def _client(self, i: int) -> None:
        import asyncio

        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        while not self._stop:
            try:
                async with connect(self.url, open_timeout=2) as ws:
                    self.connects[i] += 1
                    while not self._stop:
                        try:
                            await asyncio.wait_for(ws.recv(), 0.5)
                            self.received[i] += 1
                        except TimeoutError:
                            continue
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError):
                await asyncio.sleep(0.2)

    def close(self) -> None:
        self._stop = True
        self._thread.join(10)


def test_kill_9_broadcaster_with_50_clients(pipeline: Pipeline):
    """The logger does not notice; every client reconnects to the restarted broadcaster."""
    pipeline.producer("--rate", "20", "--devices", "2")
    path = pipeline.cwd / CSV
    logger = pipeline.logger("--flush-interval", "0.1")
    broadcaster = pipeline.broadcaster()
    port = pipeline.ws_url.rsplit(":", 1)[1]
    crowd = Crowd(pipeline.ws_url, 50)
    try:
        wait_until(lambda: all(n > 5 for n in crowd.received), timeout=20)
        broadcaster.kill()
        rows_then = rows(path)
        time.sleep(1)  # the scenario: the broadcaster stays down 1 s while 50 clients retry
        pipeline.broadcaster("--ws-port", port)
        wait_until(lambda: all(c >= 2 for c in crowd.connects), timeout=20)
        seen = list(crowd.received)
        wait_until(
            lambda: all(r > s + 5 for r, s in zip(crowd.received, seen, strict=True)), timeout=20
        )
    finally:
        crowd.close()
    assert logger.popen.poll() is None and rows(path) > rows_then
    logger.stop()
    assert verify(pipeline.cwd, CSV).returncode == 0
