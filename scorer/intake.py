"""The scorer's samples from the bus: every producer's, new ones only, in seq order per
device.

On start it asks each producer for all it still holds, so a scorer started a little after
the stream still sees its beginning; then it takes the live samples, dropping repeats.
A device met for the first time, or a jump in a device's seq (samples the bus dropped),
makes it ask the producers' history for what came before; what the history no longer
holds is counted and logged, never hidden.
This is the scorer's one contact with the bus, kept small so that it can move to a shared
intake (seq tracking and refills) without touching the rest.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from common import schema
from delivery import protocol as catchup
from common.bus import PLAIN, Dealer, Security, Subscriber
from common.layout import Layout

log = logging.getLogger(__name__)


class Intake:
    def __init__(self, pub: list[str], catchup_endpoints: list[str],
                 security: Security = PLAIN) -> None:
        self.subscriber = Subscriber(pub, security=security)
        self._dealers = [Dealer(e, security) for e in catchup_endpoints]
        self._slot: dict[bytes, int] = {}
        self._last = np.zeros(0, np.int64)
        self._layout = Layout()
        self._layout_slots = np.zeros(0, np.int64)
        self._pending: list[schema.Batch] = []
        self.caught_up = 0  # samples the producers gave at start
        self.repeats = 0  # samples seen before, dropped
        self.missed = 0  # seqs skipped by a jump that the history could not fill
        self.refilled = 0  # samples fetched from the history for new devices and jumps

    async def start(self, timeout: float = 1.0) -> int:
        """Ask every producer for what it holds (after subscribing, so nothing falls between)."""
        request = catchup.encode_request({}, 0)
        answers = await asyncio.gather(*(catchup.ask(d, request, timeout) for d in self._dealers))
        for answer in answers:
            if answer is not None:
                batches, _ = answer
                self._pending += batches
                self.caught_up += sum(len(b) for b in batches)
        return self.caught_up

    async def _fetch(self, after: dict[str, int], timeout: float = 1.0) -> list[schema.Batch]:
        """What the producers hold of these devices after these seqs (-1: all of it)."""
        request = catchup.encode_request(after, 0)
        answers = await asyncio.gather(*(catchup.ask(d, request, timeout) for d in self._dealers))
        fetched = [b for answer in answers if answer is not None for b in answer[0]]
        self.refilled += sum(len(b) for b in fetched)
        return fetched

    def _needs(self, rows: np.ndarray) -> dict[str, int]:
        """Devices of a batch met for the first time (-1), or whose seq jumps (last seq)."""
        if self._layout.ticks(rows["device"]) is not None:
            seqs = rows["seq"][: len(self._layout)].astype(np.int64)
            last = self._last[self._layout_slots]
            if (seqs <= last + 1).all():
                return {}
        names, first = np.unique(rows["device"], return_index=True)
        needs = {}
        for name, row in zip(names.tolist(), first.tolist(), strict=True):
            slot = self._slot.get(bytes(name))
            last = -1 if slot is None else int(self._last[slot])
            if slot is None or int(rows["seq"][row]) > last + 1:
                needs[schema.device_name(name)] = last
        return needs

    async def receive(self, timeout: float, stop: asyncio.Event) -> list[schema.Batch]:
        batches, self._pending = self._pending, []
        if not batches:
            batches = await self.subscriber.receive(timeout, stop)
        out = []
        for batch in schema.merge(batches):
            needs = self._needs(batch.rows) if self._dealers else {}
            for part in await self._fetch(needs) if needs else []:
                fresh = self._admit(part)
                if len(fresh):
                    out.append(fresh)
            fresh = self._admit(batch)
            if len(fresh):
                out.append(fresh)
        return out

    def _admit(self, batch: schema.Batch) -> schema.Batch:
        rows = batch.rows
        if not len(rows):
            return batch
        ticks = self._layout.ticks(rows["device"])
        if ticks is not None:
            seqs = rows["seq"].astype(np.int64).reshape(ticks, -1)
            last = self._last[self._layout_slots]
            if (seqs[0] == last + 1).all() and (np.diff(seqs, axis=0) == 1).all():
                self._last[self._layout_slots] = seqs[-1]
                return batch
        return batch.with_rows(self._general(rows))

    def _general(self, rows: np.ndarray) -> np.ndarray:
        """Any batch: sorted per device by seq, repeats dropped, jumps counted."""
        names, inverse = np.unique(rows["device"], return_inverse=True)
        slots = np.array([self._slot_of(bytes(n)) for n in names.tolist()], np.int64)[inverse]
        seqs = rows["seq"].astype(np.int64)
        order = np.lexsort((seqs, slots))
        s, q = slots[order], seqs[order]
        starts = np.r_[True, s[1:] != s[:-1]]
        prev = np.empty_like(q)
        prev[1:] = q[:-1]
        prev[starts] = -1
        prev = np.maximum(prev, self._last[s])  # rows are compared with all that came before
        keep = q > prev
        self.repeats += int((~keep).sum())
        new_device = prev < 0
        jumps = np.where(keep & ~new_device, q - prev - 1, 0)
        jumped = int(jumps.sum())
        if jumped:
            self.missed += jumped
            log.warning("%d sample(s) missed on the bus (a seq jump); %d so far", jumped,
                        self.missed)
        kept = order[keep]
        ends = np.r_[np.flatnonzero(starts)[1:], len(s)] - 1
        self._last[s[ends]] = np.maximum(self._last[s[ends]], q[ends])
        layout = Layout.of(rows["device"])
        if layout is not None:
            self._layout = layout
            self._layout_slots = np.array(
                [self._slot[bytes(d)] for d in layout.devices.tolist()], np.int64
            )
        return rows[np.sort(kept)]

    def _slot_of(self, name: bytes) -> int:
        slot = self._slot.get(name)
        if slot is None:
            slot = self._slot[name] = len(self._slot)
            if slot >= len(self._last):
                grow = max(64, 2 * len(self._last)) - len(self._last)
                self._last = np.concatenate([self._last, np.full(grow, -1, np.int64)])
        return slot

    @property
    def received(self) -> int:
        return self.subscriber.received

    @property
    def malformed(self) -> int:
        return self.subscriber.rejected

    def close(self) -> None:
        for dealer in self._dealers:
            dealer.close()
        self.subscriber.close()
