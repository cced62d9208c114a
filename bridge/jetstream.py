"""The NATS JetStream sink: a stream of subjects `<prefix>.<device>`, messages with ids."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time

import nats
import nats.errors
import nats.js.errors
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from bridge.broker import Backoff
from bridge.config import BridgeConfig
from bridge.message import Message
from common.errors import StartupError
from common.logs import Every
from common.signals import wait_or_stop

log = logging.getLogger(__name__)

LAST_HEADER = "Sample-Last"  # "<seq> <timestamp ms>" of a message's last sample
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
    """

    def __init__(self, config: BridgeConfig, nc: nats.NATS, errors: list[BaseException]) -> None:
        self.config = config
        self.url = config.target.url
        self._nc = nc
        self._js = nc.jetstream(publish_async_max_pending=max(4000, 2 * config.window))
        self._errors = errors
        self._warn = Every(10.0)

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
            except nats.errors.Error as exc:
                if "authorization" in str(exc).lower() or "authentication" in str(exc).lower():
                    raise StartupError(
                        f"broker {target.url} refused the credentials ({_say(exc)})"
                    ) from None
                reason = exc
            except (OSError, TimeoutError) as exc:
                reason = exc
            else:
                sink = cls(config, nc, errors)
                try:
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
            tls_failure = next((e for e in errors if isinstance(e, ssl.SSLError)), None)
            if tls_failure is not None:
                raise StartupError(
                    f"TLS handshake with {target.url} failed ({_say(tls_failure)}): "
                    "is it a TLS port?"
                )
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

    async def resume(self, devices: list[str]) -> dict[str, tuple[int, int]]:
        """Per device, (seq, timestamp ms) of the last sample the stream holds."""
        limit = asyncio.Semaphore(32)

        async def last(device: str) -> tuple[str, tuple[int, int] | None]:
            async with limit:
                try:
                    msg = await self._js.get_last_msg(
                        self.config.stream, subject(self.config.prefix, device)
                    )
                except nats.js.errors.NotFoundError:
                    return device, None
                except (nats.errors.Error, TimeoutError, OSError) as exc:
                    log.warning("cannot read where %s left off in the stream (%s)", device, exc)
                    return device, None
            seq, ts_ms = (msg.headers or {}).get(LAST_HEADER, "-1 0").split()
            return device, (int(seq), int(ts_ms))

        found = await asyncio.gather(*(last(d) for d in devices))
        return {device: where for device, where in found if where is not None and where[0] >= 0}

    async def write_batch(self, messages: list[Message]) -> list[bool]:
        """Publish all, then await the acknowledgements together (up to `ack_timeout`)."""
        deadline = time.monotonic() + self.config.ack_timeout
        while not self._nc.is_connected:  # do not fill the client's reconnect buffer
            if time.monotonic() > deadline or self._nc.is_closed:
                return [False] * len(messages)
            await asyncio.sleep(0.05)
        futures: list[asyncio.Future] = []
        prefix = self.config.prefix
        try:
            for m in messages:
                # No wait_stall: with a timeout, nats-py wraps each semaphore acquire in a task,
                # so every publish yields and its flusher writes the socket once per message.
                # It never waits here: a window is at most half the pending limit, and every
                # earlier future is done or cancelled (its permit released) by now.
                futures.append(
                    await self._js.publish_async(
                        subject(prefix, m.device),
                        m.payload,
                        headers={"Nats-Msg-Id": m.id, LAST_HEADER: f"{m.last} {m.last_ms}"},
                    )
                )
        except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
            self._complain("publish failed", exc)
        if futures:
            await asyncio.wait(futures, timeout=max(0.1, deadline - time.monotonic()))
        acked = []
        for future in futures:
            if not future.done():
                future.cancel()
                acked.append(False)
            elif future.cancelled() or future.exception() is not None:
                if not future.cancelled():
                    self._complain("publish not stored", future.exception())
                acked.append(False)
            else:
                acked.append(True)
        return acked + [False] * (len(messages) - len(futures))

    async def flush(self) -> None:
        """Wait until everything published is acknowledged (write_batch already does)."""
        await self._js.publish_async_completed()

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._nc.close(), 1.0)
        except (TimeoutError, nats.errors.Error, OSError):
            pass

    def _complain(self, what: str, exc: BaseException | None) -> None:
        if self._warn(time.monotonic()):
            log.warning("%s on %s (%s); will send again", what, self.url, _say(exc))


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
        tls=ssl.create_default_context() if target.tls else None,
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
