"""The NATS JetStream sink: a stream of subjects `<prefix>.<device>`, messages with ids."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import time
from collections import deque

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from bridge.broker import Backoff, tls_context, tls_failure
from bridge.config import BridgeConfig
from bridge.message import ANOMALY_HEADER, Message, after
from common.errors import StartupError
from common.logs import Every
from common.signals import wait_or_stop

log = logging.getLogger(__name__)

LAST_HEADER = "Sample-Last"  # "<seq> <timestamp ms>" of a message's last sample
EXPECTED_HEADER = "Nats-Expected-Last-Subject-Sequence"
WRONG_LAST_SEQUENCE = 10071  # JetStream's error code: the subject's last message is another
_UNSAFE = re.compile(r"[.*>\s]")  # not allowed inside one token of a subject


def subject(prefix: str, device: str) -> str:
    return f"{prefix}.{_UNSAFE.sub('_', device)}"


class JetStreamSink:
    """Publishes messages to a JetStream stream (created if missing).

    Guarantees: a message counts as acknowledged only once the stream has stored it (a
    PubAck; one marked duplicate was stored before); every message carries `Nats-Msg-Id`
    from (device, seq), so a message sent again within the stream's duplicate window is
    not stored twice; a publish not acknowledged within `ack_timeout` (error, broker away,
    leader election) is reported unacknowledged, for the bridge to send again.

    Batches (`--batch`) are also chained per subject: each is published with the stream
    sequence of the subject's last message as this sink knows it, which the stream checks
    (`Nats-Expected-Last-Subject-Sequence`), and it starts after that message's last sample.
    Two bridges may cut the same samples into different batches (different ids, so the
    duplicate window cannot help); with the chain, the stream refuses the second one, and
    the sink reads the subject's last message and sends only the samples after it. So no
    sample is stored twice, whatever the bridges, their timing or the duplicate window.
    """

    def __init__(self, config: BridgeConfig, nc: nats.NATS, errors: list[BaseException]) -> None:
        self.config = config
        self.url = config.target.url
        self._nc = nc
        self._js = nc.jetstream()
        self._replies = Replies(nc)
        self._errors = errors
        self._warn = Every(10.0)
        # Per device, (stream sequence, sample seq) of the last message its subject holds,
        # as far as this sink knows: what a batch is chained to.
        self._tails: dict[str, tuple[int, int]] = {}
        self.overlaps = 0  # batches refused as chained to a stale last message, then cut down

    @classmethod
    async def open(cls, config: BridgeConfig, stop: asyncio.Event) -> JetStreamSink | None:
        """Connect (retrying with backoff while the broker is unreachable) and make sure the
        stream exists; None if `stop` came first."""
        backoff = Backoff()
        target = config.target
        while not stop.is_set():
            errors: list[BaseException] = []
            try:
                nc = await _connect(config, errors)
            except ssl.SSLError as exc:
                raise StartupError(tls_failure(target.url, exc)) from None
            except nats.errors.Error as exc:
                if "authorization" in str(exc).lower() or "authentication" in str(exc).lower():
                    raise StartupError(
                        f"broker {target.url} refused the credentials ({_say(exc)})"
                    ) from None
                reason = exc
            except (OSError, TimeoutError) as exc:
                reason = exc
            else:
                # nats-py speaks TLS only when the server asks for it: a plain server would
                # get the samples in clear over a tls:// URL.
                if target.tls and not nc._server_info.get("tls_required"):
                    await nc.close()
                    raise StartupError(
                        f"broker {target.url} does not speak TLS (a plain port?): "
                        "use nats:// or the server's TLS port"
                    )
                sink = cls(config, nc, errors)
                try:
                    await sink._replies.start()
                    await sink._ensure_stream()
                    return sink
                except (TimeoutError, nats.errors.NoRespondersError) as exc:
                    await nc.close()
                    reason = exc  # JetStream not ready yet (a cluster electing its leader)
                except nats.js.errors.ServiceUnavailableError as exc:
                    await nc.close()
                    reason = exc
                except nats.js.errors.APIError as exc:
                    await nc.close()
                    raise StartupError(
                        f"cannot create stream {config.stream} on {target.url}: {exc.description}"
                    ) from None
            failed = next((e for e in errors if isinstance(e, ssl.SSLError)), None)
            if failed is not None:
                raise StartupError(tls_failure(target.url, failed))
            cause = errors[-1] if errors and isinstance(reason, nats.errors.Error) else reason
            delay = backoff.next()
            log.warning(
                "broker %s unreachable (%s); retrying in %.1f s", target.url, _say(cause), delay
            )
            await wait_or_stop(stop, delay)
        return None

    async def _ensure_stream(self) -> None:
        config = self.config
        try:
            info = await self._js.stream_info(config.stream)
            log.info(
                "stream %s exists (subjects %s, %d replica(s))",
                config.stream,
                ",".join(info.config.subjects or []),
                info.config.num_replicas or 1,
            )
            return
        except nats.js.errors.NotFoundError:
            pass
        await self._js.add_stream(
            StreamConfig(
                name=config.stream,
                subjects=[f"{config.prefix}.>"],
                num_replicas=config.replicas,
                retention=RetentionPolicy(config.retention),
                max_age=config.max_age or None,
                duplicate_window=config.duplicate_window,
                storage=StorageType.FILE,
            )
        )
        log.info(
            "created stream %s (subjects %s.>, %d replica(s), retention %s)",
            config.stream,
            config.prefix,
            config.replicas,
            config.retention,
        )

    @property
    def reconnects(self) -> int:
        return int(self._nc.stats.get("reconnects", 0))

    async def last_stored(self, devices: list[str]) -> dict[str, tuple[int, int]]:
        """Per device, (seq, timestamp ms) of the last sample the stream holds."""
        limit = asyncio.Semaphore(32)

        async def last(device: str) -> tuple[str, tuple[int, int] | None]:
            async with limit:
                try:
                    msg = await self._js.get_last_msg(
                        self.config.stream, subject(self.config.prefix, device)
                    )
                except nats.js.errors.NotFoundError:
                    self._tails[device] = (0, -1)
                    return device, None
                except (nats.errors.Error, TimeoutError, OSError) as exc:
                    log.warning("cannot read where %s left off in the stream (%s)", device, exc)
                    return device, None
            seq, ts_ms = _last_sample(msg.headers)
            self._tails[device] = (msg.seq or 0, seq)
            return device, (seq, ts_ms)

        found = await asyncio.gather(*(last(d) for d in devices))
        return {device: where for device, where in found if where is not None and where[0] >= 0}

    async def write_batch(self, messages: list[Message]) -> list[bool]:
        """Publish all, then await the acknowledgements together (up to `ack_timeout`)."""
        deadline = time.monotonic() + self.config.ack_timeout
        while not self._nc.is_connected:  # do not fill the client's reconnect buffer
            if time.monotonic() > deadline or self._nc.is_closed:
                return [False] * len(messages)
            await asyncio.sleep(0.05)
        if self.config.batch:
            return await self._write_chained(messages, deadline)
        futures: list[asyncio.Future[dict]] = []
        prefix = self.config.prefix
        try:
            for m in messages:
                futures.append(
                    await self._replies.publish(subject(prefix, m.device), m.payload, _headers(m))
                )
        except (nats.errors.Error, OSError) as exc:
            self._complain("publish failed", _say(exc))
        if futures:
            await asyncio.wait(futures, timeout=max(0.1, deadline - time.monotonic()))
        acked = []
        for future in futures:
            if not future.done() or future.cancelled():
                acked.append(False)
            elif (error := future.result().get("error")) is not None:
                self._complain("publish not stored", error.get("description"))
                acked.append(False)
            else:
                acked.append(True)
        self._replies.abandon(futures)
        return acked + [False] * (len(messages) - len(futures))

    async def _write_chained(self, messages: list[Message], deadline: float) -> list[bool]:
        """Batches: each device's messages one after the other, each chained to the
        subject's last message; cut down and sent again when the stream says another one
        came first. Devices go in parallel."""
        acked = [False] * len(messages)
        todo: dict[str, deque[int]] = {}
        for i, m in enumerate(messages):
            todo.setdefault(m.device, deque()).append(i)
        events: asyncio.Queue[tuple | None] = asyncio.Queue()
        pending: list[asyncio.Future] = []
        prefix = self.config.prefix

        async def advance(device: str) -> bool:
            """Publish the device's next message (what of it the stream lacks); False when
            it has none left or cannot publish."""
            queue = todo[device]
            while queue:
                i = queue[0]
                tail = self._tails.get(device)
                part = messages[i] if tail is None else after(messages[i], tail[1])
                if part is None:  # the stream holds all of it already
                    acked[i] = True
                    queue.popleft()
                    continue
                headers = _headers(part)
                headers[EXPECTED_HEADER] = str(tail[0] if tail else 0)
                try:
                    future = await self._replies.publish(
                        subject(prefix, device), part.payload, headers
                    )
                except (nats.errors.Error, OSError) as exc:
                    self._complain("publish failed", _say(exc))
                    return False
                pending.append(future)
                future.add_done_callback(
                    lambda f, d=device, p=part: events.put_nowait(("ack", d, p, f))
                )
                return True
            return False

        loop = asyncio.get_running_loop()
        timer = loop.call_later(max(0.1, deadline - time.monotonic()), events.put_nowait, None)
        live = 0
        try:
            for device in todo:
                live += await advance(device)
            while live:
                event = await events.get()
                if event is None:
                    break  # out of time: what is not acknowledged yet goes back to the outbox
                kind, device, part, future = event
                live -= 1
                if future.cancelled():
                    continue
                if kind == "ack":
                    error = future.result().get("error")
                    if error is None:
                        self._tails[device] = (int(future.result()["seq"]), part.last)
                        acked[todo[device].popleft()] = True
                        live += await advance(device)
                    elif error.get("err_code") == WRONG_LAST_SEQUENCE:
                        self.overlaps += 1
                        fetch = asyncio.ensure_future(self._last(device))
                        pending.append(fetch)
                        fetch.add_done_callback(
                            lambda f, d=device: events.put_nowait(("last", d, None, f))
                        )
                        live += 1
                    else:
                        self._complain("publish not stored", error.get("description"))
                elif future.exception() is None:
                    self._tails[device] = future.result()
                    live += await advance(device)
                else:
                    self._complain("cannot read the last message", _say(future.exception()))
        finally:
            timer.cancel()
            for future in pending:
                future.cancel()
            self._replies.abandon(pending)
        return acked

    async def _last(self, device: str) -> tuple[int, int]:
        """(stream sequence, sample seq) of the subject's last message; (0, -1) if none."""
        try:
            msg = await self._js.get_last_msg(
                self.config.stream, subject(self.config.prefix, device)
            )
        except nats.js.errors.NotFoundError:
            return 0, -1
        return msg.seq or 0, _last_sample(msg.headers)[0]

    async def flush(self) -> None:
        """Nothing to do: write_batch returns once its messages are acknowledged."""

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._nc.close(), 1.0)
        except (TimeoutError, nats.errors.Error, OSError):
            pass

    def _complain(self, what: str, why: str | None) -> None:
        if self._warn(time.monotonic()):
            log.warning("%s on %s (%s); will send again", what, self.url, why or "no reason given")


