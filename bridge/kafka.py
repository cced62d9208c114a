"""The Kafka sink: one topic, key = device id, exactly once through transactions.

confluent-kafka (librdkafka) is the client: the only Python client with Kafka's
transactions and idempotent producer, in wheels that bundle librdkafka, and fast enough
(a few microseconds a message) for the producer's rates.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bridge.broker import Backoff
from bridge.config import BridgeConfig
from bridge.kafka_confirm import STUCK_AFTER, Confirmations
from bridge.kafka_tails import SEQ_HEADER, TIME_HEADER, Tails, partition_of
from bridge.message import Block, Item, Message, ends_of, row_labels, starts_of, unstored
from common import render
from common.errors import StartupError
from common.logs import Every
from common.metrics import Figure
from common.signals import wait_or_stop

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSACTION_TIMEOUT_MS = 10_000  # the broker aborts a bridge's open transaction after this
STEP = 1.0  # seconds a blocking call waits before the sink checks whether it is closing
FIND_TIMEOUT = 60.0  # seconds to read where devices left off
LEFTOVER_HEADER = "stream-bridge-close"  # on the aborted records that close leftovers
# Errors that mean the broker refused the credentials, or the TLS handshake failed.
_REFUSED = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}
_FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED}
_SSL_REASONS = (
    "certificate verify failed",
    "wrong version number",
    "unexpected eof",
    "packet length too long",
    "record layer failure",
)


class Fenced(Exception):
    """Another producer took over this bridge's transactional id."""


