"""A formation of several producers as a new user starts it: one seed and one series with no
setting, a `ctl` that finds every producer and says which pipeline it talks to, and a
WebSocket port that no other pipeline's broadcaster can join."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from common.shards import Shard
from conftest import REPO, Pipeline, ready_info, unused_port, wait_until

DEVICES = 6


def rows(path: Path) -> list[str]:
    return path.read_text().splitlines()[1:] if path.exists() else []


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any STREAM_* or honcho setting, plus `extra`."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    for name in [k for k in env if k.startswith("STREAM_") or k == "HONCHO_PROCESS_NAME"]:
        del env[name]
    return {**env, **extra}


def ctl(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m producer ctl ARGS` in `cwd`, configured by its `.env` alone."""
    return subprocess.run(
        [sys.executable, "-m", "producer", "ctl", *args],
        cwd=cwd,
        env=clean_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=30,
    )


def assert_one_series(
    cwd: Path, live: list[str], rate: float, producers: int, *settings: str
) -> None:
    """Every logged row is the row one producer makes with producer 1's seed and start, and
    every producer's state holds that same seed."""
    names = ["producer_state.json"] + [f"producer_state-{i}.json" for i in range(2, producers + 1)]
    states = [json.loads((cwd / "data" / name).read_text()) for name in names]
    seeds = {state["seed"] for state in states}
    assert len(seeds) == 1, f"the producers drew their own seeds: {seeds}"
    first = states[0]
    owners = {line.split(",")[5] for line in live}
    assert owners == {f"host-0{i}" for i in range(1, DEVICES + 1)}, owners
    for index in range(1, producers + 1):
        assert any(Shard(index, producers).owns(d) for d in owners)
    last_seq = max(int(line.split(",")[6]) for line in live)
    start = datetime.fromtimestamp(first["origin_ms"] / 1000, UTC).isoformat()
    made = subprocess.run(
        [sys.executable, "-m", "producer", "generate", "--out", "single.csv", "--no-progress"]
        + ["--rate", f"{rate:g}", "--devices", str(DEVICES), "--seed", str(first["seed"])]
        + ["--start", start, "--duration", f"{(last_seq - first['seq_base'] + 1) / rate}s"]
        + list(settings),
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    single = {}
    for line in rows(cwd / "single.csv"):
        fields = line.split(",")
        single[(fields[5], int(fields[6]) + first["seq_base"])] = ",".join(
            fields[:6] + [str(int(fields[6]) + first["seq_base"])] + fields[7:]
        )
    for line in live:
        fields = line.split(",")
        assert single[(fields[5], int(fields[6]))] == line


def test_honcho_formation_without_a_seed_is_one_series(tmp_path: Path):
    """`honcho start -c producer=2` with no seed: both producers run one series (one seed,
    one time grid, one numbering), so the log equals one producer's rows; `ctl status`
    without --producers finds both and says which pipeline it talks to."""
    shutil.copy(REPO / "Procfile", tmp_path / "Procfile")
    ready = tmp_path / "ready"
    (tmp_path / ".env").write_text(
        f"STREAM_ZMQ_PUB=ipc://{tmp_path}/samples.sock\n"
        f"STREAM_ZMQ_CATCHUP=ipc://{tmp_path}/catchup.sock\n"
        f"STREAM_ZMQ_CONTROL=ipc://{tmp_path}/control.sock\n"
        f"STREAM_WS_PORT=0\nSTREAM_RATE=10\nSTREAM_DEVICES={DEVICES}\n"
        "STREAM_FLUSH_INTERVAL=0.1\nSTREAM_ANOMALY_RATE=30\n"
        f"STREAM_READY_FILE={ready}/{{instance}}.json\n"
    )
    log_path = tmp_path / "honcho.log"
    with open(log_path, "w") as out:
        honcho = subprocess.Popen(
            [os.path.join(str(Path(sys.executable).parent), "honcho"), "start"]
            + ["-c", "producer=2"],
            cwd=tmp_path,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    log = tmp_path / "data" / "stream_log.csv"
    try:
        names = ["producer.1", "producer.2", "logger.1"]
        wait_until(
            lambda: all(ready_info(ready / f"{n}.json") for n in names)
            or honcho.poll() is not None,
            timeout=20,
            interval=0.05,
            message="not every process wrote its ready file: " + log_path.read_text(),
        )
        assert honcho.poll() is None, log_path.read_text()
        status = ctl(tmp_path, "status")
        assert status.returncode == 0, status.stderr
        answers = json.loads(status.stdout)
        assert [a["shard"] for a in answers] == ["1/2", "2/2"], answers
        assert len({a["seed"] for a in answers}) == 1, answers
        assert "2 producers" in status.stderr and str(tmp_path) in status.stderr, status.stderr
        wait_until(lambda: len(rows(log)) > 120, timeout=20)
    finally:
        honcho.send_signal(signal.SIGTERM)
        try:
            honcho.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait(5)
    assert "Traceback" not in log_path.read_text()
    assert_one_series(tmp_path, rows(log), 10, 2)


def test_three_producers_without_a_seed_are_one_series(pipeline: Pipeline):
    """Producers 1/3, 2/3 and 3/3 started by hand with no seed learn producer 1's series:
    the union of what they publish equals one producer's rows, seqs included."""
    fleet = ("--rate", "10", "--devices", str(DEVICES), "--anomaly-rate", "30")
    for index in (1, 2, 3):
        pipeline.producer("--shard", f"{index}/3", *fleet)
    pipeline.logger("--producers", "3", "--flush-interval", "0.1")
    log = pipeline.cwd / "data" / "stream_log.csv"
    wait_until(lambda: len(rows(log)) > 150, timeout=20)
    for proc in pipeline.procs:
        proc.stop()
    assert_one_series(pipeline.cwd, rows(log), 10, 3, "--anomaly-rate", "30")


def test_a_rate_change_keeps_the_formation_one_series(pipeline: Pipeline):
    """`ctl rate` to two producers of one series changes both on the same tick: afterwards
    every timestamp still has one seq for all devices, whichever producer made them."""
    fleet = ("--rate", "10", "--devices", "4")
    for index in (1, 2):
        pipeline.producer("--shard", f"{index}/2", *fleet)
    pipeline.logger("--producers", "2", "--flush-interval", "0.1")
    log = pipeline.cwd / "data" / "stream_log.csv"
    wait_until(lambda: len(rows(log)) > 40, timeout=15)
    changed = pipeline.ctl("rate", "4")
    assert changed.returncode == 0, changed.stderr
    from_seqs = {a["from_seq"] for a in json.loads(changed.stdout)}
    assert len(from_seqs) == 1, changed.stdout
    after = from_seqs.pop()
    wait_until(lambda: sum(int(r.split(",")[6]) >= after for r in rows(log)) > 40, timeout=20)
    for proc in pipeline.procs:
        proc.stop()
    seqs: dict[str, set[str]] = {}
    for line in rows(log):
        fields = line.split(",")
        seqs.setdefault(fields[0], set()).add(fields[6])
    assert all(len(found) == 1 for found in seqs.values()), seqs


def test_a_later_producer_waits_for_producer_one(pipeline: Pipeline):
    """Producer 2/2 without a seed, started before producer 1, says it waits for it and is
    not ready until producer 1 answers; then it runs producer 1's series."""
    fleet = ("--rate", "5", "--devices", "4")
    second = pipeline.start(
        "producer",
        *("--zmq-pub", pipeline.zmq, "--zmq-catchup", pipeline.catchup),
        *("--zmq-control", pipeline.control, "--shard", "2/2", *fleet),
    )
    second.wait_for("waiting for producer 1", timeout=15)
    assert second.popen.poll() is None and not second.ready_file.exists()
    pipeline.producer("--shard", "1/2", *fleet)
    second.ready()
    status = pipeline.ctl("status")
    assert status.returncode == 0, status.stderr
    answers = json.loads(status.stdout)
    assert len(answers) == 2 and len({a["seed"] for a in answers}) == 1, answers


def test_ctl_finds_every_producer_and_routes_inject_to_the_owner(pipeline: Pipeline):
    """Without --producers, `ctl` asks producer 1 how many there are: status lists both,
    inject reaches the owner of the device, and stderr names the pipeline (its directory)."""
    fleet = ("--rate", "10", "--devices", "4", "--seed", "9")
    pipeline.producer("--shard", "1/2", *fleet)
    pipeline.producer("--shard", "2/2", *fleet)
    status = pipeline.ctl("status")
    assert status.returncode == 0, status.stderr
    answers = json.loads(status.stdout)
    assert [a["producer"] for a in answers] == [1, 2], answers
    assert all(a["cwd"] == str(pipeline.cwd) for a in answers), answers
    owned = sorted(set(answers[1]["owned_devices"]))[0]
    injected = pipeline.ctl("inject", "spike", "--device", owned)
    assert injected.returncode == 0, injected.stderr
    assert [a["producer"] for a in json.loads(injected.stdout)] == [2]
    assert f"in {pipeline.cwd}" in status.stderr and "seed 9" in status.stderr, status.stderr


def test_ctl_says_when_the_producer_runs_elsewhere(pipeline: Pipeline, tmp_path_factory):
    """`ctl` run in another directory than the producer's notes it on stderr, so a user who
    reached another pipeline's producer (a default port) is told so."""
    pipeline.producer("--rate", "2")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    status = ctl(elsewhere, "--zmq-control", pipeline.control, "status")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["cwd"] == str(pipeline.cwd)
    assert "not in this directory" in status.stderr and str(pipeline.cwd) in status.stderr


@pytest.mark.parametrize("same_pipeline", [True, False])
def test_a_broadcaster_shares_its_port_only_within_its_pipeline(
    pipeline: Pipeline, tmp_path_factory, same_pipeline: bool
):
    """A second broadcaster of the same pipeline joins the port; one of another pipeline
    (other producers) is refused with one line and status 3, and the first serves on."""
    pipeline.producer("--rate", "5")
    port = unused_port()
    args = ("--ws-host", "127.0.0.1", "--ws-port", str(port))
    first = pipeline.broadcaster(*args)
    if same_pipeline:
        second = pipeline.broadcaster(*args)
        assert second.info["ws_port"] == port
        return
    other = tmp_path_factory.mktemp("other")
    result = subprocess.run(
        [sys.executable, "-m", "broadcaster", *args]
        + ["--zmq-pub", f"ipc://{other}/samples.sock", "--zmq-catchup", f"ipc://{other}/c.sock"],
        cwd=other,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "another pipeline" in lines[0] and "--ws-port" in lines[0], lines
    assert first.popen.poll() is None  # the first serves on
