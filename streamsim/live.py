"""`stream` and `astream`: the broadcaster's samples as Python dicts, in a plain loop, an
`async for` or a Jupyter cell, reconnecting and resuming on their own.

One asyncio implementation does the work: it connects (retrying while the server is not up
yet), reads, and when the connection drops, reconnects and asks for every sample after the
last one it delivered of each device (`?since=`, the test client's way, with its `Seqs`),
so a restarted broadcaster costs no sample unless the server says so in a gap message.
`stream` runs it in a thread of its own, so it works where an event loop already runs
(Jupyter) as well as where none does.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.uri import parse_uri

from streamsim._isolated import project

log = logging.getLogger(__name__)

DEFAULT_URL = "ws://localhost:8765"
CONNECT_TIMEOUT_S = 10.0
_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 2.0
_REFUSED = (400, 401, 403, 404)
_ALERTS_PER_MESSAGE = 1000  # asking again would get the same answer
_FLUSH_S = 2.0  # at a stream's end: how long its last alerts may take to be answered
_QUEUE = 10_000  # samples read ahead of a slow consumer; then the socket pushes back



@dataclass(frozen=True)
class Gap:
    """Seqs `from_seq`..`to_seq` of `device` that the stream will not give, and why: as a
    gap message named them (`to_seq` None: up to the device's next sample; `device` None:
    every device of a producer that did not answer), or `unannounced` for a seq jump no
    message named. `reason` is a word of the gap vocabulary (docs/delivery.md)."""

    device: str | None
    from_seq: int
    to_seq: int | None
    reason: str
_client = project("clients.test_client")
_metrics: tuple[str, ...] = project("common.schema").METRICS
_kinds: tuple[str, ...] = project("common.schema").ANOMALY_KINDS

Sample = dict[str, Any]


def to_frame(samples: Iterable[Sample]) -> Any:
    """Samples from `stream` (or any dicts of the stream's keys) as a DataFrame with the
    dtypes `generate` gives; only the columns the samples have (`fields`, `labels`)."""
    from streamsim import frames

    return frames.from_samples(samples)


class GapError(RuntimeError):
    """Samples the stream will not deliver (raised only with `raise_on_gap=True`); `gaps`
    names them, as the server did or as the seqs show."""

    def __init__(self, gaps: list[Any]) -> None:
        self.gaps = gaps
        shown = ", ".join(_describe(g) for g in gaps[:5]) + (", ..." if len(gaps) > 5 else "")
        super().__init__(f"samples missed: {shown}")


def _describe(gap: Any) -> str:
    to = "" if gap.to_seq is None else f"..{gap.to_seq}"
    return f"{gap.device or 'every device'} seq {gap.from_seq}{to} ({gap.reason})"


class _Session:
    """What one stream knows between connections: its URL, the last seq delivered of each
    device, the gaps met and its counts. No I/O: the drivers feed it messages."""

    def __init__(
        self,
        url: str,
        devices: Iterable[str] | None,
        fields: Iterable[str] | None,
        labels: bool | None,
        count: int | None,
        timeout: float | None,
        raise_on_gap: bool,
        resume: bool,
        token: str | None,
        connect_timeout: float,
        detector: str | None = None,
        since: int | Mapping[str, int] | None = None,
    ) -> None:
        if count is not None and count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        try:
            parse_uri(url)
        except InvalidURI as exc:
            raise ValueError(f"{url} is not a WebSocket URL: {exc.msg}") from None
        params = [("batch", "1")]
        if devices is not None:
            params.append(("devices", _names(devices, "devices")))
        if fields is not None:
            params.append(("fields", _names(fields, "fields")))
        if labels is not None:
            params.append(("labels", "1" if labels else "0"))  # None: the server's policy
        if token is not None:
            params.append(("token", token))
        if detector is not None:
            params.append(("detector", detector))
        self.url = url
        self.base = _client.with_params(url, params)
        self.since = _since(since)  # where the first connection starts
        self.count = count
        self.timeout = timeout
        self.raise_on_gap = raise_on_gap
        self.resume = resume
        self.connect_timeout = connect_timeout
        self.seqs = _client.Seqs()
        self.gaps: list[Any] = []
        self.received = 0
        self.connections = 0
        self._excused: dict[str, int | None] = {}  # device -> last seq a gap message named
        self._excuse_all = False
        self._answered = False  # this connection has sent a sample: its subscription stands
        self.outbox: deque[dict[str, Any]] = deque()  # alerts not sent yet
        self.wake: Callable[[], None] = lambda: None  # tells the connection there are some
        self.alerts_sent = 0
        self.alerts_acknowledged = 0
        self.messages_sent = 0  # alert messages
        self.messages_answered = 0  # alert messages acknowledged or refused
        self.errors: list[str] = []
        # Whether the consumer is done with every sample delivered (it may alert on them);
        # a consumer on another thread (Stream) tells.
        self.consumer_done: Callable[[], bool] = lambda: True

    def target(self) -> str:
        """The URL of the next connection: after `since` until a sample came, then (with
        `resume`) after the last sample delivered of each device."""
        if not self.seqs.last:
            return _client.with_params(self.base, self.since)
        return _client.with_params(self.base, self.seqs.since()) if self.resume else self.base

    def connected(self) -> None:
        self.connections += 1
        self._excuse_all = False
        self._answered = False

    def receive(self, message: str | bytes) -> list[Sample]:
        """The samples in one message, each device's after the last delivered; raises
        ValueError on the server's `{"error": ...}` before any sample (it refused the
        subscription), GapError on a gap with raise_on_gap. A later error (an alert refused)
        is kept in `errors`; an acknowledgement of alerts counted."""
        parsed = json.loads(message)
        if isinstance(parsed, dict) and "timestamp" not in parsed:
            if "error" in parsed:
                if not self._answered:
                    raise ValueError(f"{self.url}: {parsed['error']}")
                self.errors.append(str(parsed["error"]))
                self.messages_answered += 1
                log.warning("%s: %s", self.url, parsed["error"])
            if "gap" in parsed:
                self._told(parsed["gap"].get("ranges", []))
            if "alerted" in parsed:
                self.alerts_acknowledged += int(parsed["alerted"])
                self.messages_answered += 1
            return []
        self._answered = True
        items = parsed if isinstance(parsed, list) else [parsed]
        found = [s for s in items if isinstance(s, dict) and "seq" in s]
        jumps = self._jumps(found)
        fresh = self.seqs.keep(found)
        if jumps:
            self._add(jumps)
        for sample in fresh:
            sample["timestamp"] = datetime.fromisoformat(sample["timestamp"]).replace(tzinfo=UTC)
        return fresh

    def alert(
        self,
        sample: Mapping[str, Any] | str,
        seq: int | None,
        timestamp: datetime | int | None,
        score: float | None,
        kind: str | None,
    ) -> None:
        """Queue an alert naming one sample: a sample dict, or a device and its seq or its
        timestamp; ValueError (one line) if it names none, or a kind that is not one."""
        if isinstance(sample, Mapping):
            device = sample["device"]
            if seq is None and timestamp is None:
                seq = sample["seq"]
        else:
            device = sample
        if seq is None and timestamp is None:
            raise ValueError(f"an alert on {device!r} needs the sample's seq or timestamp")
        alert: dict[str, Any] = {"device": device}
        if seq is not None:
            alert["seq"] = int(seq)
        else:
            alert["timestamp"] = (
                round(timestamp.timestamp() * 1000)
                if isinstance(timestamp, datetime)
                else int(timestamp)
            )
        if score is not None:
            if not math.isfinite(score):
                raise ValueError(f"an alert's score must be a finite number, got {score!r}")
            alert["score"] = float(score)
        if kind is not None:
            if kind not in _kinds:
                raise ValueError(f"unknown anomaly kind {kind!r}; allowed: {', '.join(_kinds)}")
            alert["kind"] = kind
        self.outbox.append(alert)
        try:
            self.wake()
        except RuntimeError:  # the connection's loop has just ended: the next one sends it
            pass

    def _told(self, ranges: list[dict[str, Any]]) -> None:
        gaps = [
            Gap(r.get("device"), int(r["from_seq"]), r.get("to_seq"), str(r.get("reason")))
            for r in ranges
        ]
        for gap in gaps:
            if gap.device is None:
                self._excuse_all = True
            else:
                self._excused[gap.device] = gap.to_seq
        self._add(gaps)

    def _jumps(self, samples: list[Sample]) -> list[Any]:
        """Seqs skipped that no gap message named: samples this stream never got."""
        jumps = []
        last = dict(self.seqs.last)
        for sample in samples:
            device, seq = sample["device"], sample["seq"]
            previous = last.get(device)
            last[device] = max(seq, previous if previous is not None else seq)
            if previous is None or seq <= previous + 1:
                continue
            if device in self._excused:
                upto = self._excused.pop(device)
                if upto is None or upto >= seq - 1:
                    continue
                previous = max(previous, upto)
            elif self._excuse_all:
                continue
            jumps.append(Gap(device, previous + 1, seq - 1, "unannounced"))
        return jumps

    def _add(self, gaps: list[Any]) -> None:
        self.gaps += gaps
        log.warning("%s", GapError(gaps))
        if self.raise_on_gap:
            raise GapError(gaps)


def _since(since: int | Mapping[str, int] | None) -> list[tuple[str, str]]:
    """`?since=` parameters: one seq for every device, or one per device."""
    if since is None:
        return []
    if isinstance(since, Mapping):
        return [("since", f"{device}:{int(seq)}") for device, seq in since.items()]
    if isinstance(since, bool) or not isinstance(since, int) or since < -1:
        raise ValueError(f"since must be a seq (-1: everything held), got {since!r}")
    return [("since", str(since))]


def _names(values: Iterable[str], what: str) -> str:
    if isinstance(values, str):
        return values
    names = list(values)
    if what == "fields":
        bad = [f for f in names if f not in _metrics]
        if bad or not names:
            shown = bad[0] if bad else ""
            raise ValueError(f"unknown field {shown!r}; allowed: {', '.join(_metrics)}")
    return ",".join(names)


async def _send_alerts(ws: Any, session: _Session, wake: asyncio.Event) -> None:
    """Send queued alerts whenever some are queued."""
    while True:
        await wake.wait()
        wake.clear()
        if not await _send_queued(ws, session):
            return


async def _send_queued(ws: Any, session: _Session) -> bool:
    """Send the queued alerts, up to _ALERTS_PER_MESSAGE a message; False if the connection
    closed (what it could not take waits for the next one)."""
    while session.outbox:
        batch = [
            session.outbox.popleft() for _ in range(min(_ALERTS_PER_MESSAGE, len(session.outbox)))
        ]
        try:
            await ws.send(json.dumps({"alert": batch}, separators=(",", ":")))
        except ConnectionClosed:
            session.outbox.extendleft(reversed(batch))
            return False
        session.alerts_sent += len(batch)
        session.messages_sent += 1
    return True


async def _finish(ws: Any, session: _Session) -> None:
    """At the stream's end (count, timeout), before the connection closes: once the consumer
    is done with every sample delivered (it may still alert on the last ones), send the
    alerts queued and take the server's answers (_flush)."""
    while not session.consumer_done():
        await asyncio.sleep(0.01)
    await _flush(ws, session)