class KafkaSink:
    """Publishes messages to a Kafka topic (created if missing), key = device id.

    Guarantees, with transactions (the default): each `write_batch` is one transaction of
    an idempotent producer with acks=all; a message counts as acknowledged only once its
    transaction is committed, so a consumer reading with isolation.level=read_committed
    sees it once, or not at all if the bridge dies first. The transactional id is stable
    per bridge (topic and shard): a restarted bridge takes it over, which aborts what the
    dead one left open and fences it out for good; then `last_stored` reads the topic's
    committed tail for where each device left off. The sink also never sends a sample the
    topic already holds: after a transaction whose outcome it could not learn (the
    producer failed fatally), it reads those devices' tails again and sends only what
    comes after them. Each device's messages go to one partition (murmur2 of the key, as
    Kafka's Java clients do), in seq order.

    Without transactions (--no-transactions) a message counts as acknowledged once the
    broker stored it (acks=all, idempotent): exactly once while the bridge runs, but a
    killed bridge may send again what the broker stored and never acknowledged.
    """

    def __init__(
        self, config: BridgeConfig, conf: dict, admin: AdminClient, partitions: int
    ) -> None:
        self.config = config
        self.url = config.target.url
        self.reconnects = 0
        self.overlaps = 0  # JetStream only
        self.partitions = partitions
        self._conf = conf
        self._admin = admin
        self._tails = Tails(conf, admin, config.topic, partitions)
        self._confirmed = Confirmations(self._tails)
        self._again: list[Message] = []  # confirmed, then lost by the topic: to send first
        self._believed: dict[str, tuple[int, int]] = {}
        self._producer: Producer | None = None
        self._doubt: list[str] = []  # devices a transaction of unknown outcome wrote
        self._stuck = False  # an end marker lost for good (see bridge.kafka_confirm)
        self._closing = threading.Event()
        self._busy: asyncio.Future | None = None
        self._warn = Every(10.0)
        self._keys: dict[str, bytes] = {}
        self._partitions: dict[bytes, int] = {}  # device id (as stored) -> its partition
        self._unsure: set[int] = set()  # ids of blocks sent in a transaction that failed
        self._failures = 0  # deliveries that failed (without transactions)
        self._last_failure = KafkaError(KafkaError._FAIL)
        # Without --batch the outbox hands over blocks of samples, one record each.
        self.takes_blocks = not config.batch
        self.transactions = 0
        self.failed = 0  # transactions that failed (their samples sent again)
        self.restarts = 0  # producers replaced after a failed transaction
        self.sent_again = 0  # samples the topic had confirmed, then lost, sent again

    @classmethod
    async def open(cls, config: BridgeConfig, stop: asyncio.Event) -> KafkaSink | None:
        """Reach the cluster (retrying with backoff while it is unreachable), create the
        topic if missing, and start the producer (taking over the transactional id); None
        if `stop` came first. Refused credentials, a failed TLS handshake or a topic that
        cannot be created raise StartupError."""
        target = config.target
        backoff = Backoff()
        conf = client_config(config)
        while not stop.is_set():
            errors: list[KafkaError] = []
            admin = AdminClient({**conf, "error_cb": errors.append})
            try:
                # The calls wait on the cluster for seconds: a stop must not wait for them.
                found = await _unless(stop, _in_thread(_ensure_topic, admin, config, errors))
                if found is None:
                    return None
                sink = cls(config, conf, admin, found)
                await _unless(stop, _in_thread(sink._start_producer))
                if stop.is_set():
                    sink._closing.set()  # a producer still starting gives up
                    return None
                return sink
            except StartupError:
                raise
            except (KafkaException, TimeoutError) as exc:
                reason = _say(errors[-1] if errors else exc)
            delay = backoff.next()
            log.warning("broker %s unreachable (%s); retrying in %.1f s", target.url, reason, delay)
            await wait_or_stop(stop, delay)
        return None

    def _start_producer(self) -> None:
        """A new producer; with transactions, initialised (fencing any other with its id)."""
        config = self.config
        conf = producer_config(self._conf)
        if config.transactions:
            conf["transactional.id"] = config.kafka_transactional_id
            conf["transaction.timeout.ms"] = TRANSACTION_TIMEOUT_MS
        else:
            # Without transactions a failure is learnt from its delivery report: reports
            # of failures only, counted (one for every message costs 1-2 µs each).
            conf["on_delivery"] = self._delivery_failed
        conf["delivery.report.only.error"] = True
        errors: list[KafkaError] = []
        conf["error_cb"] = errors.append
        producer = Producer(conf)
        if config.transactions:
            while True:
                try:
                    producer.init_transactions(STEP * 5)
                    break
                except KafkaException as exc:
                    error = exc.args[0]
                    producer.poll(0)
                    refused = next((e for e in errors if e.code() in _REFUSED), None)
                    if refused is not None or error.code() in _REFUSED:
                        raise StartupError(
                            f"broker {self.url} refused the credentials ({_say(refused or error)})"
                        ) from None
                    if error.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
                        raise StartupError(
                            f"broker {self.url} does not let this user write transactions "
                            f"as {config.kafka_transactional_id} ({_say(error)})"
                        ) from None
                    if self._closing.is_set() or not error.retriable():
                        raise
            self._close_leftovers(producer)
        self._producer = producer

    def _close_leftovers(self, producer: Producer) -> None:
        """Abort a transaction that writes one empty record to every partition: its abort
        markers, written with the epoch just taken, also end whatever an earlier producer
        of this transactional id left there without an end marker (see bridge.kafka_confirm),
        which would hold back every read_committed reader for good, the tails included.
        What such records held is then aborted: the sink sends it again after reading the
        tails (kept in Confirmations, or refilled from the producers' history)."""
        topic = self.config.topic
        producer.begin_transaction()
        for partition in range(self.partitions):
            producer.produce(topic, b"", partition=partition, headers=[(LEFTOVER_HEADER, b"")])
        while producer.flush(STEP) > 0:  # sent, so that each partition joins the transaction
            if self._closing.is_set():
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "closing"))
        while True:
            try:
                producer.abort_transaction(STEP)
                return
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() in _FENCED:
                    raise Fenced(str(error)) from None
                if self._closing.is_set() or not error.retriable():
                    raise

    @property
    def transactional_id(self) -> str:
        return self.config.kafka_transactional_id if self.config.transactions else ""

    async def last_stored(self, devices: list[str]) -> dict[str, tuple[int, int]]:
        """Per device, (seq, timestamp ms) of the last sample the topic holds, committed;
        asked again while the cluster cannot say (sending without knowing could double)."""
        backoff = Backoff()
        while True:
            try:
                return await _in_thread(self._tails.find, devices, FIND_TIMEOUT)
            except (KafkaException, TimeoutError) as exc:
                if self._closing.is_set():
                    raise StartupError(f"cannot read the tail of {self.config.topic}") from None
                delay = backoff.next()
                log.warning(
                    "cannot read where %d device(s) left off in %s (%s); retrying in %.1f s",
                    len(devices),
                    self.config.topic,
                    _say(exc),
                    delay,
                )
                await asyncio.sleep(delay)

    async def write_batch(self, messages: list[Item]) -> list[bool]:
        """One transaction (or, without, one flush) for all of `messages` (messages or
        blocks), less what the topic holds already; all acknowledged, or none."""
        acked = [False] * len(messages)
        if self._doubt or self._stuck:  # learn what the topic really holds
            try:
                await _in_thread(self._recover)
            except (KafkaException, TimeoutError) as exc:
                self._complain("cannot read where devices left off", _say(exc))
                return acked
        sending: list[tuple[int, Item]] = []
        last = self._tails.last
        unsure = self._unsure
        for i, item in enumerate(messages):
            # A block never sent cannot be in the topic: only one sent in a transaction
            # that failed needs cutting (a message is cut in any case: it costs little).
            if isinstance(item, Block) and id(item) not in unsure:
                part: Item | None = item
            else:
                unsure.discard(id(item))
                part = unstored(item, last)
            if part is None:
                acked[i] = True
            else:
                sending.append((i, part))
        again, self._again = self._again, []
        if not sending and not again:
            return acked
        parts = again + [m for _, m in sending]  # what the topic lost comes first
        producer = self._producer
        assert producer is not None
        # Handing messages to the client is quick and needs the interpreter: it is done
        # here; waiting for the broker (commit, flush) is done in a thread, which frees
        # the interpreter for the intake meanwhile.
        try:
            if self.config.transactions:
                producer.begin_transaction()
            self._produce(producer, parts)
        except KafkaException as exc:
            self._busy = _in_thread(self._failed, producer, parts, exc.args[0])
        else:
            self._busy = _in_thread(self._finish, producer, parts)
        try:
            ok = await self._busy
        except Fenced:
            raise StartupError(
                f"another bridge took over transactional id {self.transactional_id} on "
                f"{self.url}: give each bridge its own --shard (or --transactional-id)"
            ) from None
        finally:
            self._busy = None
        if not ok:
            self._confirmed.keep(again)
            unsure.update(id(item) for _, item in sending if isinstance(item, Block))
            return acked
        self.sent_again += sum(m.samples for m in again)
        for i, _ in sending:
            acked[i] = True
        for part in parts:
            for device, where in ends_of(part).items():
                stored = last.get(device)
                if stored is None or where[0] > stored[0]:
                    last[device] = where
        return acked

    def _finish(self, producer: Producer, parts: list[Item]) -> bool:
        """Commit the transaction (or, without, flush); True if the broker has all of it."""
        try:
            if self.config.transactions:
                return self._commit(producer, parts)
            failures = self._failures
            while producer.flush(STEP) > 0:
                if self._closing.is_set():
                    return False
            if self._failures == failures:
                return True
            return self._failed(producer, parts, self._last_failure)
        except KafkaException as exc:
            return self._failed(producer, parts, exc.args[0])

    def _delivery_failed(self, error: KafkaError | None, _record: object) -> None:
        if error is not None:
            self._failures += 1
            self._last_failure = error

    def _produce(self, producer: Producer, parts: list[Item]) -> None:
        """Hand every record to the client (its queue)."""
        topic = self.config.topic
        for part in parts:
            if isinstance(part, Block):
                self._produce_block(producer, topic, part)
            else:
                self._produce_message(producer, topic, part)
        # No poll here: the commit (or flush) in the worker thread serves the client's
        # callbacks; a poll after 20,000 records cost 8 % of the interpreter's time.

    def _produce_message(self, producer: Producer, topic: str, m: Message) -> None:
        key = self._keys.get(m.device)
        if key is None:
            key = self._keys[m.device] = m.device.encode()
        headers = record_headers(m, key)
        partition = self._partition(key)
        while True:
            try:
                producer.produce(topic, m.payload, key, partition=partition, headers=headers)
                return
            except BufferError:  # the client's queue is full: let it send some
                producer.poll(0.05)

    def _produce_block(self, producer: Producer, topic: str, block: Block) -> None:
        """One record per sample, as `_produce_message` would make it: rendered in bulk,
        then handed over in one loop. Each record's headers are made as it is handed over,
        so they die young (a list of them all, made first, cost the collector 0.3 µs a
        sample); labels, which few samples carry, are found for the block at once."""
        batch = block.batch
        rows = batch.rows
        payloads = render.json_objects(batch)
        keys = rows["device"].tolist()  # the ids as stored: bytes, the key as is
        partitions = self._partitions
        places = [partitions.get(key) for key in keys]
        if None in places:
            places = [self._partition(key) for key in keys]
        marks = row_labels(rows)
        produce = producer.produce
        seqs, times = rows["seq"].tolist(), rows["ts_ms"].tolist()
        records = zip(keys, payloads, places, seqs, times, strict=True)
        for i, (key, payload, partition, seq, ms) in enumerate(records):
            headers = [("device", key), (SEQ_HEADER, str(seq)), (TIME_HEADER, str(ms))]
            if marks and i in marks:
                headers += marks[i]
            try:
                produce(topic, payload, key, partition=partition, headers=headers)
            except BufferError:  # the client's queue is full: let it send some, then go on
                while True:
                    producer.poll(0.05)
                    try:
                        produce(topic, payload, key, partition=partition, headers=headers)
                        break
                    except BufferError:
                        continue

    def _partition(self, key: bytes) -> int:
        found = self._partitions.get(key)
        if found is None:
            found = self._partitions[key] = partition_of(key, self.partitions)
        return found

    def _commit(self, producer: Producer, parts: list[Item]) -> bool:
        while True:
            try:
                producer.commit_transaction(STEP)
                self.transactions += 1
                self._confirmed.add(parts)
                self._confirmed.check()
                self._note_stuck()
                return True
            except KafkaException as exc:
                error = exc.args[0]
                if error.retriable() and not error.txn_requires_abort() and not error.fatal():
                    if self._closing.is_set():
                        self._doubt += _devices(parts)
                        return False
                    self._complain("commit not confirmed yet", _say(error))
                    continue
                return self._failed(producer, parts, error)

    def _failed(self, producer: Producer, parts: list[Item], error: KafkaError) -> bool:
        """After an error in a transaction: its outcome is unknown, and so is the producer's
        state. False; the next `write_batch` starts a new producer first (`_recover`).

        The transaction is never aborted in place: librdkafka's abort bumps the epoch of the
        same producer, whose requests from before the error may still reach the broker
        (Kafka's transactions before KIP-890, which librdkafka does not implement, let such
        a late request land outside any transaction the coordinator knows of). A new
        producer is initialised instead: that fences every request of the old one, and the
        coordinator finishes or aborts what it left open."""
        if error.code() in _FENCED:
            raise Fenced(str(error))
        self._complain("transaction failed", _say(error))
        self.failed += 1
        self._doubt += _devices(parts)
        return False

    def _recover(self) -> None:
        """After a failed transaction: a new producer in place of the old one (whose queued
        and in-flight messages are dropped first), which fences the old one and makes the
        coordinator finish or abort what it left open; then where every device stands, read
        back from the topic, since a broker restart can also undo what it confirmed (see
        bridge.kafka_confirm): what the topic lost of that is sent first."""
        doubt = list(dict.fromkeys(self._doubt))
        self._stuck = False
        if self._producer is not None and self.config.transactions:
            old, self._producer = self._producer, None
            old.purge(in_queue=True, in_flight=True, blocking=False)
            del old  # destroyed now: its connections closed before the new one fences it
            self._start_producer()
            self.restarts += 1
        # Where the sink believed each device stood, kept until a recovery succeeds.
        self._believed.update(self._tails.last)
        devices = list(dict.fromkeys([*self._believed, *doubt]))
        self._tails.forget(devices)
        self._tails.find(devices, FIND_TIMEOUT)
        self._doubt = []
        if self.config.transactions:
            self._again = self._confirmed.again(self._believed)
        self._believed = {}
        log.info("read again where %d device(s) left off after a failed transaction", len(devices))

    async def flush(self) -> None:
        """While nothing waits to be sent: look whether the committed transactions' end
        markers are written (see bridge.kafka_confirm), and if one is lost for good, send
        again what the topic would lose (a new producer's abort markers end those records)."""
        if not self._confirmed.due() or self._closing.is_set():
            return
        await _in_thread(self._confirmed.check)
        self._note_stuck()
        if self._stuck:
            await self.write_batch([])

    def _note_stuck(self) -> None:
        if self._confirmed.stuck() and not self._stuck:
            self._stuck = True
            log.warning(
                "the end markers of committed transactions in %s are still missing after "
                "%.0f s: starting a new producer and sending their samples again",
                self.config.topic,
                STUCK_AFTER,
            )

    async def close(self) -> None:
        """Stop waiting on the broker; an unfinished transaction is left to the broker
        (aborted after its timeout, or at once by the bridge that takes over the id)."""
        self._closing.set()
        if self._busy is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._busy), STEP + 0.5)
            except (TimeoutError, Exception):
                return  # the worker thread still waits on the broker: leave it be
        try:
            self._tails.close()
        except (KafkaException, RuntimeError):
            pass

    def figures(self) -> list[Figure]:
        return [
            Figure("kafka_transactions", "Kafka transactions committed", self.transactions, True),
            Figure(
                "kafka_transactions_failed",
                "Kafka transactions that failed (their samples sent again after a new producer)",
                self.failed,
                True,
            ),
            Figure(
                "kafka_samples_sent_again",
                "Samples the topic lost after confirming them (end markers skipped), sent again",
                self.sent_again,
                True,
            ),
            Figure(
                "kafka_samples_unsettled",
                "Samples of committed transactions whose end markers are not known to be "
                "written yet (read_committed readers may not see them yet)",
                self._confirmed.samples,
            ),
            Figure(
                "kafka_producer_restarts",
                "Kafka producers replaced after a failed transaction",
                self.restarts,
                True,
            ),
        ]

    def _complain(self, what: str, why: str) -> None:
        if self._warn(time.monotonic()):
            log.warning("%s on %s (%s); will send again", what, self.url, why)


