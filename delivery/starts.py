"""Series starts: what came before a device first met mid-series is fetched or recorded.

A consumer that starts while the producer has been running (or that meets a device for the
first time after it began) would otherwise begin that device's delivery at whatever seq
came first, and nothing would show that earlier samples exist. So when a device is first
met, the intake asks the producers for everything they still hold of it (delivered before
the live rows), and records as a gap what lies between the start of its series
(`series_first`, from the catch-up answer) and the first seq it could deliver:

- `earlier_run`: seqs before the producer's current run began (published by an earlier
  run, or never while it was down: it cannot tell which, and no longer holds them);
- `not_held`: seqs this run published that it no longer holds.

If no producer answers, the devices stay unconfirmed and are asked about again every few
seconds; the gap is recorded once an answer comes (the rows are no longer fetched then:
they would be delivered out of order). A consumer stopped before any answer records, for
each such device, seqs 0 to its first delivered one as `unavailable`: they may or may not
exist.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from common import schema
from delivery.client import CatchupClient, Facts
from delivery.gaps import Gap, GapRecord
from delivery.protocol import PAST_ALL
from delivery.reasons import Reason
from delivery.refill import refill
from delivery.seqs import SeqTracker, first_seqs

log = logging.getLogger(__name__)

RETRY_S = 5.0


@dataclass(frozen=True)
class Met:
    """What a first meeting gave: rows to deliver before the live ones, gaps to record."""

    rows: list[schema.Batch]
    gaps: list[GapRecord]


class SeriesStarts:
    """Finds what came before the first seq delivered of each device first met."""

    def __init__(
        self,
        tracker: SeqTracker,
        client: CatchupClient,
        keep: Callable[[np.ndarray], np.ndarray] | None = None,
        retry_s: float = RETRY_S,
    ) -> None:
        self.tracker = tracker
        self.client = client
        self.keep = keep
        self.retry_s = retry_s
        self.unconfirmed: dict[str, tuple[int, int]] = {}  # device -> (first seq delivered, ts)
        self._next_retry = 0.0

    async def meet(self, devices: list[str], batch: schema.Batch) -> Met:
        """`devices` appear in `batch` for the first time: fetch what is held of them."""
        if self.unconfirmed and time.monotonic() < self._next_retry:
            # The producers did not answer a moment ago: do not stall on them again.
            firsts = first_seqs([batch])
            self._defer({d: firsts[d] for d in devices if d in firsts})
            return Met([], [])
        after = dict.fromkeys(devices, -1)  # everything held of these, nothing of others
        fresh, left, facts = await refill(
            self.tracker, self.client, after, PAST_ALL, keep=self.keep
        )
        firsts = first_seqs([*fresh, batch])
        met = {d: firsts[d] for d in devices if d in firsts}
        if facts is None:
            self._defer(met)
            self._next_retry = time.monotonic() + self.retry_s
            return Met(fresh, left)
        return Met(fresh, left + before_first(met, facts))

    async def retry(self, now: float | None = None) -> list[GapRecord]:
        """Ask again about unconfirmed devices (at most every `retry_s`): their gaps, if any."""
        now = time.monotonic() if now is None else now
        if not self.unconfirmed or now < self._next_retry:
            return []
        self._next_retry = now + self.retry_s
        answer = await self.client.fetch(dict.fromkeys(self.unconfirmed, PAST_ALL), PAST_ALL)
        if answer is None:
            return []
        _, facts = answer
        # Devices no producer has a series for (e.g. only ever seen in refused messages)
        # have nothing before them to record.
        asked, self.unconfirmed = self.unconfirmed, {}
        return before_first({d: f for d, f in asked.items() if d in facts.series_first}, facts)

    def unanswered(self) -> list[GapRecord]:
        """On stop: devices no producer ever answered about. What came before their first
        delivered seq is not known; it is recorded from seq 0, as 'unavailable'."""
        gaps = [
            GapRecord(Gap(device, 0, first - 1, ts_ms, ts_ms), Reason.UNAVAILABLE)
            for device, (first, ts_ms) in self.unconfirmed.items()
            if first > 0
        ]
        self.unconfirmed = {}
        return gaps

    def _defer(self, met: dict[str, tuple[int, int]]) -> None:
        if met and not self.unconfirmed:
            log.warning(
                "no producer answered about %d device(s) met for the first time; "
                "asking again every %g s",
                len(met),
                self.retry_s,
            )
        self.unconfirmed.update(met)


def before_first(met: dict[str, tuple[int, int]], facts: Facts) -> list[GapRecord]:
    """The gaps between each device's series start and `met[device]`, the (seq, timestamp)
    of the first sample delivered of it."""
    gaps = []
    for device, (first, ts_ms) in met.items():
        start = facts.series_first.get(device)
        if start is None or start >= first:
            continue
        run_first = facts.run_first.get(device, start)
        split = min(max(run_first, start), first)
        if split > start:
            gaps.append(
                _withheld_or(Gap(device, start, split - 1, ts_ms, ts_ms), Reason.EARLIER_RUN, facts)
            )
        if first > split:
            gaps.append(
                _withheld_or(Gap(device, split, first - 1, ts_ms, ts_ms), Reason.NOT_HELD, facts)
            )
    return gaps


def _withheld_or(gap: Gap, reason: Reason, facts: Facts) -> GapRecord:
    """The producer's own reason where it withheld the whole range (e.g. a bad first row)."""
    assert gap.device is not None and gap.last is not None
    return GapRecord(gap, facts.withheld_reason(gap.device, gap.first, gap.last) or reason)