async def _flush(ws: Any, session: _Session) -> None:
    """Send the alerts still queued and wait up to _FLUSH_S for the server's answer to each
    alert message, so that a detector's last reports are neither dropped nor uncounted."""
    deadline = time.monotonic() + _FLUSH_S
    try:
        if not await _send_queued(ws, session):
            return
        while session.messages_answered < session.messages_sent:
            async with asyncio.timeout(_left(deadline, None)):
                message = await ws.recv()
            parsed = json.loads(message)
            if isinstance(parsed, dict) and ("alerted" in parsed or "error" in parsed):
                session.receive(message)
    except (TimeoutError, ConnectionClosed):
        pass


async def _samples(session: _Session) -> AsyncIterator[Sample]:
    """Every sample the session should deliver, connecting as often as needed, until its
    count or timeout (None: forever)."""
    started = time.monotonic()
    deadline = None if session.timeout is None else started + session.timeout
    delay = _BACKOFF_FIRST_S
    while True:
        reason = ""
        try:
            async with connect(
                session.target(),
                open_timeout=_left(deadline, session.connect_timeout),
                max_size=None,
                compression=None,
                close_timeout=1,
            ) as ws:
                session.connected()
                delay = _BACKOFF_FIRST_S
                wake = asyncio.Event()
                loop = asyncio.get_running_loop()
                session.wake = functools.partial(loop.call_soon_threadsafe, wake.set)
                wake.set()  # alerts queued while it was away
                sender = asyncio.create_task(_send_alerts(ws, session, wake))
                try:
                    while True:
                        try:
                            async with asyncio.timeout(_left(deadline, None)):
                                message = await ws.recv()
                        except TimeoutError:
                            await _finish(ws, session)
                            return
                        for sample in session.receive(message):
                            yield sample
                            session.received += 1
                            if session.count is not None and session.received >= session.count:
                                await _finish(ws, session)
                                return
                finally:
                    session.wake = lambda: None
                    sender.cancel()
                    if session.outbox:  # ended early (close(), a lost connection)
                        await _flush(ws, session)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in _REFUSED:
                raise ConnectionRefusedError(
                    f"{session.url} refused the connection: HTTP {status}"
                    + (" (a token is needed: token=...)" if status == 401 else "")
                ) from None
            reason = f"HTTP {status}"
        except ConnectionClosed as exc:
            reason = f"connection lost ({exc})"
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            reason = f"{exc.__class__.__name__}: {exc}"
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return
        if session.connections == 0 and now - started >= session.connect_timeout:
            raise ConnectionError(
                f"cannot connect to {session.url} within {session.connect_timeout:g} s: {reason}"
            )
        log.info("%s: %s; reconnecting", session.url, reason)
        await asyncio.sleep(min(delay, _left(deadline, delay)))
        delay = min(delay * 1.5, _BACKOFF_MAX_S)