def _devices(parts: list[Item]) -> list[str]:
    return [device for part in parts for device in starts_of(part)]


def record_headers(m: Message, key: bytes) -> list[tuple[str, Any]]:
    """A record's headers: device, seq ("17", or "17-66" for a batch), the (last) sample's
    time in ms, and the labels its samples carry (see Message.labels)."""
    seq = str(m.first) if m.first == m.last and m.rows is None else f"{m.first}-{m.last}"
    return [("device", key), (SEQ_HEADER, seq), (TIME_HEADER, str(m.last_ms)), *m.labels]


def producer_config(conf: dict[str, Any]) -> dict[str, Any]:
    """The producer's settings: acks=all, idempotent, batched (also the benchmark's)."""
    return {
        **conf,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 2_000_000,
        "queue.buffering.max.kbytes": 2_097_151,
        "message.timeout.ms": TRANSACTION_TIMEOUT_MS,
    }


def client_config(config: BridgeConfig) -> dict[str, Any]:
    """librdkafka settings shared by the producer, the admin client and the tail reader."""
    target = config.target
    sasl = target.username is not None
    protocol = ("SASL_" if sasl else "") + ("SSL" if target.tls else "PLAINTEXT")
    conf: dict[str, Any] = {
        "bootstrap.servers": ",".join(target.servers),
        "client.id": "stream-bridge",
        "security.protocol": protocol,
        "logger": _Quiet(),
        "reconnect.backoff.max.ms": 1000,
    }
    if target.tls:
        conf["ssl.ca.location"] = str(config.tls_ca) if config.tls_ca else "probe"
    if sasl:
        conf["sasl.mechanism"] = config.sasl_mechanism
        conf["sasl.username"] = target.username
        conf["sasl.password"] = target.password or ""
    return conf


