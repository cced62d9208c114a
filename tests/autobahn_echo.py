"""Echo servers for the Autobahn fuzzing client: one with the broadcaster's protocol
settings, one with the websockets library's defaults as the baseline.

    python tests/autobahn_echo.py PORT BASELINE_PORT
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broadcaster.config import BroadcasterConfig  # noqa: E402
from broadcaster.service import protocol_options  # noqa: E402


async def echo(connection: ServerConnection) -> None:
    try:
        async for message in connection:
            await connection.send(message)
    except ConnectionClosed:
        pass


async def main(port: int, baseline_port: int) -> None:
    # Fuzzing sends messages up to 16 MiB: the size limit is the broadcaster's policy, not
    # part of the protocol, so it is lifted for both.
    servers = [
        await serve(
            echo, "127.0.0.1", port, max_size=2**25, **protocol_options(BroadcasterConfig())
        ),
        await serve(echo, "127.0.0.1", baseline_port, max_size=2**25),
    ]
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