def _left(deadline: float | None, otherwise: float | None) -> float | None:
    """Seconds to `deadline`, or `otherwise` when there is none (or it is further)."""
    if deadline is None:
        return otherwise
    left = max(0.0, deadline - time.monotonic())
    return left if otherwise is None else min(left, otherwise)


class _Progress:
    """What a stream has done so far (both kinds share it)."""

    _session: _Session

    @property
    def gaps(self) -> list[Any]:
        """Every gap met: `Gap(device, from_seq, to_seq, reason)`, as a gap message named it
        (`not_held`, `not_produced`, `over_limit`, `unavailable`) or `unannounced` (seqs that
        never came, seen by the seqs of the samples that did)."""
        return list(self._session.gaps)

    @property
    def received(self) -> int:
        """Samples delivered so far."""
        return self._session.received

    @property
    def connections(self) -> int:
        """Connections made so far (more than one: it reconnected)."""
        return self._session.connections

    @property
    def alerts_sent(self) -> int:
        """Alerts written to the connection so far."""
        return self._session.alerts_sent

    @property
    def alerts_acknowledged(self) -> int:
        """Alerts the server said it took (`{"alerted": n}`)."""
        return self._session.alerts_acknowledged

    @property
    def errors(self) -> list[str]:
        """What the server refused after the subscription stood (alerts), in its words."""
        return list(self._session.errors)

    def alert(
        self,
        sample: Mapping[str, Any] | str,
        seq: int | None = None,
        *,
        timestamp: datetime | int | None = None,
        score: float | None = None,
        kind: str | None = None,
    ) -> None:
        """Report an anomaly found in `sample` (a dict this stream gave, or a device id with
        the sample's `seq` or `timestamp`) to the scorer, on this stream's connection, with an
        optional `score` and `kind` guess. It returns at once: alerts go out in order, in
        messages of up to 1,000; those queued while the connection is away go out on the
        next. The server's acknowledgements count in `alerts_acknowledged`, its refusals
        land in `errors`. The broadcaster passes the alerts it takes to the scorers at its
        `--zmq-alerts`: a `Pipeline(scorer=True)`'s broadcaster, to that pipeline's own
        scorer only."""
        self._session.alert(sample, seq, timestamp, score, kind)


