"""Loss is always visible: a log that begins mid-series, and messages a subscriber refuses,
leave gap records naming exactly the samples, so `logger verify` cannot pass over them."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import zmq
from test_faults import CSV, metrics, rows, verify

from common import schema
from conftest import Pipeline, wait_until
from delivery.client import Facts
from delivery.gaps import Gap
from delivery.starts import before_first


def gaps(pipeline: Pipeline) -> pd.DataFrame:
    """The gap records so far (none while the gaps file does not exist)."""
    path = pipeline.cwd / "data" / "stream_log.gaps.csv"
    return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["device"])


def test_a_log_started_mid_series_records_what_came_before(pipeline: Pipeline):
    """A logger started after the producer has run longer than its history writes what the
    history holds, and records the older samples of the series, from its first seq, as one
    'not_held' gap per device; verify then passes."""
    pipeline.producer("--rate", "20", "--devices", "2", "--history", "1")
    time.sleep(3)  # the scenario: the series runs 3 s (60 samples a device) before the logger
    path = pipeline.cwd / CSV
    logger = pipeline.logger("--flush-interval", "0.1")
    wait_until(lambda: rows(path) > 40 and len(gaps(pipeline)) >= 2, timeout=10)
    logger.stop()
    frame = pd.read_csv(path)
    recorded = gaps(pipeline).set_index("device")
    for device in ("host-01", "host-02"):
        first_logged = frame[frame["device"] == device]["seq"].min()
        gap = recorded.loc[device]
        assert gap["first_missing_seq"] == 0  # a new series begins at seq 0
        assert gap["last_missing_seq"] == first_logged - 1
        assert gap["reason"] == "not_held"
        assert first_logged > 10  # 3 s in: the oldest seconds are no longer held
    result = verify(pipeline.cwd, CSV)
    assert result.returncode == 0, result.stdout
    assert "not_held" in result.stdout


def test_a_log_started_with_the_series_has_no_gap(pipeline: Pipeline):
    """A logger started just after a fresh producer fetches the series from its first seq
    (whatever it missed while connecting), so it records no gap at all."""
    pipeline.producer("--rate", "50", "--devices", "3")
    path = pipeline.cwd / CSV
    logger = pipeline.logger("--flush-interval", "0.1")
    wait_until(lambda: rows(path) > 150, timeout=10)
    logger.stop()
    frame = pd.read_csv(path)
    assert (frame.groupby("device")["seq"].min() == 0).all()
    assert gaps(pipeline).empty
    assert verify(pipeline.cwd, CSV).returncode == 0


def _message(device: str, seqs: range, cpu: float = 50.0, version: int | None = None) -> list:
    rows = schema.empty_rows(len(seqs))
    rows["ts_ms"] = 1_754_229_600_000 + np.array(seqs) * 1000
    rows["seq"] = list(seqs)
    rows["device"] = schema.device_bytes(device)
    for metric in schema.METRICS:
        rows[metric] = 10.0
    rows["cpu"] = cpu
    frames = schema.encode(schema.Batch(rows))
    if version is not None:
        header = bytearray(frames[1])
        header[4] = version
        frames[1] = bytes(header)
    return frames


class Foreign:
    """A PUB socket standing in for a producer, sending what the refused-message tests need:
    valid samples of 'dev,1', then messages a subscriber must refuse among valid ones."""

    def __init__(self, tmp_path: Path) -> None:
        self.endpoint = f"ipc://{tmp_path}/foreign.sock"
        self.nobody = f"ipc://{tmp_path}/nobody.sock"  # a catch-up endpoint that never answers
        self._context = zmq.Context()
        self._pub = self._context.socket(zmq.PUB)
        self._pub.linger = 0
        self._pub.bind(self.endpoint)

    def first(self) -> None:
        """Seqs 0-2 of dev,1 (sent until they arrive: the slow joiner)."""
        self._pub.send_multipart(_message("dev,1", range(0, 3)))

    def then(self) -> None:
        """Seqs 3-4 of dev,1 refused, 7-8 of a device never seen refused, 9 unreadable, then
        seqs 5-6 of dev,1 valid again."""
        self._pub.send_multipart(_message("dev,1", range(3, 5), cpu=150.0))  # refused
        self._pub.send_multipart(_message("ghost \u00e9", range(7, 9), cpu=-1.0))  # never seen
        self._pub.send_multipart(_message("dev,1", range(9, 10), version=2))  # unreadable
        self._pub.send_multipart(_message("dev,1", range(5, 7)))  # valid again

    def __enter__(self) -> Foreign:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pub.close()
        self._context.term()


def test_refused_messages_become_gap_records(pipeline: Pipeline, tmp_path: Path):
    """Messages a logger must refuse (a value out of its domain) are recorded as 'refused'
    gaps naming their device and seqs, for a device already logged and for one never seen;
    an unreadable message (an old wire version) is counted; verify reports the gaps."""
    with Foreign(tmp_path) as foreign:
        logger = pipeline.start(
            "logger",
            *("--zmq-pub", foreign.endpoint, "--zmq-catchup", foreign.nobody),
            *("--flush-interval", "0.1", "--metrics-port", "any"),
        )
        logger.ready()
        path = pipeline.cwd / CSV
        wait_until(lambda: foreign.first() or rows(path) >= 3, 10)
        foreign.then()
        wait_until(lambda: rows(path) >= 5 and len(gaps(pipeline)) >= 2, timeout=15)
        wait_until(lambda: metrics(logger).get("stream_malformed_messages_total") == 3, 10)
        logger.stop()
    recorded = gaps(pipeline)
    by_device = {d: g for d, g in recorded.groupby("device")}
    columns = ["first_missing_seq", "last_missing_seq", "reason"]
    assert by_device["dev,1"][columns].values.tolist() == [[3, 4, "refused"]]
    ghost = by_device["ghost \u00e9"][columns].values.tolist()
    assert [7, 8, "refused"] in ghost  # and seqs 0-6 'unavailable': nobody could say
    frame = pd.read_csv(path)
    assert frame[frame["device"] == "dev,1"]["seq"].tolist() == [0, 1, 2, 5, 6]
    result = verify(pipeline.cwd, CSV)
    assert result.returncode == 0, result.stdout
    assert "refused" in result.stdout


def test_before_first_splits_earlier_runs_from_lost():
    """Between a series' first seq and the first seq written: what precedes the producer's
    current run is 'earlier_run', what this run published and no longer holds is 'not_held'."""
    facts = Facts(
        run_first={"a": 100, "b": 0, "c": 100},
        skipped={},
        series_first={"a": 0, "b": 0, "c": 0},
    )
    got = before_first({"a": (150, 5), "b": (30, 5), "c": (100, 5)}, facts)
    assert got == [
        (Gap("a", 0, 99, 5, 5), "earlier_run"),
        (Gap("a", 100, 149, 5, 5), "not_held"),
        (Gap("b", 0, 29, 5, 5), "not_held"),
        (Gap("c", 0, 99, 5, 5), "earlier_run"),
    ]
    assert before_first({"a": (0, 5)}, facts) == []