def _ensure_topic(admin: AdminClient, config: BridgeConfig, errors: list[KafkaError]) -> int:
    """The topic's partition count, after creating it if missing (blocking)."""
    url = config.target.url
    try:
        metadata = admin.list_topics(timeout=STEP * 3)
    except KafkaException as exc:
        admin.poll(0)
        _raise_if_hopeless(url, [*errors, exc.args[0]], config)
        raise
    admin.poll(0)
    _raise_if_hopeless(url, errors, config)
    topic = metadata.topics.get(config.topic)
    if topic is not None and topic.error is None:
        log.info("topic %s exists (%d partition(s))", config.topic, len(topic.partitions))
        return len(topic.partitions)
    replicas = config.replicas
    settings = {"min.insync.replicas": str(max(1, min(2, replicas - 1)))}
    new = NewTopic(config.topic, config.partitions, replicas, config=settings)
    try:
        admin.create_topics([new], request_timeout=STEP * 10)[config.topic].result()
    except KafkaException as exc:
        error = exc.args[0]
        if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return _ensure_topic(admin, config, errors)  # another bridge made it just now
        if error.retriable() or error.code() in (KafkaError._TIMED_OUT, KafkaError._TRANSPORT):
            raise
        raise StartupError(f"cannot create topic {config.topic} on {url}: {_say(error)}") from None
    log.info(
        "created topic %s (%d partition(s), replication factor %d, min.insync.replicas %s)",
        config.topic,
        config.partitions,
        replicas,
        settings["min.insync.replicas"],
    )
    return config.partitions


