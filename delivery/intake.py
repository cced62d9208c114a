"""The intake: what every consumer of the stream puts its batches through before delivering.

Batches go in as they come from the bus; what comes out is the rows to deliver, in order,
and the gap records of what cannot be delivered. Behind it: the seq tracker (duplicates,
jumps), the refill from the producers' history, series starts and the accounting of
refused messages, all of this package.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from common import schema
from delivery import refused as refusals
from delivery.client import CatchupClient
from delivery.gaps import GapRecord
from delivery.refill import fill, refill
from delivery.seqs import SeqTracker, first_seqs
from delivery.starts import RETRY_S, SeriesStarts, before_first

log = logging.getLogger(__name__)

Positions = dict[str, tuple[int, int]]  # device -> (seq, timestamp ms) delivered up to
Place = Callable[[list[str]], Awaitable[Positions]]


@dataclass
class Delivery:
    """What to deliver now: `rows` in this order, then the gap records `gaps` (their
    timestamps shown at `precision`). `refilled` of the rows came from the history."""

    rows: list[schema.Batch] = field(default_factory=list)
    gaps: list[GapRecord] = field(default_factory=list)
    precision: int = schema.SECONDS
    refilled: int = 0
    series: list[dict] = field(default_factory=list)  # the series the producers named


class Intake:
    """Turns the batches a consumer receives into rows to deliver and gap records.

    The guarantee: every (device, seq) the producers published after where the consumer's
    destination stood is delivered once, in seq order per device, or named in exactly one
    gap record with one reason (delivery.reasons). That holds across seq jumps (the
    producers' history is asked before later rows are delivered), devices first met
    mid-series (what is held of their series is delivered first, the rest before it
    recorded), messages the bus refused (refilled or recorded `refused`) and producers that
    do not answer (`unavailable`, or asked again).

    Where the destination stood: `delivered`, positions known at start (a log's tail), and
    `place`, asked once for devices first met (a broker's last stored sample); a device
    neither knows of is new to the destination. `keep` limits what is refilled to the
    devices this consumer delivers (a mask over device ids; None: all). `new_series` says
    whether the series the producers name (delivery.protocol's `series`) is another than
    the destination's: if so the destination starts afresh (a logger's new file), so the
    seqs delivered so far are forgotten and the devices met anew; each Delivery carries the
    series named while it was made, for the consumer to follow.
    """

    def __init__(
        self,
        client: CatchupClient,
        delivered: Positions | None = None,
        place: Place | None = None,
        keep: Callable[[np.ndarray], np.ndarray] | None = None,
        retry_s: float = RETRY_S,
        new_series: Callable[[list[dict]], bool] | None = None,
    ) -> None:
        self.client = client
        self.tracker = SeqTracker.resuming(delivered or {})
        self.place = place
        self.keep = keep
        self.starts = SeriesStarts(self.tracker, client, keep, retry_s)
        self.new_series = new_series

    @property
    def retry_s(self) -> float:
        """How soon the intake wants `retry()` called (while devices wait for an answer)."""
        return self.starts.retry_s if self.starts.unconfirmed else float("inf")

    async def catch_up(self) -> Delivery | None:
        """On start: everything after what `delivered` names. None if there was nothing to
        ask, or no producer answered (the live samples then find the gaps)."""
        after, newest = self.tracker.after()
        if not after:
            return None
        fresh, left, facts = await refill(self.tracker, self.client, after, newest, self.keep)
        if facts is None:
            log.info("no answer from the catch-up endpoint: continuing with live samples")
            return None
        if self._afresh(facts.series):  # its devices are met anew as their samples come
            return Delivery(series=facts.series)
        newcomers = {d: f for d, f in first_seqs(fresh).items() if d not in after}
        left += before_first(newcomers, facts)  # devices the destination has not held
        count = sum(len(b) for b in fresh)
        log.info("caught up on %d sample(s) missed while stopped", count)
        precision = fresh[0].precision if fresh else schema.SECONDS
        return Delivery(fresh, left, precision, count, series=facts.series)

    async def take(
        self, batches: list[schema.Batch], refused: np.ndarray | None = None
    ) -> list[Delivery]:
        """What to deliver for one receive: its `batches` and the readable rows of the
        messages refused among them (common.bus: Subscriber.take_refused), in order."""
        marks = refusals.spans(refused) if refused is not None else {}
        out = [await self._take(batch, marks) for batch in schema.merge(batches)]
        if refused is not None and len(refused):
            out.append(await self._refused(refused))
        return out

    async def retry(self) -> Delivery:
        """Ask again about devices no producer answered about (at most every `retry_s`)."""
        return Delivery(gaps=await self.starts.retry())

    def close(self) -> Delivery:
        """On stop: what is still unknown about devices met while no producer answered."""
        return Delivery(gaps=self.starts.unanswered())

    def forget(self, devices: Iterable[str]) -> None:
        """Devices to meet anew, through `place`: a consumer that stopped taking them for a
        while (a broadcaster takes only the device groups its clients want), so that they
        are not taken for a jump over that time, or whose series started over at lower
        seqs (they would be taken for repeats)."""
        names = list(devices)
        self.tracker.forget(name.encode() for name in names)
        for name in names:
            self.starts.unconfirmed.pop(name, None)

    async def _take(self, batch: schema.Batch, refused: refusals.Spans) -> Delivery:
        out = Delivery(precision=batch.precision)
        new = self.tracker.unseen(batch)
        if new:
            new = await self._placed(new)
        if new:
            met = await self.starts.meet(new, batch)
            if not await self._followed(batch, out):
                self._add(out, met.rows, met.gaps)
        gaps = self.tracker.gaps(batch)
        if gaps:
            fresh, left = await fill(self.tracker, self.client, gaps, batch)
            if not await self._followed(batch, out):  # else a jump into another series
                self._add(out, fresh, [refusals.refused_or(r, refused) for r in left])
        out.rows.append(self.tracker.admit(batch))
        return out

    def _afresh(self, named: list[dict]) -> bool:
        """True (and the seqs delivered forgotten) if `named` is another series than the
        destination's."""
        if not named or self.new_series is None or not self.new_series(named):
            return False
        self.tracker.forget()
        self.starts.unconfirmed.clear()
        return True

    async def _followed(self, batch: schema.Batch, out: Delivery) -> bool:
        """If the producers' last answer names another series: `out` starts it, and the
        batch's devices are met as in a new destination (what is held of them first, what
        came before recorded). True if so."""
        out.series = self.client.series
        if not self._afresh(self.client.series):
            return False
        new = self.tracker.unseen(batch)
        if new:
            met = await self.starts.meet(new, batch)
            self._add(out, met.rows, met.gaps)
        return True

    async def _refused(self, rows: np.ndarray) -> Delivery:
        """Refused rows' seqs that the samples after them did not already account for."""
        last = self.tracker.last
        await self._placed([d for d in refusals.spans(rows) if schema.device_bytes(d) not in last])
        out = Delivery()
        self._add(out, *await refusals.account(self.tracker, self.client, self.starts, rows))
        return out

    async def _placed(self, devices: list[str]) -> list[str]:
        """Of devices first met, those the destination holds nothing of; the others
        continue after what it holds (their gap up to now is then refilled)."""
        if self.place is None or not devices:
            return devices
        where = await self.place(devices)
        for device, (seq, ts_ms) in where.items():
            self.tracker.remember(device.encode(), seq, ts_ms)
        return [d for d in devices if d not in where]

    @staticmethod
    def _add(out: Delivery, rows: list[schema.Batch], gaps: list[GapRecord]) -> None:
        out.rows += rows
        out.gaps += gaps
        out.refilled += sum(len(b) for b in rows)
