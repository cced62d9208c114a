"""Print every sample the broadcaster sends: `python clients/test_client.py`.

Self-contained on purpose (only `websockets` and `click`), so it can be copied anywhere.
It keeps trying while the server is not up yet, and reconnects when it restarts.
"""

from __future__ import annotations

import asyncio
import sys

import click
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 2.0


async def listen(url: str, count: int | None) -> None:
    """Print `Received: {json}` per sample until `count` samples (or forever)."""
    received = 0
    delay = BACKOFF_FIRST_S
    waiting = False  # a "waiting for the server" line was printed for this outage
    while True:
        try:
            async with connect(url, open_timeout=5, max_size=None, compression=None) as ws:
                print("Connected to server. Listening for data...", flush=True)
                waiting, delay = False, BACKOFF_FIRST_S
                async for message in ws:
                    print(f"Received: {message}", flush=True)
                    received += 1
                    if count is not None and received >= count:
                        return
            reason = "server closed the connection"
        except InvalidURI:
            raise
        except ConnectionClosed as exc:
            reason = f"connection lost ({exc})"
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            reason = f"server not available ({exc.__class__.__name__}: {exc})"
        if not waiting:
            print(f"{reason}; reconnecting to {url} ...", file=sys.stderr, flush=True)
            waiting = True
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, BACKOFF_MAX_S)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="STREAM_CLIENT_URL",
    default="ws://localhost:8765",
    show_default=True,
    show_envvar=True,
    help="WebSocket URL of the broadcaster.",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    help="Exit (status 0) after this many samples. [default: run until Ctrl-C]",
)
def main(url: str, count: int | None) -> None:
    """Connect to the broadcaster and print each sample as it arrives."""
    try:
        asyncio.run(listen(url, count))
    except InvalidURI as exc:
        raise click.BadParameter(str(exc), param_hint="'--url'") from None
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    try:
        main.main(standalone_mode=False)
    except click.ClickException as exc:
        print(f"test_client: error: {' '.join(exc.format_message().split())}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
