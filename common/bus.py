"""Every ZeroMQ socket of the project, in one place: endpoints, security, and the sockets.

The producer binds a PUB socket (samples) and two ROUTER sockets (catch-up, control);
loggers and broadcasters connect SUB sockets, loggers a DEALER for catch-up, `ctl` a
DEALER for control. All reconnect on their own when the producer restarts. One ZeroMQ
context serves the whole process, and every socket has a bounded linger so no process
hangs on exit with unsent messages.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq
import zmq.asyncio
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from common import schema
from common.errors import StartupError
from common.logs import Every
from common.shards import GROUPS, GroupIndex, Shard
from common.signals import readable_or_stopped

log = logging.getLogger(__name__)

# Where the producer binds and everyone else connects, unless told otherwise.
DEFAULT_PUB = "tcp://127.0.0.1:5556"  # samples
DEFAULT_CATCHUP = "tcp://127.0.0.1:5557"  # requests for missed samples
DEFAULT_CONTROL = "tcp://127.0.0.1:5558"  # python -m producer ctl
DEFAULT_ALERTS = "tcp://127.0.0.1:5559"  # detectors' alerts, from broadcasters to the scorer

# High-water marks in messages. One message is one tick (all devices), so 100k messages
# is 100 s of buffering at 1 kHz; ZeroMQ's default of 1,000 drops data under bursts.
SEND_HWM = 100_000
RECEIVE_HWM = 100_000
LINGER_MS = 500
MAX_MESSAGE_BYTES = 128 * 1024 * 1024

_TCP = re.compile(r"^tcp://(?P<host>\[[0-9a-fA-F:.]+\]|[^:/\[\]]+):(?P<port>\d+|\*)$")


def parse_endpoint(endpoint: str) -> str:
    """Check an endpoint's syntax; raise ValueError naming it and what is allowed."""
    allowed = "expected tcp://HOST:PORT, ipc://PATH or inproc://NAME"
    if endpoint.startswith(("ipc://", "inproc://")):
        if endpoint.split("://", 1)[1]:
            return endpoint
        raise ValueError(f"malformed endpoint {endpoint!r}: {allowed}")
    match = _TCP.match(endpoint)
    if not match:
        raise ValueError(f"malformed endpoint {endpoint!r}: {allowed}")
    port = match["port"]
    if port != "*" and not 0 < int(port) < 65536:
        raise ValueError(f"malformed endpoint {endpoint!r}: port must be 1-65535, got {port}")
    host = match["host"].strip("[]")
    if host != "*" and not _is_hostname(host):
        raise ValueError(f"malformed endpoint {endpoint!r}: bad host {host!r}")
    return endpoint


