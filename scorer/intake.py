"""The scorer's samples from the bus: a thin user of delivery's intake (delivery.intake).

The truth the scorer keeps is every labelled sample of every producer, once, in seq order
per device. Delivery gives exactly that, as it does to the logger and the bridges: a device
first met mid-series (a scorer started after the stream) gets what the producers' history
still holds of its series first, a seq jump is refilled before later samples, refused
messages are refilled or accounted for, and what cannot be had comes as gap records with
one reason each. The scorer has no gaps file: it counts those records by reason for its
report and /metrics, and logs them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from common import schema
from common.bus import PLAIN, Security, Subscriber
from common.logs import Every
from delivery.client import CatchupClient
from delivery.gaps import GapRecord, summary
from delivery.intake import Delivery, Intake
from delivery.reasons import Reason

log = logging.getLogger(__name__)

# Seqs known never to have been samples: the producer skipped them, or refused to publish
# them. Every other reason names samples that were, or may have been, published.
NEVER_SAMPLES = frozenset({Reason.NOT_PRODUCED, Reason.INVALID_INPUT})


class SampleIntake:
    """Subscribes to the producers and hands out what delivery lets through, counting gaps."""

    def __init__(self, pub: list[str], catchup: list[str], security: Security = PLAIN) -> None:
        self.subscriber = Subscriber(pub, security=security, keep_refused=True)
        self.client = CatchupClient(catchup, security=security)
        self.delivery = Intake(self.client)
        self.refilled = 0  # samples the producers' history gave (first meetings, jumps)
        self.gap_records: Counter[str] = Counter()  # by reason
        self.gap_samples: Counter[str] = Counter()  # by reason
        self._warn = Every(5.0)

    async def receive(self, timeout: float, stop: asyncio.Event) -> list[schema.Batch]:
        """The samples to add to the truth, in order: what the bus gave within `timeout` s
        (less when devices wait for the producers to answer) and what was refilled."""
        received = await self.subscriber.receive(min(timeout, self.delivery.retry_s), stop)
        refused = self.subscriber.take_refused()
        deliveries = await self.delivery.take(received, refused)
        deliveries.append(await self.delivery.retry())
        return [batch for d in deliveries for batch in self._rows(d) if len(batch)]

    def finish(self) -> None:
        """On stop: what is still unknown (devices no producer ever answered about)."""
        self._rows(self.delivery.close())

    @property
    def missed(self) -> int:
        """Samples that were, or may have been, published and are not in the truth."""
        return sum(n for reason, n in self.gap_samples.items() if reason not in NEVER_SAMPLES)

    @property
    def received(self) -> int:
        return self.subscriber.received

    @property
    def malformed(self) -> int:
        return self.subscriber.rejected

    def _rows(self, delivery: Delivery) -> list[schema.Batch]:
        self.refilled += delivery.refilled
        self._count(delivery.gaps)
        return delivery.rows

    def _count(self, records: list[GapRecord]) -> None:
        for gap, reason in records:
            assert gap.last is not None  # only a resume leaves a gap open
            self.gap_records[str(reason)] += 1
            self.gap_samples[str(reason)] += gap.last - gap.first + 1
        if records and self._warn(time.monotonic()):
            log.warning("gap: %s", summary(records))

    def gaps(self) -> dict[str, dict[str, int]]:
        """Reason -> records and samples, for the report."""
        return {
            reason: {"records": self.gap_records[reason], "samples": self.gap_samples[reason]}
            for reason in sorted(self.gap_records)
        }

    def close(self) -> None:
        self.client.close()
        self.subscriber.close()
