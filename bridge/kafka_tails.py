"""Where each device's samples end in a Kafka topic, read from the topic itself.

A restarted Kafka bridge continues after the last sample the topic holds of each device,
as committed: it reads the tail of the device's partition with `isolation.level=
read_committed`, so what a killed bridge wrote in a transaction it never committed (and
that the restart aborted by taking over its transactional id) does not count. The tail is
read back in growing chunks until every device asked for is found, or the partition's
start is reached (a device the topic never held); what was read is remembered, so a
device seen later costs only the part not read yet.

Partitions are chosen as Kafka's Java clients choose them (murmur2 of the key), so every
client writing device ids as keys puts a device in the same partition, and the bridge
knows which partition to read for a device.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

try:  # confluent-kafka >= 2.3
    from confluent_kafka import IsolationLevel
except ImportError:  # pragma: no cover
    from confluent_kafka.admin import IsolationLevel  # type: ignore[no-redef]

log = logging.getLogger(__name__)

SEQ_HEADER = "seq"  # "17", or "17-66" for a batch of consecutive samples
TIME_HEADER = "time_ms"  # the (last) sample's time, ms since the epoch
# Records read back first from a partition's end (then 4x more each round): a device's
# last record is usually among the last few per device of its partition, unless a large
# aborted transaction (a killed bridge's last window) lies on top.
FIRST_CHUNK = 2_000
SLOW_SCAN = 5.0  # seconds: a scan taking longer is reported
STUCK_AFTER = 25.0  # seconds a transaction may stay open: writers time out theirs in less


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (the Java client's `Utils.murmur2`), as an unsigned 32-bit int."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    for i in range(0, length - length % 4, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    rest = length % 4
    tail = length - rest
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def last_sample(headers: list[tuple[str, bytes]] | None) -> tuple[int, int] | None:
    """(seq, time ms) of a record's last sample, from its headers; None if it has none."""
    seq = ts = None
    for name, value in headers or ():
        if name == SEQ_HEADER:
            seq = value
        elif name == TIME_HEADER:
            ts = value
    if seq is None:
        return None
    try:
        return int(seq.rpartition(b"-")[2]), int(ts or 0)
    except ValueError:
        return None