def _is_hostname(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", host))


def is_loopback(endpoint: str) -> bool:
    """ipc and inproc endpoints, and tcp ones on 127.0.0.0/8, ::1 or a name that resolves there."""
    match = _TCP.match(endpoint)
    if match is None:
        return True
    host = match["host"].strip("[]")
    if host in ("*", ""):
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


@dataclass(frozen=True)
class Security:
    """CURVE encryption and client authentication for ZeroMQ, from a keys directory.

    Layout (made by `python -m producer keys`): `public/server.key`, `public/client.key`,
    `private/server.key_secret`, `private/client.key_secret`. A server accepts every client
    whose public key is in `public/`.
    """

    curve_dir: Path | None = None
    allow_insecure: bool = False

    def check_bind(self, endpoint: str) -> None:
        if self.curve_dir is None and not self.allow_insecure and not is_loopback(endpoint):
            raise StartupError(
                f"refusing to bind {endpoint} beyond this machine without encryption: "
                "give --curve-dir (keys from 'python -m producer keys') or --allow-insecure"
            )

    def _keys(self, role: str) -> tuple[bytes, bytes]:
        assert self.curve_dir is not None
        path = self.curve_dir / "private" / f"{role}.key_secret"
        try:
            public, secret = zmq.auth.load_certificate(path)
        except (OSError, ValueError) as exc:
            raise StartupError(f"cannot load CURVE key {path}: {exc}") from None
        assert secret is not None
        return public, secret

    def serve(self, sock: zmq.Socket) -> Callable[[], None] | None:
        """Make `sock` a CURVE server; return what to call when it closes."""
        if self.curve_dir is None:
            return None
        public, secret = self._keys("server")
        _authenticator_start(self.curve_dir / "public")
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True
        return _authenticator_stop

    def connect(self, sock: zmq.Socket) -> None:
        """Make `sock` a CURVE client of the server whose public key is in `public/`."""
        if self.curve_dir is None:
            return
        public, secret = self._keys("client")
        server_key = self.curve_dir / "public" / "server.key"
        try:
            server_public, _ = zmq.auth.load_certificate(server_key)
        except (OSError, ValueError) as exc:
            raise StartupError(f"cannot load CURVE key {server_key}: {exc}") from None
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_serverkey = server_public


PLAIN = Security()  # no encryption: loopback endpoints only, unless allowed

# ZeroMQ allows one authentication handler per context: the CURVE servers of a process
# share it, and it stops with the last of them.
_auth: ThreadAuthenticator | None = None
_auth_users = 0


def _authenticator_start(public_keys: Path) -> None:
    global _auth, _auth_users
    if _auth is None:
        _auth = ThreadAuthenticator(context())
        _auth.start()
    _auth.configure_curve(domain="*", location=str(public_keys))
    _auth_users += 1


def _authenticator_stop() -> None:
    global _auth, _auth_users
    _auth_users -= 1
    if _auth_users == 0 and _auth is not None:
        _auth.stop()
        _auth = None


def context() -> zmq.Context:
    """The process's one ZeroMQ context (its I/O thread serves every socket)."""
    return zmq.Context.instance()


def async_context() -> zmq.asyncio.Context:
    """The same context, for sockets awaited in asyncio."""
    global _async
    if _async is None or _async.closed:
        _async = zmq.asyncio.Context.shadow(context())
    return _async


_async: zmq.asyncio.Context | None = None


# The setting that chooses each endpoint the producer binds, named when it is taken.
_SETTINGS = {
    "ZeroMQ": "--zmq-pub (STREAM_ZMQ_PUB)",
    "catch-up": "--zmq-catchup (STREAM_ZMQ_CATCHUP)",
    "control": "--zmq-control (STREAM_ZMQ_CONTROL)",
}


def _attach(
    sock: zmq.Socket, how: str, endpoint: str, what: str, cleanup: Callable[[], None]
) -> str:
    """Bind or connect; on failure clean up and raise a one-line StartupError (naming the
    setting to change when the endpoint is taken).

    Returns the endpoint actually used (a bound wildcard port is resolved)."""
    try:
        getattr(sock, how)(endpoint)
    except zmq.ZMQError as exc:
        cleanup()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        if how == "bind" and exc.errno == errno.EADDRINUSE and what in _SETTINGS:
            reason += f" (another pipeline's producer?): choose another with {_SETTINGS[what]}"
        raise StartupError(f"cannot {how} {what} endpoint {endpoint}: {reason}") from None
    return sock.getsockopt_string(zmq.LAST_ENDPOINT) if how == "bind" else endpoint


def make_keys(directory: Path) -> None:
    """Create server and client key pairs in the layout Security expects."""
    public, private = directory / "public", directory / "private"
    public.mkdir(parents=True, exist_ok=True)
    private.mkdir(parents=True, exist_ok=True)
    os.chmod(private, 0o700)
    for role in ("server", "client"):
        pub, secret = zmq.auth.create_certificates(str(directory), role)
        os.replace(pub, public / f"{role}.key")
        os.replace(secret, private / f"{role}.key_secret")


class Publisher:
    """The producer's publishing socket. Sends never block: past the high-water mark ZeroMQ
    drops.

    A batch goes out whole (topic `samples`) to the subscribers that want every device,
    split by device group (topics `group.<g>`) to those that want some groups only, and
    split by shard (`shard.<n>.<i>`) to a logger shard, which then gets one message per
    batch rather than one per group; nobody receives or decodes what they did not ask for
    (see common.shards). It is an XPUB socket, which tells which topics have subscribers:
    nobody pays for a split nobody asked for.
    """

    def __init__(self, endpoint: str, hwm: int = SEND_HWM, security: Security = PLAIN) -> None:
        security.check_bind(endpoint)
        self._socket = context().socket(zmq.XPUB)
        self._socket.linger = LINGER_MS
        self._socket.sndhwm = hwm
        self._socket.ipv6 = "[" in endpoint
        self._auth = security.serve(self._socket)
        self.endpoint = _attach(self._socket, "bind", endpoint, "ZeroMQ", self.close)
        self._groups = GroupIndex()
        self._topics: set[bytes] = set()  # topics someone subscribes to
        self._wanted_groups: set[int] = set()
        self._wanted_shards: list[Shard] = []

    def publish(self, batch: schema.Batch) -> None:
        self._read_subscriptions()
        if schema.TOPIC in self._topics:
            self._socket.send_multipart(schema.encode(batch), copy=False)
        if self._wanted_groups:
            for group, part in self._groups.split(batch, self._wanted_groups):
                self._socket.send_multipart(schema.encode(part, group), copy=False)
        for shard in self._wanted_shards:
            part = self._groups.shard_part(batch, shard)
            if len(part):
                frames = schema.encode(part)
                frames[0] = schema.shard_topic(shard.index, shard.count)
                self._socket.send_multipart(frames, copy=False)

    def _read_subscriptions(self) -> None:
        """Take in (un)subscriptions: ZeroMQ reports a topic's first subscriber and its last
        one leaving (or disconnecting)."""
        changed = False
        while True:
            try:
                message = self._socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if message[:1] == b"\x01":
                self._topics.add(message[1:])
            elif message[:1] == b"\x00":
                self._topics.discard(message[1:])
            changed = True
        if changed:
            self._wanted_groups = {g for g in range(GROUPS) if schema.topic(g) in self._topics}
            self._wanted_shards = [
                Shard(i, n)
                for n in range(2, GROUPS + 1)
                for i in range(1, n + 1)
                if schema.shard_topic(i, n) in self._topics
            ]

    def close(self) -> None:
        if self._auth is not None:
            self._auth()
            self._auth = None
        self._socket.close()


_MAX_MESSAGES_PER_TAKE = 10_000


class Subscriber:
    """A SUB socket that yields decoded batches; drops and counts messages that are not.

    ZeroMQ reconnects to a restarted publisher by itself, so nothing here needs to.
    The socket's file descriptor stays registered with the event loop, and what is queued
    is read without blocking, rather than through pyzmq's asyncio futures (a poller, two
    epoll_ctl calls and a timer per wait, enum arithmetic per message): at 100 messages a
    second the broadcaster's CPU went from 8.2 % to 5.6 % of a core.
    """

    def __init__(
        self,
        endpoints: str | list[str],
        hwm: int = RECEIVE_HWM,
        security: Security = PLAIN,
        groups: list[int] | None = None,
        shard: Shard | None = None,
        keep_refused: bool = False,
    ) -> None:
        """Connect to every producer in `endpoints`, for the device `groups` given, or the
        devices of `shard` (all if neither). With `keep_refused`, the readable rows of
        messages that are not valid are kept for take_refused()."""
        endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        self._loop: asyncio.AbstractEventLoop | None = None  # where the descriptor is watched
        self._wake: asyncio.Future[None] | None = None  # what the current wait awaits
        self._stopped: asyncio.Task[bool] | None = None
        self._socket = context().socket(zmq.SUB)
        self._socket.linger = 0
        self._socket.rcvhwm = hwm
        self._socket.maxmsgsize = MAX_MESSAGE_BYTES
        self._socket.reconnect_ivl = 100
        self._socket.reconnect_ivl_max = 500  # a restarted producer is found within 0.5 s
        self._topics: set[bytes] = set()
        self.subscribe(groups, shard)
        self._socket.ipv6 = any("[" in e for e in endpoints)
        try:
            security.connect(self._socket)
        except StartupError:
            self.close()
            raise
        for endpoint in endpoints:
            _attach(self._socket, "connect", endpoint, "ZeroMQ", self.close)
        self.endpoints = endpoints
        self.endpoint = ",".join(endpoints)
        self.received = 0  # valid samples
        self.rejected = 0  # messages dropped as malformed
        self.keep_refused = keep_refused
        self._refused: list[np.ndarray] = []  # readable rows of those messages (bounded)
        self._refused_rows = 0
        self._warn = Every(10.0)

    async def receive(
        self,
        timeout: float,
        stop: asyncio.Event | None = None,
        max_rows: int = schema.ROWS_PER_MESSAGE,
    ) -> list[schema.Batch]:
        """What is queued, up to about `max_rows` samples (a catch-up must not turn into one
        huge batch); if nothing is, wait up to `timeout` s for it (less once `stop` is set)."""
        batches = self._take(max_rows)
        if batches or timeout <= 0 or (stop is not None and stop.is_set()):
            await asyncio.sleep(0)  # never hog the loop, however fast messages come
            return batches
        loop = self._watch(stop)
        wake = self._wake = loop.create_future()
        timer = loop.call_later(timeout, self._wake_up)
        try:
            if not self._readable():  # ZeroMQ's descriptor fires only on changes
                await wake
        finally:
            timer.cancel()
            self._wake = None
        return self._take(max_rows)

    def subscribe(self, groups: list[int] | None = None, shard: Shard | None = None) -> None:
        """Receive these device groups from now on, or this shard's devices, or (neither
        given) every device."""
        if shard is not None and shard.count > 1:
            wanted = {schema.shard_topic(shard.index, shard.count)}
        elif groups is not None:
            wanted = {schema.topic(g) for g in groups}
        else:
            wanted = {schema.TOPIC}
        for topic in self._topics - wanted:
            self._socket.setsockopt(zmq.UNSUBSCRIBE, topic)
        for topic in wanted - self._topics:
            self._socket.setsockopt(zmq.SUBSCRIBE, topic)
        self._topics = wanted

    def _watch(self, stop: asyncio.Event | None) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            loop.add_reader(self._socket.FD, self._on_descriptor)
        if stop is not None and self._stopped is None:
            self._stopped = asyncio.ensure_future(stop.wait())
            self._stopped.add_done_callback(lambda _: self._wake_up())
        return loop

    def _readable(self) -> bool:
        return bool(self._socket.getsockopt(zmq.EVENTS) & zmq.POLLIN)

    def _on_descriptor(self) -> None:
        if self._readable():  # reading EVENTS also re-arms the descriptor
            self._wake_up()

    def _wake_up(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _take(self, max_rows: int) -> list[schema.Batch]:
        batches: list[schema.Batch] = []
        rows = 0
        for _ in range(_MAX_MESSAGES_PER_TAKE):  # a flood of garbage must not hold the loop
            if rows >= max_rows:
                break
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                batch = schema.decode(frames)
            except schema.MessageError as exc:
                self.rejected += 1
                if self._warn(time.monotonic()):
                    log.warning("dropped a malformed message (%s); %d so far", exc, self.rejected)
                salvaged = schema.salvage(frames) if self.keep_refused else None
                if salvaged is not None and self._refused_rows < _MAX_REFUSED_ROWS:
                    self._refused.append(salvaged)
                    self._refused_rows += len(salvaged)
                continue
            self.received += len(batch)
            rows += len(batch)
            batches.append(batch)
        return batches

    def take_refused(self) -> np.ndarray | None:
        """The readable rows (device, seq, ...) of messages refused since the last call, so
        the caller can fetch or record those samples; None if there were none."""
        if not self._refused:
            return None
        rows = np.concatenate(self._refused)
        self._refused, self._refused_rows = [], 0
        return rows

    def close(self) -> None:
        if self._stopped is not None:
            self._stopped.cancel()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._socket.FD)
        self._socket.close()


_MAX_REFUSED_ROWS = schema.ROWS_PER_MESSAGE  # past this, refused messages are only counted


class Router:
    """A bound ROUTER socket for the producer's request/reply services (catch-up, control).

    Replies are never dropped (no send high-water mark): what a service sends is bounded
    by what it holds.
    """

    def __init__(
        self, endpoint: str, what: str, security: Security = PLAIN, max_request: int = 1 << 20
    ) -> None:
        security.check_bind(endpoint)
        self._socket = async_context().socket(zmq.ROUTER)
        self._socket.linger = LINGER_MS
        self._socket.sndhwm = 0
        self._socket.maxmsgsize = max_request
        self._socket.ipv6 = "[" in endpoint
        self._auth = security.serve(self._socket)
        self.endpoint = _attach(self._socket, "bind", endpoint, what, self.close)

    async def receive(self, stop: asyncio.Event) -> tuple[bytes, list[bytes]] | None:
        """(client identity, request frames), or None once `stop` is set."""
        if not await readable_or_stopped(self._socket.poll(None, zmq.POLLIN), stop):
            return None
        identity, *frames = await self._socket.recv_multipart()
        return identity, frames

    async def requests(self, stop: asyncio.Event) -> AsyncIterator[tuple[bytes, list[bytes]]]:
        """(client identity, request frames) as they come, until `stop` is set."""
        while (request := await self.receive(stop)) is not None:
            yield request

    async def send(self, identity: bytes, frames: list[bytes]) -> None:
        await self._socket.send_multipart([identity, *frames])

    def close(self) -> None:
        if self._auth is not None:
            self._auth()
            self._auth = None
        self._socket.close()


class Dealer:
    """A DEALER socket that asks a Router and reads its answers (the logger's catch-up client).

    A request whose answer does not come in time is abandoned with its socket, so a late
    answer is never taken for the next request's.
    """

    def __init__(self, endpoint: str, security: Security = PLAIN) -> None:
        self.endpoint = endpoint
        self.security = security
        self._socket: zmq.asyncio.Socket | None = None

    async def send(self, frames: list[bytes]) -> None:
        if self._socket is None:
            sock = async_context().socket(zmq.DEALER)
            sock.linger = 0
            sock.rcvhwm = 0
            sock.ipv6 = "[" in self.endpoint
            try:
                self.security.connect(sock)
            except StartupError:
                sock.close()
                raise
            _attach(sock, "connect", self.endpoint, "ZeroMQ", sock.close)
            self._socket = sock
        await self._socket.send_multipart(frames)

    async def receive(self, timeout: float) -> list[bytes] | None:
        """The next answer, or None (and the socket abandoned) after `timeout` s of silence."""
        assert self._socket is not None, "receive before send"
        if not await self._socket.poll(int(timeout * 1000), zmq.POLLIN):
            self.reset()
            return None
        return await self._socket.recv_multipart()

    def reset(self) -> None:
        if self._socket is not None:
            self._socket.close(0)
            self._socket = None

    def close(self) -> None:
        self.reset()


def ask(endpoint: str, request: bytes, timeout: float, security: Security = PLAIN) -> bytes:
    """Send one request to a Router and wait for its one-frame answer (blocking; for `ctl`)."""
    sock = context().socket(zmq.DEALER)
    sock.linger = 0
    sock.ipv6 = "[" in endpoint
    try:
        security.connect(sock)
        _attach(sock, "connect", endpoint, "control", lambda: None)
        sock.send(request)
        if not sock.poll(int(timeout * 1000)):
            raise StartupError(f"no answer from {endpoint} within {timeout:g} s")
        return sock.recv()
    finally:
        sock.close()


class AlertSender:
    """A broadcaster's way to the scorers: one PUSH socket per scorer endpoint, so each
    scorer gets every alert. Sends never block: past the high-water mark (a scorer away
    for long) the alerts are dropped and counted; until then ZeroMQ keeps them for a
    scorer that is not there yet."""

    def __init__(self, endpoints: list[str], security: Security = PLAIN, hwm: int = SEND_HWM):
        self._sockets: list[zmq.Socket] = []
        self.dropped = 0  # alerts a full queue refused
        try:
            for endpoint in endpoints:
                sock = context().socket(zmq.PUSH)
                sock.linger = LINGER_MS
                sock.sndhwm = hwm
                sock.ipv6 = "[" in endpoint
                self._sockets.append(sock)
                security.connect(sock)
                _attach(sock, "connect", endpoint, "alerts", lambda: None)
        except BaseException:
            self.close()
            raise
        self.endpoints = endpoints

    def send(self, frames: list[bytes], alerts: int) -> None:
        for sock in self._sockets:
            try:
                sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self.dropped += alerts

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets = []


class AlertReceiver:
    """The scorer's bound PULL socket: alerts from every broadcaster, fairly queued."""

    def __init__(self, endpoint: str, security: Security = PLAIN) -> None:
        security.check_bind(endpoint)
        self._socket = async_context().socket(zmq.PULL)
        self._socket.linger = 0
        self._socket.rcvhwm = RECEIVE_HWM
        self._socket.maxmsgsize = MAX_MESSAGE_BYTES
        self._socket.ipv6 = "[" in endpoint
        self._auth = security.serve(self._socket)
        self.endpoint = _attach(self._socket, "bind", endpoint, "alerts", self.close)

    async def receive(self, stop: asyncio.Event, most: int = 1000) -> list[list[bytes]]:
        """What is queued (up to `most` messages), waiting for the first; [] once `stop` is set."""
        if not await readable_or_stopped(self._socket.poll(None, zmq.POLLIN), stop):
            return []
        messages = [await self._socket.recv_multipart()]
        while len(messages) < most and await self._socket.poll(0, zmq.POLLIN):
            messages.append(await self._socket.recv_multipart())
        return messages

    def close(self) -> None:
        if self._auth is not None:
            self._auth()
            self._auth = None
        self._socket.close()
