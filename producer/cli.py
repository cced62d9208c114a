"""`python -m producer`: the command line, which only builds a config and runs it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from common.cli import log_level_option, zmq_pub_option
from common.logs import setup_logging
from common.signals import stop_on_signals
from producer import service
from producer.config import ProducerConfig


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--rate",
    envvar="STREAM_RATE",
    default=1.0,
    show_default=True,
    show_envvar=True,
    type=click.FloatRange(0, 1000, min_open=True),
    help="Samples per second, per device.",
)
@click.option(
    "--devices",
    envvar="STREAM_DEVICES",
    default=1,
    show_default=True,
    show_envvar=True,
    type=click.IntRange(1, 100_000),
    help="Number of simulated devices (host-01, host-02, ...).",
)
@click.option(
    "--seed",
    envvar="STREAM_SEED",
    default=None,
    show_envvar=True,
    type=click.IntRange(0, 2**63 - 1),
    help="Random seed; the same seed gives the same data. [default: random, kept in --state]",
)
@zmq_pub_option
@click.option(
    "--state",
    envvar="STREAM_STATE",
    default="data/producer_state.json",
    show_default=True,
    show_envvar=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the series (seed, tick grid, seq numbers) is kept across restarts.",
)
@log_level_option
def main(
    rate: float, devices: int, seed: int | None, zmq_pub: str, state: Path, log_level: str
) -> None:
    """Simulate machine metrics and publish them on a ZeroMQ PUB socket."""
    setup_logging(log_level)
    config = ProducerConfig(rate=rate, devices=devices, seed=seed, zmq_pub=zmq_pub, state=state)
    asyncio.run(_run(config))


async def _run(config: ProducerConfig) -> None:
    await service.run(config, stop_on_signals())
