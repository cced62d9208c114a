"""streamsim.Pipeline: a private pipeline started from Python, serving when it returns and
gone when stopped; what its logger writes reads back with read_log as the stream gave it."""

from __future__ import annotations

import os

import pandas as pd
import pytest

import streamsim
from conftest import wait_until


def test_a_pipeline_streams_logs_and_stops_without_a_trace(monkeypatch):
    """Producer, logger and broadcaster serve when the constructor returns (a STREAM_* setting
    of the caller's environment does not reach them); the samples streamed are in the log,
    read back with read_log in the very same values and dtypes; stop() ends every process and
    removes the temporary folder."""
    monkeypatch.setenv("STREAM_WS_TOKEN", "not for the pipeline")
    with streamsim.Pipeline(devices=2, rate=20, seed=4, logger=True) as pipeline:
        assert [p.name for p in pipeline.processes] == ["producer", "logger", "broadcaster"]
        assert pipeline.ctl("status")["seed"] == 4
        with pytest.raises(ValueError, match="unknown device"):
            pipeline.ctl("inject", "spike", "--device", "host-09")
        streamed = streamsim.to_frame(streamsim.stream(pipeline.url, count=40))
        last = streamed.groupby("device", observed=True)["seq"].max()

        def logged() -> pd.DataFrame:
            return streamsim.read_log(pipeline.csv).samples

        wait_until(
            lambda: (logged().groupby("device", observed=True)["seq"].max() >= last).all(),
            timeout=10,
        )
        log = logged().merge(streamed[["device", "seq"]].astype({"device": str}))
        log["device"] = log["device"].astype(str)
        expected = streamed.assign(device=streamed["device"].astype(str))
        key = ["device", "seq"]
        pd.testing.assert_frame_equal(
            log.sort_values(key).reset_index(drop=True),
            expected.sort_values(key).reset_index(drop=True),
        )
        folder, pids = pipeline.folder, [p.popen.pid for p in pipeline.processes]
    assert all(p.popen.returncode is not None for p in pipeline.processes)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not folder.exists()


def test_a_value_a_process_refuses_is_its_one_line_error():
    """The producer's own message, and nothing left running."""
    with pytest.raises(ValueError, match=r"Invalid value for '--rate'.*0<x<=1000"):
        streamsim.Pipeline(rate=0)
    with pytest.raises(ValueError, match="unknown anomaly kind 'spik'"):
        streamsim.Pipeline(anomaly_kinds="spik")
