"""The processes' cores called in-process: `run(config, stop)` of each, in one event loop.

Faster than subprocesses and closer to the code: what the CLI would do, minus the CLI.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import pandas as pd
from websockets.asyncio.client import connect

from broadcaster import service as broadcaster
from broadcaster.config import BroadcasterConfig
from logger import service as logger
from logger.config import LoggerConfig
from logger.verify import verify
from producer import service as producer
from producer.config import ProducerConfig
from producer.control.client import ask


async def _until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        await asyncio.sleep(0.02)


async def _ready(path: Path, task: asyncio.Task, timeout: float = 10.0) -> dict:
    """The ready file's contents once written (failing at once if the task died)."""

    def written() -> bool:
        if task.done():
            task.result()  # raises what stopped it
        return path.exists()

    await _until(written, timeout)
    return json.loads(path.read_text())


def _producer_config(tmp: Path, **overrides) -> ProducerConfig:
    return ProducerConfig(
        **{
            "rate": 50.0,
            "devices": 3,
            "seed": 7,
            "anomaly_rate": 0.0,
            "zmq_pub": f"ipc://{tmp}/pub.sock",
            "zmq_catchup": f"ipc://{tmp}/catchup.sock",
            "zmq_control": f"ipc://{tmp}/control.sock",
            "state": tmp / "state.json",
            "ready_file": str(tmp / "producer.json"),
            **overrides,
        }
    )


async def _running(
    stop: asyncio.Event, run: Callable[..., Awaitable[None]], config
) -> asyncio.Task:
    return asyncio.create_task(run(config, stop))


async def _stop_within(tasks: list[asyncio.Task], stop: asyncio.Event, seconds: float) -> float:
    began = time.monotonic()
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), seconds)
    return time.monotonic() - began


def test_producer_and_logger_in_one_loop_log_every_sample(tmp_path: Path):
    """run() of the producer and of the logger, sharing one loop, log contiguous seqs that
    `logger verify` finds complete, and both stop within 2 s of the stop event."""

    async def scenario() -> float:
        stop = asyncio.Event()
        config = _producer_config(tmp_path)
        made = await _running(stop, producer.run, config)
        info = await _ready(tmp_path / "producer.json", made)
        assert info["pub"] == config.zmq_pub and info["control"] == config.zmq_control
        csv = tmp_path / "log.csv"
        logged = await _running(
            stop,
            logger.run,
            LoggerConfig(
                zmq_pub=config.zmq_pub,
                zmq_catchup=config.zmq_catchup,
                csv=csv,
                flush_interval=0.05,
                ready_file=str(tmp_path / "logger.json"),
            ),
        )
        await _ready(tmp_path / "logger.json", logged)
        await _until(lambda: csv.exists() and csv.stat().st_size > 20_000, 15)
        return await _stop_within([made, logged], stop, 2.0)

    took = asyncio.run(scenario())
    assert took < 2.0
    frame = pd.read_csv(tmp_path / "log.csv")
    assert len(frame) >= 200
    for _, seqs in frame.groupby("device")["seq"]:
        assert (seqs.diff().dropna() == 1).all()
    assert verify([tmp_path / "log.csv"]).ok
    assert not (tmp_path / "producer.json").exists()  # withdrawn on the way out


def test_broadcaster_in_one_loop_relays_and_reports_health(tmp_path: Path):
    """run() of the broadcaster on port 0 reports its URL in the ready file, relays what
    run() of the producer publishes, and answers /healthz with 200 while samples flow."""

    async def scenario() -> tuple[list[dict], int]:
        stop = asyncio.Event()
        config = _producer_config(tmp_path, devices=2)
        made = await _running(stop, producer.run, config)
        await _ready(tmp_path / "producer.json", made)
        relayed = await _running(
            stop,
            broadcaster.run,
            BroadcasterConfig(
                zmq_pub=config.zmq_pub,
                ws_host="127.0.0.1",
                ws_port=0,
                ready_file=str(tmp_path / "broadcaster.json"),
            ),
        )
        url = (await _ready(tmp_path / "broadcaster.json", relayed))["url"]
        async with connect(url, open_timeout=5) as ws:
            samples = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(10)]
        health = await asyncio.to_thread(
            lambda: urllib.request.urlopen(url.replace("ws://", "http://") + "healthz", timeout=5)
        )
        await _stop_within([made, relayed], stop, 2.0)
        return samples, health.status

    samples, status = asyncio.run(scenario())
    assert status == 200
    assert {s["device"] for s in samples} == {"host-01", "host-02"}
    assert list(samples[0])[:5] == ["timestamp", "cpu", "mem", "disk_io", "net"]


def test_control_reaches_an_in_process_producer(tmp_path: Path):
    """`ctl` requests reach run() of the producer: status reports it, pause stops its
    publishing, resume starts it again."""

    async def scenario() -> list[dict]:
        stop = asyncio.Event()
        config = _producer_config(tmp_path, devices=1)
        made = await _running(stop, producer.run, config)
        await _ready(tmp_path / "producer.json", made)
        answers = []
        for command in ("status", "pause", "status", "resume", "status"):
            answers.append(await asyncio.to_thread(ask, config.zmq_control, {"cmd": command}, 5.0))
        await _stop_within([made], stop, 2.0)
        return answers

    status, paused, while_paused, resumed, after = asyncio.run(scenario())
    assert all(a["ok"] for a in (status, paused, resumed))
    assert while_paused["paused"] is True and after["paused"] is False
