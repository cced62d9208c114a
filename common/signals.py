"""One signal policy for every process: SIGINT/SIGTERM set a stop event."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM; call from inside the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def readable_or_stopped(poll: Awaitable[int], stop: asyncio.Event | None) -> bool:
    """Await a ZeroMQ socket's poll(); give up as soon as `stop` is set. True if readable.

    Idle loops can then wait for minutes instead of waking every few hundred
    milliseconds to look at the stop event.
    """
    polled = asyncio.ensure_future(poll)
    if stop is None:
        return bool(await polled)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((polled, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in (polled, stopped):
            future.cancel()
    return polled.done() and not polled.cancelled() and bool(polled.result())


async def wait_or_stop(stop: asyncio.Event, timeout: float) -> bool:
    """Sleep up to `timeout` seconds; return True as soon as `stop` is set."""
    if timeout <= 0:
        await asyncio.sleep(0)  # still let signal handlers and other tasks run
        return stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), timeout)
    except TimeoutError:
        return False
    return True
