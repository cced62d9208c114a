"""Catch-up: ask the producer's history for missed samples, and say why the rest are missing.

On start the logger asks for everything after what its CSV holds; while running, a seq
jump makes it ask for the missing range before writing later rows. What the producer no
longer holds becomes a gap record: "lost" (older than its history, or no answer), or
"not_produced" (the producer was down, or paused: it never published those seqs).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from common import catchup, schema
from common.bus import PLAIN, Dealer, Security
from logger.seqs import Gap, SeqTracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Facts:
    """What the producers that answered say about seqs they never published, per device."""

    run_first: dict[str, int]  # first seq of the owning producer's current run
    skipped: dict[str, list[tuple[int, int]]]  # seq ranges its producer skipped (paused, behind)
    series_first: dict[str, int] = field(default_factory=dict)  # first seq of its series
    withheld: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)
    series: list[dict] = field(default_factory=list)  # what the producers say they publish


class CatchupClient:
    """Asks every producer's catch-up endpoint for missed samples, all at once."""

    def __init__(
        self, endpoints: str | list[str], idle_timeout: float = 2.0, security: Security = PLAIN
    ) -> None:
        self.endpoints = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
        self.idle_timeout = idle_timeout
        self._dealers = [Dealer(e, security) for e in self.endpoints]
        self.requests = 0
        self.series: list[dict] = []  # the series the producers named in their last answer

    async def fetch(
        self, after: dict[str, int], after_ts_ms: int
    ) -> tuple[list[schema.Batch], Facts] | None:
        """(batches, what the producers know of their gaps), or None if none answered.

        A producer that does not answer leaves its devices out of the facts: their gaps
        are then "lost"."""
        self.requests += 1
        request = catchup.encode_request(after, after_ts_ms)
        answers = await asyncio.gather(
            *(catchup.ask(d, request, self.idle_timeout) for d in self._dealers)
        )
        batches: list[schema.Batch] = []
        facts = Facts({}, {})
        answered = False
        for answer in answers:
            if answer is None:
                continue
            answered = True
            got, end = answer
            batches += got
            facts.run_first.update(end.run_first)
            facts.withheld.update(end.withheld)
            if end.series is not None and end.series not in facts.series:
                facts.series.append(end.series)
            for device in {*end.run_first, *end.oldest}:
                facts.skipped[device] = end.skipped
                if end.series_first is not None:
                    facts.series_first[device] = end.series_first
        if not answered:
            return None
        if facts.series:
            self.series = facts.series
        return batches, facts

    def close(self) -> None:
        for dealer in self._dealers:
            dealer.close()


def classify(gap: Gap, facts: Facts | None) -> str:
    """The producer's reason when it withheld the whole gap (e.g. 'invalid_input');
    'not_produced' when the gap ends where its producer's current run began, or lies in a
    range it skipped; otherwise 'lost'."""
    if facts is None:
        return "lost"
    for first, last, reason in facts.withheld.get(gap.device, []):
        if first <= gap.first and gap.last <= last:
            return reason
    if facts.run_first.get(gap.device) == gap.last + 1:
        return "not_produced"
    ranges = facts.skipped.get(gap.device, [])
    if any(first <= gap.first and gap.last <= last for first, last in ranges):
        return "not_produced"
    return "lost"


async def refill(
    tracker: SeqTracker,
    client: CatchupClient,
    after: dict[str, int],
    after_ts_ms: int,
    keep: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[list[schema.Batch], list[tuple[Gap, str]], Facts | None]:
    """Fetch what came after `after` and admit, in order, the rows `keep` accepts (a mask
    from an array of device ids; None: all).

    Returns the rows to write, the gaps the producers could not fill (with their reason),
    and what they know of the seqs they never published (None without any answer).
    """
    answer = await client.fetch(after, after_ts_ms)
    if answer is None:
        return [], [], None
    batches, facts = answer
    fresh: list[schema.Batch] = []
    left: list[tuple[Gap, str]] = []
    for batch in schema.merge(batches):
        part = batch
        if keep is not None:
            part = batch.with_rows(batch.rows[keep(batch.rows["device"])])
        left += [(g, classify(g, facts)) for g in tracker.gaps(part)]
        fresh.append(tracker.admit(part))
    return fresh, left, facts


async def fill(
    tracker: SeqTracker, client: CatchupClient, gaps: list[Gap], batch: schema.Batch
) -> tuple[list[schema.Batch], list[tuple[Gap, str]]]:
    """Seq jumps found before `batch`: fetch the missing samples of those devices.

    Returns the rows to write before `batch` (admitted), and the gaps left (with reasons)."""
    after = {g.device: g.first - 1 for g in gaps}
    wanted = np.array([d.encode() for d in after], schema.DEVICE_DTYPE)
    fresh, left, facts = await refill(
        tracker,
        client,
        after,
        max(g.after_ms for g in gaps),
        keep=lambda devices: np.isin(devices, wanted),
    )
    left += [(g, classify(g, facts)) for g in tracker.gaps(batch)]
    return fresh, left


def describe(gap: Gap, reason: str) -> str:
    return f"{gap.device} seq {gap.first}..{gap.last} ({gap.last - gap.first + 1} samples) {reason}"