class AsyncStream(_Progress):
    """`astream(...)`: the samples in an `async for`; `aclose()` (or `async with`) ends it."""

    def __init__(self, session: _Session) -> None:
        self._session = session
        self._samples = _samples(session)

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Sample:
        return await self._samples.__anext__()

    async def aclose(self) -> None:
        await self._samples.aclose()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


_END = object()


class _Worker:
    """The connection's own thread and event loop, handing samples over through a queue."""

    def __init__(self, session: _Session) -> None:
        self.session = session
        self.queue: queue.Queue[Any] = queue.Queue(_QUEUE)
        self.put = 0  # samples handed over
        self.asked = 0  # samples the consumer asked for: done with the others
        session.consumer_done = lambda: self.asked > self.put
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="streamsim-stream", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # handed to the consumer's thread, raised there
            if not self.stopping.is_set():
                self._put(exc)

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        if self.stopping.is_set():
            return
        try:
            async for sample in _samples(self.session):
                while not self._offer(sample):
                    if self.stopping.is_set():
                        return
                    await asyncio.sleep(0.005)
                self.put += 1
        except asyncio.CancelledError:
            return
        self._put(_END)

    def _offer(self, item: Any) -> bool:
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            return False
        return True

    def _put(self, item: Any) -> None:
        while not self._offer(item) and not self.stopping.is_set():
            time.sleep(0.005)

    def stop(self) -> None:
        """End the connection and the thread (within about a second: the close handshake
        is bounded)."""
        self.stopping.set()
        loop, task = self.loop, self.task
        if loop is not None and task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop has closed already
                pass
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=3)


