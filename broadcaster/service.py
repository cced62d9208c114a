"""The broadcaster: a WebSocket server fed by a ZeroMQ subscriber."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import ssl
import time
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from broadcaster.admission import Admission, InboundLimit
from broadcaster.config import BroadcasterConfig
from broadcaster.fanout import Fanout, peer
from broadcaster.subscription import Subscription, SubscriptionError
from common import schema
from common.bus import Subscriber
from common.errors import StartupError

log = logging.getLogger(__name__)

_POLL_S = 0.2


_INBOUND_BURST = 20


def protocol_options(config: BroadcasterConfig) -> dict:
    """WebSocket protocol settings of the broadcaster (also used by the conformance test)."""
    return {
        "compression": None,  # permessage-deflate costs 3.5x the CPU for small JSON frames
        "close_timeout": config.close_timeout,
        "logger": logging.getLogger("websockets.server"),
    }


def _tls(config: BroadcasterConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"cannot load TLS certificate {config.tls_cert}: {exc}") from None
    return context


async def run(config: BroadcasterConfig, stop: asyncio.Event) -> None:
    """Serve until `stop` is set. Raises StartupError if the port or endpoint is unusable."""
    fanout = Fanout(config.max_client_buffer, config.close_timeout)
    server = await _listen(config, fanout)
    try:
        subscriber = Subscriber(config.zmq_pub, security=config.security)
    except BaseException:
        server.close()
        raise
    try:
        await _relay(config, subscriber, fanout, stop)
    finally:
        subscriber.close()
        await _shutdown(server, config.close_timeout)
        log.info("stopped")


async def _listen(config: BroadcasterConfig, fanout: Fanout) -> Server:
    async def handler(connection: ServerConnection) -> None:
        query = urlsplit(connection.request.path if connection.request else "").query
        try:
            subscription = Subscription.from_query(query)
        except SubscriptionError as exc:
            await connection.send(json.dumps({"error": str(exc)}))
            subscription = Subscription()
        fanout.add(connection, subscription)
        fanout.history(connection, subscription)
        log.info("client %s connected (n=%d)", peer(connection), len(fanout.clients))
        limit = InboundLimit(config.inbound_rate, _INBOUND_BURST)
        try:
            async for message in connection:
                if not limit.allow(time.monotonic()):
                    log.warning("client %s sends too many messages: closing", peer(connection))
                    await connection.close(CloseCode.POLICY_VIOLATION, "too many messages")
                    break
                if isinstance(message, bytes):
                    await connection.close(CloseCode.UNSUPPORTED_DATA, "text messages only")
                    break
                try:
                    subscription = Subscription.from_message(message)
                except SubscriptionError as exc:
                    await connection.send(json.dumps({"error": str(exc)}))
                    continue
                fanout.add(connection, subscription)
                await connection.send(json.dumps({"subscribed": subscription.describe()}))
                fanout.history(connection, subscription)
        except ConnectionClosed:
            pass
        finally:
            fanout.discard(connection)
            log.info("client %s disconnected (n=%d)", peer(connection), len(fanout.clients))

    admission = Admission(config.max_clients, config.origins, config.token)

    try:
        server = await serve(
            handler,
            config.ws_host,
            config.ws_port,
            process_request=admission.checker(lambda: len(fanout.clients)),
            ssl=_tls(config),
            max_size=config.max_inbound_message,
            **protocol_options(config),
        )
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise StartupError(
            f"cannot listen on {config.ws_host}:{config.ws_port}: {reason or exc}"
        ) from None
    for sock in server.sockets:
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        log.info("listening on %s://%s:%d", "wss" if config.tls_cert else "ws", shown, port)
    return server


async def _relay(
    config: BroadcasterConfig, subscriber: Subscriber, fanout: Fanout, stop: asyncio.Event
) -> None:
    log.info("relaying samples from %s", subscriber.endpoint)
    next_stats = time.monotonic() + config.stats_interval
    while not stop.is_set():
        for batch in schema.merge(await subscriber.receive(_POLL_S)):
            fanout.send(batch)  # kept for history; rendered only for subscriptions in use
        if time.monotonic() >= next_stats:
            next_stats += config.stats_interval
            log.info(
                "%d client(s); received %d samples, sent %d frames, dropped %d slow client(s)",
                len(fanout.clients),
                subscriber.received,
                fanout.sent,
                fanout.dropped_clients,
            )


async def _shutdown(server: Server, close_timeout: float) -> None:
    """Close politely, but never wait on a client that stopped reading (it would hang)."""
    server.close()
    try:
        await asyncio.wait_for(asyncio.shield(server.wait_closed()), close_timeout + 0.2)
        return
    except TimeoutError:
        pass
    for connection in list(server.all_connections):
        if connection.transport is not None:
            connection.transport.abort()
    try:
        await asyncio.wait_for(asyncio.shield(server.wait_closed()), 0.5)
    except TimeoutError:
        log.warning("some connections did not close in time")
