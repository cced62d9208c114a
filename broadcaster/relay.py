"""The live relay's samples: what the broadcaster's subscriber receives, put through
delivery's intake (delivery.intake) as the logger, the bridges and the scorer do.

The subscriber misses what ZeroMQ drops: the first ticks of a producer that starts after
it (the slow joiner), a producer's ticks while it reconnects after a restart, messages past
the high-water mark. The intake finds each such jump by seq and refills it from the
producers' history before the samples after it; what the history cannot give comes out as
gap records, which clients get as gap messages (the same message a resume sends), each
just before the next sample of its device.

What a live client is owed starts where the broadcaster started taking a device: a device
some producer already had when the relay began (or one the relay has met before, taken
again after its group was not for a while) starts at its first sample received; a device
first met later (a producer started after the broadcaster, a device that appeared) gets
what the history holds of its series first, as the logger does. Seqs from before the
producer's current run (`earlier_run`) were never owed to a live client: they are neither
sent nor counted.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from common import schema
from common.bus import Subscriber
from common.logs import Every
from common.shards import device_group
from delivery.client import CatchupClient
from delivery.gaps import GapRecord, summary
from delivery.intake import Delivery, Intake, Positions
from delivery.protocol import PAST_ALL
from delivery.reasons import Reason
from delivery.seqs import first_seqs

log = logging.getLogger(__name__)

# A producer that does not answer about devices first met is asked again this often: each
# question the producers leave unanswered holds the live stream up for its timeout.
RETRY_S = 30.0
# At start, how long a producer has to say which devices it publishes. A running one
# answers within milliseconds; one that answers later was not running when the relay began
# (the question waited for it to bind), so its devices are met as new: their series is
# refilled. Erring that way costs a refill; the other way would lose samples.
START_ANSWER_S = 0.25


@dataclass(frozen=True)
class Refill:
    """Rows the producers' history gave: sent a chunk at a time (Fanout.send_paced), as a
    refill may be large; live rows never wait for a client."""

    batch: schema.Batch


# Live rows to send, refilled rows, or the gap records to name there.
Item = schema.Batch | Refill | list[GapRecord]


class Relay:
    """The subscriber's batches in, the batches and gap records to send out, in order."""

    def __init__(self, subscriber: Subscriber, client: CatchupClient) -> None:
        self.subscriber = subscriber
        self.client = client
        self.intake = Intake(client, place=self._place, retry_s=RETRY_S)
        self.known: set[str] = set()  # devices taken up where the subscriber finds them
        self._taking = schema.empty_rows(0)  # the rows being put through the intake
        self.refilled = 0  # samples the producers' history gave
        self.gap_records: Counter[str] = Counter()  # by reason
        self.gap_samples: Counter[str] = Counter()  # by reason
        self._refills_told = Every(5.0)  # a log line at most this often
        self._gaps_told = Every(5.0)
        self._untold = 0  # samples refilled since the last line

    @property
    def retry_s(self) -> float:
        """How soon `take` wants to be called even without samples (a retry is due)."""
        return self.intake.retry_s

    async def begin(self) -> None:
        """Ask the producers which devices they publish now (once the subscriber is
        connected): those are taken up at their first sample received."""
        client = CatchupClient(self.client.endpoints, self.client.security, START_ANSWER_S)
        try:
            answer = await client.fetch({}, PAST_ALL)
        finally:
            client.close()
        if answer is None:
            log.info("no producer answered yet: devices met later get their series refilled")
            return
        self.known |= answer[1].known
        log.info("%d device(s) already publishing: relayed from their next sample", len(self.known))

    async def take(self, received: list[schema.Batch]) -> list[Item]:
        """What to send for one receive: its samples, what the history gave before them
        and the gaps it could not fill, in the order clients must get them."""
        out: list[Item] = []
        for batch in schema.merge(received):
            self._taking = batch.rows
            for delivery in await self.intake.take([batch]):
                out += self._items(delivery, live=True)
                if len(delivery.rows[-1]) < len(batch):  # some rows were repeats
                    out += await self._started_over(batch)
        refused = self.subscriber.take_refused()
        if refused is not None:
            self._taking = refused
            for delivery in await self.intake.take([], refused):
                out += self._items(delivery)
        if math.isfinite(self.intake.retry_s):  # devices wait for an answer
            out += self._items(await self.intake.retry())
        return out

    def close(self) -> list[Item]:
        """On stop: the gaps still unknown (devices met while no producer answered)."""
        return self._items(self.intake.close())

    def retake(self, groups: Iterable[int]) -> None:
        """The subscriber takes these device groups again: their devices start anew at
        their next sample, not after a jump over the time they were not taken."""
        wanted = set(groups)
        self.intake.forget(d for d in self.known if device_group(d) in wanted)

    async def _started_over(self, batch: schema.Batch) -> list[Item]:
        """Rows dropped as repeats that are newer than the last sample relayed of their
        device (a repeat is the same sample again, never a newer one): its series started
        over at lower seqs (a producer whose state file was removed). Such devices are
        met anew, and those rows relayed."""
        last = self.intake.tracker.last
        rows = batch.rows
        seen = [last.get(bytes(d), (-1, 0)) for d in rows["device"].tolist()]
        seqs = np.array([s for s, _ in seen], np.int64)
        stamps = np.array([t for _, t in seen], np.int64)
        again = (rows["seq"].astype(np.int64) <= seqs) & (rows["ts_ms"] > stamps)
        if not again.any():
            return []
        devices = {schema.device_name(d) for d in rows["device"][again].tolist()}
        log.warning(
            "%d device(s) started over at lower seqs (%s): relayed as a new series",
            len(devices),
            ", ".join(sorted(devices)[:3]),
        )
        self.intake.forget(devices)
        mine = np.isin(rows["device"], rows["device"][again])
        self._taking = rows[mine]
        out: list[Item] = []
        for delivery in await self.intake.take([batch.with_rows(rows[mine])]):
            out += self._items(delivery, live=True)
        return out

    async def _place(self, devices: list[str]) -> Positions:
        """Of devices first met, where the known ones start: just before their first seq
        among the rows being taken. The others are new: their series is refilled."""
        firsts = first_seqs([schema.Batch(self._taking)])
        placed = {
            device: (firsts[device][0] - 1, firsts[device][1])
            for device in devices
            if device in self.known and device in firsts
        }
        self.known.update(devices)
        return placed

    def _items(self, delivery: Delivery, live: bool = False) -> list[Item]:
        """A delivery's rows (the received batch, if `live`, is the last of them; the
        others came from the history) and its gap records, in order."""
        self.refilled += delivery.refilled
        self._untold += delivery.refilled
        if self._untold and self._refills_told(time.monotonic()):
            log.info("relayed %d missed sample(s) from the producers' history", self._untold)
            self._untold = 0
        rows: list[schema.Batch | Refill] = [Refill(b) for b in delivery.rows if len(b)]
        if live and delivery.rows and len(delivery.rows[-1]):
            rows[-1] = delivery.rows[-1]
        gaps = [record for record in delivery.gaps if record.reason != Reason.EARLIER_RUN]
        if not gaps:
            return list(rows)
        for gap, reason in gaps:
            assert gap.last is not None  # only a resume leaves a gap open
            self.gap_records[str(reason)] += 1
            self.gap_samples[str(reason)] += gap.last - gap.first + 1
        if self._gaps_told(time.monotonic()):
            log.warning("gap in the live stream, named to clients: %s", summary(gaps))
        return interleave(rows, gaps)


