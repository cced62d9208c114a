"""`python -m broadcaster`: the command line, which only builds a config and runs it."""

from __future__ import annotations

import asyncio

import click

from broadcaster import service
from broadcaster.config import BroadcasterConfig
from common.cli import log_level_option, zmq_pub_option
from common.logs import setup_logging
from common.signals import stop_on_signals


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@zmq_pub_option
@click.option(
    "--ws-host",
    envvar="STREAM_WS_HOST",
    default="localhost",
    show_default=True,
    show_envvar=True,
    help="Interface to listen on (localhost: this machine only).",
)
@click.option(
    "--ws-port",
    envvar="STREAM_WS_PORT",
    default=8765,
    show_default=True,
    show_envvar=True,
    type=click.IntRange(0, 65535),
    help="WebSocket port (0 picks a free one and logs it).",
)
@click.option(
    "--max-client-buffer",
    envvar="STREAM_WS_MAX_BUFFER",
    default=4 * 1024 * 1024,
    show_default=True,
    show_envvar=True,
    type=click.IntRange(64 * 1024, 1024**3),
    help="Unsent bytes a client may hold up before it is disconnected (code 1008).",
)
@log_level_option
def main(zmq_pub: str, ws_host: str, ws_port: int, max_client_buffer: int, log_level: str) -> None:
    """Relay every sample as JSON to every connected WebSocket client."""
    setup_logging(log_level)
    config = BroadcasterConfig(
        zmq_pub=zmq_pub, ws_host=ws_host, ws_port=ws_port, max_client_buffer=max_client_buffer
    )
    asyncio.run(_run(config))


async def _run(config: BroadcasterConfig) -> None:
    await service.run(config, stop_on_signals())
