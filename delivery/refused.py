"""Refused messages: samples a consumer received but could not accept are refilled or named.

A message that cannot be decoded, or holds samples that are not valid, is dropped by the
subscriber (common.bus); its readable rows (device and seq) still say which seqs it
carried. They are asked of the producers' history like any other missed seqs, and what it
cannot give again is recorded as `refused` (published, but not as valid samples).
"""

from __future__ import annotations

import numpy as np

from common import schema
from delivery.client import CatchupClient
from delivery.gaps import Gap, GapRecord
from delivery.reasons import Reason
from delivery.refill import fill
from delivery.seqs import SeqTracker
from delivery.starts import SeriesStarts

Spans = dict[str, tuple[int, int, int]]  # device -> (first seq, last seq, newest timestamp)

_UNKNOWN = (Reason.NOT_HELD, Reason.UNAVAILABLE)  # what the history alone would say


def spans(rows: np.ndarray) -> Spans:
    """Device -> (first seq, last seq, newest timestamp) of some rows."""
    out: Spans = {}
    for device, seq, ts in zip(
        rows["device"].tolist(), rows["seq"].tolist(), rows["ts_ms"].tolist(), strict=True
    ):
        name = schema.device_name(device)
        first, final, newest = out.get(name, (seq, seq, ts))
        out[name] = (min(first, seq), max(final, seq), max(newest, ts))
    return out


def refused_or(record: GapRecord, refused: Spans) -> GapRecord:
    """'refused' rather than not_held or unavailable where the whole gap was in messages
    this consumer refused: it knows better than the history why it lacks them."""
    gap, reason = record
    first, last, _ = refused.get(gap.device or "", (-1, -2, 0))
    if reason in _UNKNOWN and first <= gap.first and gap.last is not None and gap.last <= last:
        return GapRecord(gap, Reason.REFUSED)
    return record


async def account(
    tracker: SeqTracker, client: CatchupClient, starts: SeriesStarts, rows: np.ndarray
) -> tuple[list[schema.Batch], list[GapRecord]]:
    """The seqs of refused rows that the samples after them did not already account for:
    fetched from the history (rows to deliver, admitted), else recorded as 'refused'.

    A device never delivered before gets its refused seqs recorded, and is asked about
    later like any device first met (what came before them in its series?)."""
    last = tracker.last
    gaps: list[Gap] = []
    left: list[GapRecord] = []
    for device, (first, final, newest_ms) in spans(rows).items():
        delivered = last.get(schema.device_bytes(device))
        if delivered is None:
            left.append(GapRecord(Gap(device, first, final, newest_ms, newest_ms), Reason.REFUSED))
            starts.unconfirmed.setdefault(device, (first, newest_ms))
        elif final > delivered[0]:
            gaps.append(Gap(device, max(first, delivered[0] + 1), final, delivered[1], newest_ms))
    fresh: list[schema.Batch] = []
    if gaps:
        fresh, missing = await fill(tracker, client, gaps, schema.Batch(schema.empty_rows(0)))
        left += [GapRecord(r.gap, Reason.REFUSED) if r.reason in _UNKNOWN else r for r in missing]
        now = tracker.last
        for gap in gaps:  # what the history did not give up to the last refused seq
            assert gap.device is not None and gap.last is not None
            done, done_ms = now[gap.device.encode()]
            if done < gap.last:
                tail = Gap(gap.device, max(gap.first, done + 1), gap.last, done_ms, gap.before_ms)
                left.append(GapRecord(tail, Reason.REFUSED))
    for gap, _ in left:  # accounted for: a later sample must not report them again
        assert gap.device is not None and gap.last is not None
        if tracker.last.get(gap.device.encode(), (-1, 0))[0] < gap.last:
            tracker.remember(gap.device.encode(), gap.last, gap.before_ms)
    return fresh, left
