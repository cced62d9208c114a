"""The catch-up server: answers requests for missed samples from the producer's history."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from common.bus import PLAIN, Router, Security
from delivery import protocol
from producer.catchup.history import History

log = logging.getLogger(__name__)


class CatchupServer:
    """Serves `History.since` to DEALER clients; a bad request gets an empty answer."""

    def __init__(self, endpoint: str, history: History, security: Security = PLAIN) -> None:
        self.history = history
        self._router = Router(endpoint, "catch-up", security, protocol.MAX_REQUEST_BYTES)
        self.endpoint = self._router.endpoint

    async def serve(self, stop: asyncio.Event) -> None:
        async for identity, frames in self._router.requests(stop):
            self.history.requests += 1
            try:
                request = protocol.decode_request(frames)
            except protocol.ProtocolError as exc:
                log.warning("bad catch-up request: %s", exc)
                await self._router.send(identity, protocol.encode_end(protocol.End()))
                continue
            history = self.history
            batches, given_up = history.select(
                request.after, request.after_ts_ms, request.after_seq, request.limit
            )
            sent = 0
            for batch in batches:
                await self._router.send(identity, protocol.encode_batch(batch))
                sent += len(batch)
            end = dataclasses.replace(history.end(), given_up=given_up)
            await self._router.send(identity, protocol.encode_end(end))
            cut = f"; older ones of {len(given_up)} device(s) left out" if given_up else ""
            log.info("sent %d missed sample(s) to a subscriber%s", sent, cut)

    def close(self) -> None:
        self._router.close()