class Tails:
    """The committed tail of each device in one topic: (seq, time ms) of its last sample.

    Blocking (confluent-kafka's calls are): the sink calls it from a worker thread."""

    def __init__(self, conf: dict, admin: AdminClient, topic: str, partitions: int) -> None:
        self.topic = topic
        self.partitions = partitions
        self._admin = admin
        self._consumer = Consumer(
            {
                **conf,
                "group.id": "stream-bridge-tails",  # never joined nor committed: assign() only
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
            }
        )
        self.last: dict[str, tuple[int, int]] = {}
        self._read_back_to: dict[int, int] = {}  # partition -> lowest offset read
        self._partition: dict[str, int] = {}

    def partition(self, device: str) -> int:
        found = self._partition.get(device)
        if found is None:
            found = self._partition[device] = partition_of(device.encode(), self.partitions)
        return found

    def find(self, devices: list[str], timeout: float) -> dict[str, tuple[int, int]]:
        """The committed tail of each device the topic holds (devices it never held are
        left out). Raises KafkaException, or TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        wanted: dict[int, set[str]] = defaultdict(set)
        for device in devices:
            if device not in self.last:
                wanted[self.partition(device)].add(device)
        if wanted:
            began = time.monotonic()
            read = self._find(wanted, self._committed_ends(list(wanted), deadline), deadline)
            took = time.monotonic() - began
            (log.info if took > SLOW_SCAN else log.debug)(
                "read %d record(s) of %s back in %.1f s for where %d device(s) left off",
                read,
                self.topic,
                took,
                sum(len(d) for d in wanted.values()),
            )
        return {d: self.last[d] for d in devices if d in self.last}

    def forget(self, devices: list[str]) -> None:
        """These devices' tails are not known any more (a transaction whose outcome is
        unknown wrote them): the next `find` reads their partitions' ends again."""
        for device in devices:  # records may have come above what was read of its partition
            self.last.pop(device, None)
            self._read_back_to.pop(self.partition(device), None)

    def close(self) -> None:
        self._consumer.close()

    def ends(self, partitions: list[int], committed: bool, timeout: float = 10.0) -> dict[int, int]:
        """Each partition's end: the stable end read_committed consumers may read up to
        (`committed`), or the high watermark."""
        isolation = IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
        return self._offsets(partitions, OffsetSpec.latest(), isolation, time.monotonic() + timeout)

    def _committed_ends(self, partitions: list[int], deadline: float) -> dict[int, tuple[int, int]]:
        """(start, end) of each partition, `end` the offset after its last record once
        every transaction open now is over (committed or aborted): what read_committed
        shows below it is final. A transaction open longer than any writer's timeout was
        left without its end marker: TimeoutError names it (the sink's own ones it closes,
        see KafkaSink._close_leftovers; another writer's take an administrator)."""
        latest, earliest = OffsetSpec.latest(), OffsetSpec.earliest()
        uncommitted, committed = IsolationLevel.READ_UNCOMMITTED, IsolationLevel.READ_COMMITTED
        high = self._offsets(partitions, latest, uncommitted, deadline)
        low = self._offsets(partitions, earliest, uncommitted, deadline)
        began = time.monotonic()
        while True:
            stable = self._offsets(partitions, latest, committed, deadline)
            behind = {p: stable[p] for p in partitions if stable[p] < high[p]}
            if not behind:
                return {p: (low[p], high[p]) for p in partitions}
            waited = time.monotonic() - began
            if time.monotonic() > deadline or waited > STUCK_AFTER:
                shown = ", ".join(f"partition {p} from offset {o}" for p, o in behind.items())
                raise TimeoutError(
                    f"a transaction stays open in {self.topic} ({shown}) for {waited:.0f} s, "
                    "longer than writers' transactions last: left without its end marker; "
                    "read_committed consumers stop there too"
                )
            time.sleep(0.05)

    def _offsets(
        self, partitions: list[int], spec: OffsetSpec, isolation, deadline: float
    ) -> dict[int, int]:
        """One kind of offset of each partition; retried while the cluster moves leaders.

        librdkafka's admin client sends each partition's leader epoch as it last knew it
        and does not learn the new one when a restarted broker answers "Leader epoch is
        older than broker epoch" (FENCED_LEADER_EPOCH): it would ask with the stale epoch
        until its next periodic metadata refresh, minutes later. A metadata request for
        the topic before asking again teaches it the current epochs."""
        asked = {TopicPartition(self.topic, p): spec for p in partitions}
        while True:
            futures = self._admin.list_offsets(asked, isolation_level=isolation, request_timeout=10)
            try:
                return {tp.partition: f.result().offset for tp, f in futures.items()}
            except KafkaException as exc:  # leaders moving, a broker just back: ask again
                if exc.args[0].fatal() or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)
            try:
                self._admin.list_topics(self.topic, timeout=max(0.1, deadline - time.monotonic()))
            except KafkaException:
                pass  # the cluster is still away: the next ask says so, or the deadline

    def _find(
        self, wanted: dict[int, set[str]], ends: dict[int, tuple[int, int]], deadline: float
    ) -> int:
        """Read each partition back from its end (or from where an earlier scan stopped) in
        growing chunks, all partitions at once, until its `wanted` devices are all found or
        its start is reached; the records read."""
        tops = {p: self._read_back_to.get(p, ends[p][1]) for p in wanted}
        chunk = max(FIRST_CHUNK, 20 * max(len(d) for d in wanted.values()))
        read = 0
        while True:
            ranges = {
                p: (max(ends[p][0], tops[p] - chunk), tops[p])
                for p, devices in wanted.items()
                if tops[p] > ends[p][0] and devices - self.last.keys()
            }
            if not ranges:
                return read
            found, count = self._read(ranges, deadline)
            read += count
            for device, where in found.items():
                if device not in self.last or where[0] > self.last[device][0]:
                    self.last[device] = where
            for p, (start, _) in ranges.items():
                tops[p] = self._read_back_to[p] = start
            chunk *= 4

    def _read(
        self, ranges: dict[int, tuple[int, int]], deadline: float
    ) -> tuple[dict[str, tuple[int, int]], int]:
        """The last sample of each device in offsets [start, stop) of each partition, as
        committed; and how many records that was."""
        found: dict[str, tuple[int, int]] = {}
        count = 0
        topic = self.topic
        self._consumer.assign([TopicPartition(topic, p, a) for p, (a, _) in ranges.items()])
        reading = set(ranges)
        try:
            while reading:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading partitions {sorted(reading)} of {topic}")
                for record in self._consumer.consume(10_000, timeout=0.02):
                    partition = record.partition()
                    if partition not in reading:
                        continue
                    error = record.error()
                    if error is not None:
                        if error.fatal():
                            raise KafkaException(error)
                        if error.code() == KafkaError._PARTITION_EOF:
                            reading.discard(partition)  # the committed end
                        continue  # else transient (a broker just back): the client retries
                    if record.offset() >= ranges[partition][1]:
                        reading.discard(partition)
                        self._consumer.pause([TopicPartition(topic, partition)])
                        continue
                    count += 1
                    where = last_sample(record.headers())
                    key = record.key()
                    if where is None or key is None:
                        continue  # not written by a bridge
                    device = key.decode(errors="replace")
                    if device not in found or where[0] > found[device][0]:
                        found[device] = where
        finally:
            self._consumer.unassign()
        return found, count