def _raise_if_hopeless(url: str, errors: list[KafkaError], config: BridgeConfig) -> None:
    """StartupError for what retrying cannot fix: refused credentials, failed TLS."""
    for error in errors:
        text = error.str()
        if error.code() in _REFUSED:
            raise StartupError(f"broker {url} refused the credentials ({_say(error)})")
        if error.code() == KafkaError._SSL or "SSL handshake failed" in text:
            if "certificate verify failed" in text:
                raise StartupError(
                    f"TLS certificate of {url} not trusted ({_ssl_reason(text)}): "
                    "give the CA that signed it with --tls-ca"
                )
            raise StartupError(
                f"TLS handshake with {url} failed ({_ssl_reason(text)}): is it a TLS port?"
            )
        if config.target.tls is False and "incorrect security.protocol" in text:
            raise StartupError(
                f"broker {url} closed the connection at once (a TLS or SASL port?): "
                "use kafka+ssl:// for TLS, and give --username for SASL"
            )


def _ssl_reason(text: str) -> str:
    """The OpenSSL reason in a librdkafka SSL error, e.g. 'wrong version number'."""
    for marker in _SSL_REASONS:
        if marker in text:
            return marker
    return text.split(": ")[-1].strip() or "no reason given"


def _say(error: KafkaError | BaseException | None) -> str:
    if error is None:
        return "no reason given"
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        error = error.args[0]
    text = error.str() if isinstance(error, KafkaError) else str(error) or type(error).__name__
    return text.split("\n")[0]


class _Quiet:
    """librdkafka's own log lines, at debug level: the sink reports what matters once."""

    def log(self, level: int, message: str, *args: object) -> None:
        log.debug("librdkafka: " + message, *args)


async def _unless(stop: asyncio.Event, work: asyncio.Future[T]) -> T | None:
    """What `work` gives, or None as soon as `stop` is set (its thread left to finish)."""
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if work.done():
        return work.result()
    work.add_done_callback(lambda f: f.cancelled() or f.exception())  # nobody waits now
    return None


def _in_thread(work: Callable[..., T], *args: object) -> asyncio.Future[T]:
    """Run a blocking call in a daemon thread of its own: a call stuck on an unreachable
    broker must never hold up the process's exit (executor threads are joined then)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        try:
            loop.call_soon_threadsafe(outcome)
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more

    def run() -> None:
        try:
            result = work(*args)
        except BaseException as exc:  # handed over to the awaiting task
            settle(lambda error=exc: future.done() or future.set_exception(error))
        else:
            settle(lambda: future.done() or future.set_result(result))

    threading.Thread(target=run, name="kafka", daemon=True).start()
    return future
