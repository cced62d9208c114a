"""What a resuming WebSocket client missed: asked of the producers' history, bounded, and
the seqs it cannot have named exactly.

The producers answer on their catch-up endpoints (delivery.protocol), so a resume works
whichever broadcaster the client reaches. Each producer sends at most `limit` samples, the
newest; of all answers the newest `limit` are kept. Per device, what the client gets is then
a run of seqs ending at the newest held, and what lies between its `since` and that run is
one or two gaps, named with the reasons of delivery.reasons: `not_held` (older than the
producer keeps, or from before it restarted), `not_produced` (a range the producer skipped:
paused, or behind schedule), `invalid_input` (a range it withheld), `over_limit` (held, but
beyond the bound of one resume) and `unavailable` (a producer did not answer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from common import schema
from delivery import protocol
from delivery.client import Answer, CatchupClient, Facts
from delivery.gaps import Gap, GapRecord
from delivery.reasons import Reason

ANSWER_TIMEOUT_S = 1.0  # silence after which a producer's answer is given up


class Watermark:
    """Per device, the last seq the client has (or was told it will not get): later samples
    pass only above it, so nothing reaches it twice, whatever path it came by."""

    def __init__(self, marks: dict[str, int]) -> None:
        self.marks = {device.encode(): seq for device, seq in marks.items()}  # others all pass

    def admit(self, batch: schema.Batch) -> schema.Batch:
        rows = batch.rows
        if not len(rows):
            return batch
        keep = np.zeros(len(rows), bool)
        names, inverse = np.unique(rows["device"], return_inverse=True)
        seqs = rows["seq"].astype(np.int64)
        for i, name in enumerate(names.tolist()):
            mark = self.marks.get(name)
            index = np.flatnonzero(inverse == i)
            ours = seqs[index]
            if mark is None:
                mark = int(ours[0]) - 1
            # strictly above the mark and above every seq before it: no repeat gets through
            running = np.maximum.accumulate(np.concatenate(([mark], ours)))[:-1]
            keep[index] = ours > running
            self.marks[name] = max(mark, int(ours.max()))
        return batch.with_rows(rows[keep])

    def named(self, records: list[GapRecord]) -> list[GapRecord]:
        """Of gap records of the live stream, what the client still needs named: the part
        of each above its device's mark (nothing if the history already gave or named
        those seqs); the mark then moves past it, so none of them is expected again."""
        out = []
        for record in records:
            assert record.device is not None and record.to_seq is not None
            name = record.device.encode()
            mark = self.marks.get(name)
            if mark is not None and record.to_seq <= mark:
                continue
            first = record.from_seq if mark is None else max(record.from_seq, mark + 1)
            out.append(GapRecord(replace(record.gap, first=first), record.reason))
            self.marks[name] = record.to_seq
        return out


@dataclass
class Plan:
    """What to send a resuming client: the gaps first, then `batches`, then the live samples
    that `watermark` admits."""

    batches: list[schema.Batch]
    gaps: list[GapRecord]
    watermark: Watermark


def plan(after: dict[str, int], after_seq: int | None, answer: Answer, limit: int) -> Plan:
    """Cut the producers' answers to the newest `limit` samples and name what is missing.

    `after` and `after_seq` are what was asked (seqs above `after[device]`, and for every
    other device above `after_seq` unless it is None)."""
    rows, shown = _by_time(answer.batches)
    cut = max(0, len(rows) - limit)
    over, rows, shown = rows[:cut], rows[cut:], shown[cut:]
    kept, dropped = schema.seq_spans(rows), schema.seq_spans(over)
    facts = Facts.of(answer.ends)
    known = facts.known
    devices = set(after)
    if after_seq is not None:
        devices |= {*kept, *dropped, *facts.given_up, *known}
    missing = answer.answered < answer.asked
    gaps: list[GapRecord] = []
    marks: dict[str, int] = {}
    for device in sorted(devices):
        since = after.get(device, after_seq)
        assert since is not None
        over_span = _union(dropped.get(device), facts.given_up.get(device))
        if device in kept:
            first = kept[device][0]
            marks[device] = kept[device][1]
        elif over_span is not None:
            first = over_span[1] + 1
            marks[device] = over_span[1]
        else:  # nothing of it held after `since`: its live samples are all new to it
            if device in after:
                marks[device] = since
                if missing and device not in known:
                    gaps.append(GapRecord(Gap(device, since + 1, None), Reason.UNAVAILABLE))
            continue
        low = max(over_span[0], since + 1) if over_span else first
        if low > since + 1:
            reason = facts.reason(device, since + 1, low - 1)
            gaps.append(GapRecord(Gap(device, since + 1, low - 1), reason))
        if over_span is not None and first > low:
            gaps.append(GapRecord(Gap(device, low, first - 1), Reason.OVER_LIMIT))
    if missing and after_seq is not None:
        gaps.append(GapRecord(Gap(None, after_seq + 1, None), Reason.UNAVAILABLE))
    return Plan(
        batches=_runs(rows, shown),
        gaps=gaps,
        # A device the history does not mention has nothing in it: its live samples are
        # all new (also when its seqs are below a bare `since` of another series).
        watermark=Watermark(marks),
    )


def _by_time(batches: list[schema.Batch]) -> tuple[np.ndarray, np.ndarray]:
    """All rows, oldest first (stable: each producer's own order is kept), with how each
    is shown (its batch's timestamp precision and decimals, as one code)."""
    if not batches:
        return schema.empty_rows(0), np.zeros(0, np.uint8)
    rows = np.concatenate([b.rows for b in batches])
    shown = np.concatenate([np.full(len(b), _shown(b), np.uint8) for b in batches])
    order = np.argsort(rows["ts_ms"], kind="stable")
    return rows[order], shown[order]


def _shown(batch: schema.Batch) -> int:
    return batch.precision * (schema.MAX_DECIMALS + 1) + batch.decimals


def _runs(rows: np.ndarray, shown: np.ndarray) -> list[schema.Batch]:
    """The rows as batches each shown one way (precision, decimals), in order."""
    if not len(rows):
        return []
    edges = np.flatnonzero(np.diff(shown)) + 1
    starts = [0, *edges.tolist()]
    ends = [*edges.tolist(), len(rows)]
    return [
        schema.Batch(rows[a:b], *divmod(int(shown[a]), schema.MAX_DECIMALS + 1))
        for a, b in zip(starts, ends, strict=True)
    ]


def _union(a: tuple[int, int] | None, b: tuple[int, int] | None) -> tuple[int, int] | None:
    if a is None or b is None:
        return a or b
    return min(a[0], b[0]), max(a[1], b[1])


async def fetch(
    client: CatchupClient,
    after: dict[str, int],
    after_seq: int | None,
    limit: int,
    wanted: Callable[[], bool] = lambda: True,
) -> Answer:
    """Everything held after `after` (and `after_seq` for other devices: none by time), at
    most `limit` samples from each producer; nothing if no longer `wanted` once its turn
    comes (the client left while others were served)."""
    return await client.ask(after, protocol.PAST_ALL, after_seq, limit, wanted)