class Replies:
    """JetStream publishes whose replies (acknowledgement or error) come back as futures of
    the reply's JSON.

    nats-py's own publish_async never fails its future on an error reply (its handler
    raises instead), so a publish the stream refused would only time out; here the error
    arrives at once, and a refused chained batch can be cut down and sent again."""

    def __init__(self, nc: nats.NATS) -> None:
        self._nc = nc
        self._prefix = f"{nc.new_inbox()}."
        self._waiting: dict[str, asyncio.Future[dict]] = {}
        self._count = 0

    async def start(self) -> None:
        await self._nc.subscribe(f"{self._prefix}*", cb=self._on_reply)

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]):
        """Publish; the future of its reply."""
        self._count += 1
        token = format(self._count, "x")
        future = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
        except BaseException:
            del self._waiting[token]
            raise
        return future

    def abandon(self, futures: list[asyncio.Future]) -> None:
        """Stop waiting for these replies (answered or not)."""
        for future in futures:
            future.cancel()
        if any(f.cancelled() for f in futures):
            self._waiting = {t: f for t, f in self._waiting.items() if not f.done()}

    async def _on_reply(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_result({"error": {"code": 503, "description": "no responders"}})
            return
        try:
            future.set_result(json.loads(msg.data))
        except ValueError:
            future.set_result({"error": {"code": 0, "description": "malformed acknowledgement"}})


def _headers(m: Message) -> dict[str, str]:
    headers = {"Nats-Msg-Id": m.id, LAST_HEADER: f"{m.last} {m.last_ms}"}
    if m.anomalies:
        headers[ANOMALY_HEADER] = m.anomalies
    return headers


def _last_sample(headers: dict[str, str] | None) -> tuple[int, int]:
    """(seq, timestamp ms) from a message's Sample-Last header; (-1, 0) without one."""
    try:
        seq, ts_ms = (headers or {}).get(LAST_HEADER, "-1 0").split()
        return int(seq), int(ts_ms)
    except ValueError:
        return -1, 0


def _say(exc: BaseException | None) -> str:
    """An exception in a few words, without the client's 'nats: ' prefix."""
    if exc is None:
        return "no reason given"
    text = str(exc).strip().removeprefix("nats: ").strip("'\"") or type(exc).__name__
    return text.split("\n")[0]


async def _connect(config: BridgeConfig, errors: list[BaseException]) -> nats.NATS:
    """One connection attempt (two tries at the server); afterwards the client reconnects
    by itself for ever."""
    target = config.target
    creds = {}
    if target.username is not None:
        creds = {"user": target.username, "password": target.password or ""}

    async def error(exc: BaseException) -> None:
        errors.append(exc)
        del errors[:-5]
        if getattr(nc, "is_connected", False) or getattr(nc, "is_reconnecting", False):
            log.debug("nats: %s", exc)

    async def disconnected() -> None:
        if nc is not None and not nc.is_closed:
            log.warning("lost the connection to %s; reconnecting", target.url)

    async def reconnected() -> None:
        log.info("reconnected to %s", target.url)

    nc = None
    nc = await nats.connect(
        servers=[f"{'tls' if target.tls else 'nats'}://{_host(target.host)}:{target.port}"],
        name="stream-bridge",
        # Used whenever the server asks for TLS, so nats:// to a TLS server works too.
        tls=tls_context(config),
        connect_timeout=2,
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.2,
        error_cb=error,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        pending_size=8 * 1024 * 1024,
        **creds,
    )
    # From now on the client reconnects by itself, every 0.5 s, for ever.
    nc.options["allow_reconnect"] = True
    nc.options["max_reconnect_attempts"] = -1
    nc.options["reconnect_time_wait"] = 0.5
    return nc


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