class Stream(_Progress):
    """`stream(...)`: the samples in a plain `for` loop, also inside a running event loop
    (Jupyter): the connection runs in a thread of its own. `close()` (or `with`) ends it;
    so does leaving the loop and dropping the object."""

    def __init__(self, session: _Session) -> None:
        self._session = session
        self._worker: _Worker | None = None
        self._done = False

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Sample:
        if self._done:
            raise StopIteration
        if self._worker is None:
            self._worker = _Worker(self._session)
            self._finalizer = weakref.finalize(self, self._worker.stop)
        self._worker.asked += 1
        while True:
            try:
                item = self._worker.queue.get(timeout=0.2)
            except queue.Empty:
                if self._worker.thread.is_alive():
                    continue
                item = _END
            if item is _END:
                self.close()
                raise StopIteration
            if isinstance(item, BaseException):
                self.close()
                raise item
            return item

    def close(self) -> None:
        """Stop reading and close the connection."""
        self._done = True
        if self._worker is not None:
            self._finalizer()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stream(
    url: str = DEFAULT_URL,
    *,
    devices: Iterable[str] | None = None,
    fields: Iterable[str] | None = None,
    labels: bool | None = None,
    count: int | None = None,
    timeout: float | None = None,
    raise_on_gap: bool = False,
    resume: bool = True,
    token: str | None = None,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    detector: str | None = None,
    since: int | Mapping[str, int] | None = None,
) -> Stream:
    """The live samples of the broadcaster at `url`, one dict each, in a `for` loop.

    A sample is the broadcaster's JSON object with `timestamp` as a UTC datetime: `cpu`,
    `mem`, `disk_io`, `net` (None: no value), `device`, `seq`, and the labels `anomaly`,
    `anomaly_id`, `anomaly_root`, `event` (None: none). `labels=False` asks for a blind
    stream (`?labels=0`: the server leaves the labels out, they never cross the wire),
    `labels=True` for the labels (`?labels=1`: a server that never sends them refuses with
    ValueError), None for the server's default (`--labels`). `devices` and `fields`
    subscribe to some devices or metrics only (names, or the comma text the URL takes).
    The stream ends after `count` samples or `timeout` seconds, whichever comes first
    (neither: it runs until the loop leaves it).

    With `since` the stream starts after that seq of every device (a mapping: per device;
    `-1`: everything the producers still hold, e.g. a series from its first sample), then
    goes on live; without it, it starts with the live stream.

    Guarantees: each device's samples come in seq order, each once. When the connection
    drops (a broadcaster restarts), it reconnects by itself and resumes after the last
    sample delivered of each device (with `resume=False`, it goes on from the live
    stream); the samples it can then not have are recorded in `.gaps`, as the server's gap
    message names them or as their seqs show, logged, and raised as GapError only with
    `raise_on_gap=True`. A server that is not there yet is retried; one never reached within
    `connect_timeout` seconds raises ConnectionError, one that refuses the connection (a
    token is needed: `token=`) ConnectionRefusedError, and a subscription it refuses
    ValueError with its message.

    A detector reports what it finds with `.alert(sample, score=...)` on the same
    connection; `detector` names it to the scorer (`?detector=`).
    """
    return Stream(
        _Session(
            url,
            devices,
            fields,
            labels,
            count,
            timeout,
            raise_on_gap,
            resume,
            token,
            connect_timeout,
            detector,
            since,
        )
    )


def astream(
    url: str = DEFAULT_URL,
    *,
    devices: Iterable[str] | None = None,
    fields: Iterable[str] | None = None,
    labels: bool | None = None,
    count: int | None = None,
    timeout: float | None = None,
    raise_on_gap: bool = False,
    resume: bool = True,
    token: str | None = None,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    detector: str | None = None,
    since: int | Mapping[str, int] | None = None,
) -> AsyncStream:
    """`stream` for `async for`, on the caller's event loop: the same samples, options and
    guarantees."""
    return AsyncStream(
        _Session(
            url,
            devices,
            fields,
            labels,
            count,
            timeout,
            raise_on_gap,
            resume,
            token,
            connect_timeout,
            detector,
            since,
        )
    )
