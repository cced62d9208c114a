"""Catch-up: ask the producer's history for missed samples, and say why the rest are missing.

On start the logger asks for everything after what its CSV holds; while running, a seq
jump makes it ask for the missing range before writing later rows. What the producer no
longer holds becomes a gap record: "lost" (older than its history, or no answer), or
"not_produced" (the producer was down, or paused: it never published those seqs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from common import catchup, schema
from common.bus import PLAIN, Dealer, Security
from logger.seqs import Gap, SeqTracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Facts:
    """What the producer says about seqs it never published."""

    run_first: dict[str, int]  # first seq of its current run, per device
    skipped: list[tuple[int, int]]  # seq ranges it skipped (paused, or far behind)


class CatchupClient:
    """Asks the producer's catch-up endpoint for missed samples."""

    def __init__(
        self, endpoint: str, idle_timeout: float = 2.0, security: Security = PLAIN
    ) -> None:
        self.endpoint = endpoint
        self.idle_timeout = idle_timeout
        self._dealer = Dealer(endpoint, security)
        self.requests = 0

    async def fetch(
        self, after: dict[str, int], after_ts_ms: int
    ) -> tuple[list[schema.Batch], Facts] | None:
        """(batches, what the producer knows of its gaps) or None if it did not answer."""
        self.requests += 1
        await self._dealer.send(catchup.encode_request(after, after_ts_ms))
        batches: list[schema.Batch] = []
        while True:
            frames = await self._dealer.receive(self.idle_timeout)
            if frames is None:
                log.warning("no answer from the catch-up endpoint %s", self.endpoint)
                return None
            try:
                reply = catchup.decode_reply(frames)
            except (catchup.ProtocolError, schema.MessageError) as exc:
                log.warning("bad catch-up message (%s); giving up this request", exc)
                self._dealer.reset()  # a late remainder must not be taken for the next answer
                return None
            if isinstance(reply, tuple):
                return batches, Facts(run_first=reply[1], skipped=reply[2])
            batches.append(reply)

    def close(self) -> None:
        self._dealer.close()


def classify(gap: Gap, facts: Facts | None) -> str:
    """'not_produced' when the gap ends where the producer's current run began, or lies in
    a range it skipped; otherwise 'lost'."""
    if facts is None:
        return "lost"
    if facts.run_first.get(gap.device) == gap.last + 1:
        return "not_produced"
    if any(first <= gap.first and gap.last <= last for first, last in facts.skipped):
        return "not_produced"
    return "lost"


async def refill(
    tracker: SeqTracker,
    client: CatchupClient,
    after: dict[str, int],
    after_ts_ms: int,
    only: list[str] | None = None,
) -> tuple[list[schema.Batch], list[tuple[Gap, str]], Facts | None]:
    """Fetch what came after `after` and admit it in order.

    Returns the rows to write, the gaps the producer could not fill (with their reason),
    and what the producer knows of the seqs it never published (None without an answer).
    """
    answer = await client.fetch(after, after_ts_ms)
    if answer is None:
        return [], [], None
    batches, facts = answer
    fresh: list[schema.Batch] = []
    left: list[tuple[Gap, str]] = []
    wanted = None if only is None else [d.encode() for d in only]
    for batch in schema.merge(batches):
        part = batch
        if wanted is not None:
            part = schema.Batch(batch.rows[np.isin(batch.rows["device"], wanted)], batch.precision)
        left += [(g, classify(g, facts)) for g in tracker.gaps(part)]
        fresh.append(tracker.admit(part))
    return fresh, left, facts


def describe(gap: Gap, reason: str) -> str:
    return f"{gap.device} seq {gap.first}..{gap.last} ({gap.last - gap.first + 1} samples) {reason}"
