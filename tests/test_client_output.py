"""The test client as a user watches it: a table that redraws calmly on a terminal, stats that
tell thinning and history from loss, and an unreachable server that ends in an error."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import subprocess
import sys
import time

from test_client import load_client

from conftest import REPO, Pipeline, unused_port, wait_until

CLIENT = str(REPO / "clients/test_client.py")


def client_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    env.pop("HONCHO_PROCESS_NAME", None)
    return env


def run_client(pipeline: Pipeline, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, CLIENT, *args],
        cwd=pipeline.cwd,
        env=client_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stats_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("stats: ")]


def test_table_on_a_terminal_redraws_a_few_times_a_second(pipeline: Pipeline):
    """On a terminal, --format table redraws at most about four times a second however fast
    samples come (here 100 a second), and its last picture holds the latest samples."""
    pipeline.producer("--rate", "50", "--devices", "2")
    pipeline.broadcaster()
    master, slave = pty.openpty()
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, CLIENT, "--url", pipeline.ws_url, "--format", "table"]
        + ["--count", "300"],
        cwd=pipeline.cwd,
        env=client_env(),
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    output = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 20)
            assert ready, "the client printed nothing for 20 s"
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the client closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert proc.wait(10) == 0, proc.stderr.read()
    finally:
        proc.kill()
        os.close(master)
    seconds = time.monotonic() - started
    redraws = output.count(b"\x1b[H")
    print(f"{redraws} redraws, {len(output)} bytes for 300 frames in {seconds:.1f} s")
    assert 1 <= redraws <= 4 * seconds + 2, (redraws, seconds)
    assert len(output) < 300 * 40, len(output)
    last = output.rsplit(b"\x1b[H", 1)[1].decode()
    assert "host-01" in last and "host-02" in last and "None" not in last


def test_stats_count_thinned_samples_apart_from_missing_ones(pipeline: Pipeline):
    """With --max-rate, the seqs the server leaves out on purpose are reported as thinned,
    and none as missing."""
    pipeline.producer("--rate", "20", "--devices", "2")
    pipeline.broadcaster()
    result = run_client(
        pipeline,
        *("--url", pipeline.ws_url, "--format", "csv", "--max-rate", "4"),
        *("--stats", "--count", "14"),
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    lines = stats_lines(result.stderr)
    assert lines, result.stderr
    for line in lines:
        match = re.search(r"(\d+) missing by seq, (\d+) thinned by --max-rate", line)
        assert match, line
        assert match[1] == "0", line
    assert any(int(re.search(r"(\d+) thinned", line)[1]) > 0 for line in lines), lines


def test_stats_leave_a_resumed_history_out_of_latency(pipeline: Pipeline):
    """After a broadcaster restart, the client resumes with seconds-old samples: stats count
    them as history, and the latency they report stays that of live samples."""
    pipeline.producer("--rate", "20", "--devices", "2")
    port = unused_port()
    args = ("--ws-host", "127.0.0.1", "--ws-port", str(port))
    first = pipeline.broadcaster(*args)
    client = pipeline.start_script(
        "clients/test_client.py", "--url", f"ws://127.0.0.1:{port}", "--format", "csv", "--stats"
    )
    client.wait_for(r"^stats: ", timeout=15)
    first.kill()
    client.wait_for("reconnecting", timeout=10)
    time.sleep(3)  # the outage the resume refills: three seconds of samples
    mark = len(client.lines)
    pipeline.broadcaster(*args)

    def after_restart() -> list[str]:
        return stats_lines("\n".join(client.lines[mark:]))

    wait_until(lambda: len(after_restart()) >= 3, timeout=15)
    client.stop()
    lines = after_restart()
    history = sum(int(m[1]) for line in lines if (m := re.search(r"(\d+) from history", line)))
    assert history >= 2 * 20 * 2, lines  # most of three seconds, two devices
    for line in lines:
        p99 = re.search(r"p99 ([\d.]+) ms", line)
        assert p99 and float(p99[1]) < 1000, line
        assert " 0 missing by seq" in line, line


def test_unreachable_server_with_count_is_an_error_after_a_bounded_wait(pipeline: Pipeline):
    """With --count and no server, the client gives up after 10 s with status 3 and one line;
    --timeout sets that wait (and bounds it without --count too)."""
    port = unused_port()
    url = f"ws://127.0.0.1:{port}"
    started = time.monotonic()
    counted = run_client(pipeline, "--url", url, "--count", "1", timeout=30)
    waited = time.monotonic() - started
    assert counted.returncode == 3, counted.stderr
    assert 9 <= waited <= 16, waited
    error = [line for line in counted.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and url in error[0] and "10 s" in error[0], counted.stderr
    started = time.monotonic()
    timed = run_client(pipeline, "--url", url, "--timeout", "1.5", timeout=30)
    assert timed.returncode == 3 and time.monotonic() - started < 6, timed.stderr


def test_a_late_timer_does_not_draw_a_second_picture(monkeypatch, capsys):
    """A sample that comes after a pending redraw's due time, before a busy loop ran the
    timer, draws at once; the timer then must not draw again right after it."""
    client = load_client()
    out = client.Output("table", stats=False)
    out.redraw = True
    sample = {"timestamp": "2026-01-01T00:00:00.000000", "device": "host-01", "cpu": 1.0}

    async def busy_between_samples() -> None:
        out.show(json.dumps(sample))  # drawn at once
        out.show(json.dumps(sample))  # a timer for REDRAW_S later
        time.sleep(client.REDRAW_S + 0.05)  # the loop is busy past the timer's due time
        out.show(json.dumps(sample))  # drawn at once, before the loop runs the timer
        await asyncio.sleep(client.REDRAW_S / 2)  # the timer's turn comes now

    asyncio.run(busy_between_samples())
    assert capsys.readouterr().out.count("\x1b[H") == 2
