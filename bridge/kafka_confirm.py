"""What a Kafka broker confirmed committing, kept until the commit is visible for good.

A committed transaction is final only once its end markers are written to every partition
it wrote. Kafka's coordinator logs the decision first and writes the markers after; when
it cannot find a partition's leader meanwhile it skips that partition's marker, taking the
partition for deleted. A restarting single broker is such a moment (measured with Kafka
4.4: its coordinator resumes a commit before its own partitions have a leader again), and
so is a broker stopping in the middle of a commit. The records without their marker then
stay open: read_committed consumers stop in front of them, and the next marker of the same
producer on that partition decides their fate — an abort marker throws away samples the
broker had confirmed.

So the sink keeps what was confirmed until every partition's stable end (the offset
read_committed consumers may read up to) has passed the high watermark taken after the
commit: from then on the markers are written. After a failure, or a checkpoint the stable
ends do not pass (`stuck`: a marker lost for good, which would hold every read_committed
reader back), `again` gives back what the topic lost, to be sent again.
"""

from __future__ import annotations

import logging
import time
from collections import deque

from confluent_kafka import KafkaException

from bridge.kafka_tails import Tails
from bridge.message import Item, starts_of, unstored

log = logging.getLogger(__name__)

CHECK_EVERY = 0.5  # seconds between two looks at the partitions' stable ends
# A checkpoint the stable ends have not passed after this long has lost an end marker for
# good: any open transaction, ours or another shard's, ends within the transactions'
# timeout (bridge.kafka.TRANSACTION_TIMEOUT_MS, 10 s: the coordinator aborts it), so twice
# that is past anything a live transaction explains. The sink then starts a new producer,
# whose abort markers end those records, and sends again what they held.
STUCK_AFTER = 20.0


class Confirmations:
    """Messages of committed transactions whose end markers are not known to be written.

    Blocking (it asks the cluster for offsets): the sink calls it from its worker thread."""

    def __init__(self, tails: Tails, stuck_after: float = STUCK_AFTER) -> None:
        self._tails = tails
        self._stuck_after = stuck_after
        self._held: deque[Item] = deque()
        # (how many of the oldest held messages it covers, each partition's high watermark)
        self._checkpoint: tuple[int, dict[int, int]] | None = None
        self._checkpoint_at = 0.0
        self._next_check = 0.0

    def __len__(self) -> int:
        return len(self._held)

    @property
    def samples(self) -> int:
        """Samples held: confirmed, not known to be final yet."""
        return sum(item.samples for item in self._held)

    def stuck(self) -> bool:
        """Whether the stable ends have not passed the checkpoint for STUCK_AFTER s."""
        waited = time.monotonic() - self._checkpoint_at
        return self._checkpoint is not None and waited > self._stuck_after

    def due(self) -> bool:
        """Whether `check` would look at the cluster now."""
        return bool(self._held) and time.monotonic() >= self._next_check

    def add(self, messages: list[Item]) -> None:
        """Messages of a transaction the broker just confirmed."""
        self._held.extend(messages)

    def check(self) -> None:
        """At most every CHECK_EVERY s: let go of the messages a checkpoint covers once
        every partition's stable end has passed it, and take a new checkpoint. A cluster
        that does not answer is asked again next time."""
        now = time.monotonic()
        if now < self._next_check or not self._held:
            return
        self._next_check = now + CHECK_EVERY
        tails = self._tails
        try:
            if self._checkpoint is not None:
                covered, highs = self._checkpoint
                stable = tails.ends(list(highs), committed=True)
                if any(stable[p] < high for p, high in highs.items()):
                    return
                for _ in range(covered):
                    self._held.popleft()
                self._checkpoint = None
            if self._held:
                partitions = list(range(tails.partitions))
                self._checkpoint = (len(self._held), tails.ends(partitions, committed=False))
                self._checkpoint_at = time.monotonic()
        except (KafkaException, TimeoutError):
            return

    def again(self, confirmed: dict[str, tuple[int, int]]) -> list[Item]:
        """After a failure, with the tails just read back: the held messages (or their
        parts) the topic lacks, oldest first; they are no longer held (the sink adds them
        again once sent). `confirmed` is where the sink believed each device stood."""
        last = self._tails.last
        lost = [part for item in self._held if (part := unstored(item, last)) is not None]
        self._held.clear()
        self._checkpoint = None
        first: dict[str, int] = {}
        for item in lost:
            for device, seq in starts_of(item).items():
                first.setdefault(device, seq)
        for device, (seq, _) in confirmed.items():
            stored = last.get(device, (-1, 0))[0]
            if stored < seq and first.get(device, seq + 1) > stored + 1:
                log.error(
                    "%s lost samples of %s it had confirmed (seq %d to %d at least), "
                    "beyond what the bridge still holds",
                    self._tails.topic,
                    device,
                    stored + 1,
                    first.get(device, seq + 1) - 1,
                )
        if lost:
            log.warning(
                "%s lost %d sample(s) of committed transactions (their end markers were "
                "skipped); sending them again",
                self._tails.topic,
                sum(item.samples for item in lost),
            )
        return lost

    def keep(self, messages: list[Item]) -> None:
        """Messages `again` gave that could not be sent: held again, oldest first."""
        self._held.extendleft(reversed(messages))
        self._checkpoint = None
