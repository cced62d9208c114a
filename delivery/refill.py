"""The refill: ask the producers' history for missed samples, and say why the rest are missing.

A consumer that starts asks for everything after what its destination holds; while it
runs, a seq jump makes it ask for the missing range before delivering later rows. What the
producers do not send becomes a gap record with its reason (delivery.reasons).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from common import schema
from delivery.client import CatchupClient, Facts
from delivery.gaps import Gap, GapRecord
from delivery.reasons import Reason
from delivery.seqs import SeqTracker


def classify(gap: Gap, facts: Facts | None) -> Reason | str:
    """Why a seq jump seen live cannot be filled: 'unavailable' without an answer; the
    producer's reason where it withheld the whole gap; 'not_produced' where the gap ends
    just before its producer's current run began (the consumer saw the earlier run up to the
    gap: the producer was down), or lies in a range it skipped; otherwise 'not_held'."""
    if facts is None:
        return Reason.UNAVAILABLE
    assert gap.device is not None and gap.last is not None
    if (
        facts.run_first.get(gap.device) == gap.last + 1
        and facts.withheld_reason(gap.device, gap.first, gap.last) is None
    ):
        return Reason.NOT_PRODUCED
    return facts.reason(gap.device, gap.first, gap.last)


async def refill(
    tracker: SeqTracker,
    client: CatchupClient,
    after: dict[str, int],
    after_ts_ms: int,
    keep: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[list[schema.Batch], list[GapRecord], Facts | None]:
    """Fetch what came after `after` and admit, in order, the rows `keep` accepts (a mask
    from an array of device ids; None: all).

    Returns the rows to deliver, the gaps the producers could not fill (with their reason),
    and what they know of the seqs they never published (None without any answer).
    """
    answer = await client.fetch(after, after_ts_ms)
    if answer is None:
        return [], [], None
    batches, facts = answer
    fresh: list[schema.Batch] = []
    left: list[GapRecord] = []
    for batch in schema.merge(batches):
        part = batch
        if keep is not None:
            part = batch.with_rows(batch.rows[keep(batch.rows["device"])])
        left += [GapRecord(g, classify(g, facts)) for g in tracker.gaps(part)]
        fresh.append(tracker.admit(part))
    return fresh, left, facts


async def fill(
    tracker: SeqTracker, client: CatchupClient, gaps: list[Gap], batch: schema.Batch
) -> tuple[list[schema.Batch], list[GapRecord]]:
    """Seq jumps found before `batch`: fetch the missing samples of those devices.

    Returns the rows to deliver before `batch` (admitted), and the gaps left (with reasons)."""
    after = {g.device: g.first - 1 for g in gaps if g.device is not None}
    wanted = np.array([d.encode() for d in after], schema.DEVICE_DTYPE)
    fresh, left, facts = await refill(
        tracker,
        client,
        after,
        max(g.after_ms for g in gaps),
        keep=lambda devices: np.isin(devices, wanted),
    )
    left += [GapRecord(g, classify(g, facts)) for g in tracker.gaps(batch)]
    return fresh, left