def interleave(rows: list[schema.Batch | Refill], gaps: list[GapRecord]) -> list[Item]:
    """The rows, with each gap record just before the first row of its device that follows
    it (a client takes a gap message as what comes before the device's next sample); a
    record no row follows comes last."""
    cuts: dict[tuple[int, int], list[GapRecord]] = {}
    for record in gaps:
        assert record.device is not None and record.to_seq is not None
        name = schema.device_bytes(record.device)
        at = (len(rows), 0)
        for i, item in enumerate(rows):
            part = _batch(item).rows
            after = np.flatnonzero((part["device"] == name) & (part["seq"] > record.to_seq))
            if len(after):
                at = (i, int(after[0]))
                break
        cuts.setdefault(at, []).append(record)
    out: list[Item] = []
    for i, item in enumerate(rows):
        batch, start = _batch(item), 0
        for cut in sorted(k for b, k in cuts if b == i):
            if cut > start:
                out.append(_like(item, batch.with_rows(batch.rows[start:cut])))
            out.append(cuts[(i, cut)])
            start = cut
        out.append(_like(item, batch.with_rows(batch.rows[start:])) if start else item)
    if (len(rows), 0) in cuts:
        out.append(cuts[(len(rows), 0)])
    return out


def _batch(item: schema.Batch | Refill) -> schema.Batch:
    return item.batch if isinstance(item, Refill) else item


def _like(item: schema.Batch | Refill, batch: schema.Batch) -> schema.Batch | Refill:
    """`batch`, refilled if `item` was."""
    return Refill(batch) if isinstance(item, Refill) else batch
