"""The broadcaster: a WebSocket server fed by a ZeroMQ subscriber (through the relay's
intake, broadcaster.relay: every sample in order, or a gap message naming it)."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
import ssl
import time
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from broadcaster import alerts, backlog, peers
from broadcaster.admission import Admission, InboundLimit
from broadcaster.config import BroadcasterConfig
from broadcaster.fanout import Fanout, gap_message, peer
from broadcaster.fleet import FleetInfo
from broadcaster.latest import Latest
from broadcaster.pages import Health, page, schema_document
from broadcaster.relay import Refill, Relay
from broadcaster.since import Since, SinceError, check, from_query
from broadcaster.subscription import Subscription, SubscriptionError, parse_message
from common import metrics
from common.bus import AlertSender, Subscriber
from common.errors import StartupError
from common.metrics import Figure
from common.ready import Readiness
from common.shards import GROUPS, device_group
from delivery.client import CatchupClient

log = logging.getLogger(__name__)


_INBOUND_BURST = 20
# After the broadcaster changes what it takes from the bus, the producers start sending it
# within milliseconds; a resume asks their history only after this, so that every sample
# is either in the history or on its way live (the two overlap; duplicates are dropped).
BUS_SETTLE_S = 0.3


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


class State:
    """What the relay, the pages and the metrics share."""

    def __init__(self, config: BroadcasterConfig) -> None:
        self.fanout = Fanout(config.max_client_buffer, config.close_timeout)
        self.pipeline = peers.pipeline_id(config.zmq_pub, config.zmq_catchup)
        self.health = Health(config.stale_after, self.pipeline)
        self.schema = schema_document(config.scenario)  # /schema.json
        self.subscriber: Subscriber | None = None
        self.relay: Relay | None = None
        self.disconnects = 0
        self.registry = metrics.registry(self.figures)
        self.groups: list[int] | None = None  # device groups taken from the bus; None: all
        self.bus_changed_at = time.monotonic()
        self.producers = CatchupClient(
            config.zmq_catchup, config.security, idle_timeout=backlog.ANSWER_TIMEOUT_S
        )
        self.resumes = 0
        self.resumed_samples = 0
        self.labels = config.labels
        self.devices = alerts.Latest()  # which devices exist, and the newest sample of each
        self.outbox = alerts.Outbox(None)  # gets its sender in run()
        self.alerts_accepted = 0
        self.alerts_refused = dict.fromkeys(alerts.REASONS, 0)
        self.alert_floods = 0
        self.bad_messages = 0  # client messages refused (not JSON, unknown, bad values)
        self.latest = Latest(config.sample_metrics_devices)  # /metrics/samples
        self.fleet = FleetInfo(
            config.zmq_control.split(",") if config.zmq_control else [],
            config.security,
            config.fleet_refresh,
            config.scenario,
        )

    def samples_exposition(self) -> bytes:
        """/metrics/samples: each device's newest sample, its role and group where known."""
        return self.latest.exposition(self.fleet.describe)

    def settled(self) -> float:
        """Seconds until what the broadcaster takes from the bus is surely in effect."""
        return max(0.0, self.bus_changed_at + BUS_SETTLE_S - time.monotonic())

    def follow_clients(self) -> None:
        """Take from the bus only the device groups that the clients' subscriptions need
        (all of them while any client, or none, wants every device). While the set changes,
        a tick may reach a client twice or not at all (seq shows it)."""
        subscriptions = set(self.fanout.clients.values())
        if (
            not subscriptions
            or self.latest.max_devices  # /metrics/samples shows every device
            or any(s.devices is None or s.batch for s in subscriptions)
        ):
            groups = None  # a batched frame holds a whole tick, so it needs whole batches
        else:
            groups = sorted({device_group(d) for s in subscriptions for d in s.devices or ()})
        if groups != self.groups and self.subscriber is not None:
            self.subscriber.subscribe(groups)
            if self.relay is not None:
                self.relay.retake(_taken(groups) - _taken(self.groups))
            self.groups = groups
            self.bus_changed_at = time.monotonic()

    def figures(self) -> list[Figure]:
        sub, fanout = self.subscriber, self.fanout
        lag = (
            time.time() - self.health.last_timestamp_ms / 1000
            if self.health.last_timestamp_ms is not None
            else 0.0
        )
        return [
            Figure(
                "samples_received", "Samples received from ZeroMQ", sub.received if sub else 0, True
            ),
            Figure(
                "malformed_messages",
                "Malformed ZeroMQ messages dropped",
                sub.rejected if sub else 0,
                True,
            ),
            Figure(
                "frames_sent", "WebSocket frames written, summed over clients", fanout.sent, True
            ),
            Figure("clients", "WebSocket clients connected", len(fanout.clients)),
            Figure(
                "client_drops",
                "Clients disconnected for falling behind (1008)",
                fanout.dropped_clients,
                True,
            ),
            Figure(
                "client_disconnects", "Client disconnections of any kind", self.disconnects, True
            ),
            Figure("lag_seconds", "Wall time minus the newest sample's timestamp", lag),
            Figure("resumes", "Client resumes served (?since=)", self.resumes, True),
            Figure(
                "alerts_accepted",
                "Detectors' alerts taken and passed on",
                self.alerts_accepted,
                True,
            ),
            Figure(
                "alerts_refused",
                "Detectors' alerts refused, all reasons",
                sum(self.alerts_refused.values()),
                True,
            ),
            *(
                Figure(
                    f"alerts_refused_{reason}",
                    f"Alerts refused: {reason.replace('_', ' ')}",
                    count,
                    True,
                )
                for reason, count in self.alerts_refused.items()
            ),
            Figure(
                "alerts_undelivered",
                "Alerts the scorers' queues could not take",
                self.outbox.sender.dropped if self.outbox.sender else 0,
                True,
            ),
            Figure(
                "alert_floods",
                "Clients closed for sending ten times the alert rate (1008)",
                self.alert_floods,
                True,
            ),
            Figure(
                "bad_client_messages",
                "Client messages answered with an error",
                self.bad_messages,
                True,
            ),
            Figure(
                "resumed_samples",
                "Missed samples sent to resuming clients",
                self.resumed_samples,
                True,
            ),
            Figure(
                "samples_refilled",
                "Samples the broadcaster's subscriber missed, relayed from the producers' history",
                self.relay.refilled if self.relay else 0,
                True,
            ),
            *(
                Figure(
                    "gap_samples",
                    "Samples of the live stream named in gap messages, by gap reason",
                    count,
                    True,
                    labels=(("reason", reason),),
                )
                for reason, count in sorted(self.relay.gap_samples.items() if self.relay else [])
            ),
        ]


def _taken(groups: list[int] | None) -> set[int]:
    """The device groups a subscription to `groups` takes (None: all of them)."""
    return set(range(GROUPS)) if groups is None else set(groups)


async def run(config: BroadcasterConfig, stop: asyncio.Event) -> None:
    """Serve until `stop` is set. Raises StartupError if the port or endpoint is unusable."""
    state = State(config)
    server = await _listen(config, state)
    try:
        state.subscriber = Subscriber(
            config.zmq_pub.split(","), security=config.security, keep_refused=True
        )
        state.relay = Relay(
            state.subscriber,
            CatchupClient(
                config.zmq_catchup, config.security, idle_timeout=backlog.ANSWER_TIMEOUT_S
            ),
        )
        state.bus_changed_at = time.monotonic()
        targets = [e.strip() for e in config.zmq_alerts.split(",") if e.strip()]
        if targets:
            state.outbox.sender = AlertSender(targets, config.security)
        pages = {metrics.SAMPLES_PATH: state.samples_exposition} if state.latest.max_devices else {}
        scrape = metrics.serve(
            config.metrics_port,
            state.registry,
            "--metrics-port (STREAM_BROADCASTER_METRICS_PORT)",
            pages,
        )
    except BaseException:
        if state.relay is not None:
            state.relay.client.close()
        if state.subscriber is not None:
            state.subscriber.close()
        if state.outbox.sender is not None:
            state.outbox.sender.close()
        server.close()
        raise
    subscriber, relay = state.subscriber, state.relay
    ready = Readiness(config.ready_file, "broadcaster")
    try:
        host, port = _address(server)
        scheme = "wss" if config.tls_cert else "ws"
        ready.announce(
            ws_port=port,
            url=f"{scheme}://{host}:{port}/",
            metrics_port=scrape.port if scrape else 0,
        )
        asking = asyncio.create_task(state.fleet.run(stop))
        try:
            await _relay(config, relay, state, stop)
        finally:
            asking.cancel()
    finally:
        ready.withdraw()
        for item in relay.close():  # what is still unknown, named before the clients go
            if isinstance(item, list):
                state.fanout.send_gaps(item)
        state.subscriber = state.relay = None  # clients leaving now must not resubscribe
        relay.client.close()
        subscriber.close()
        state.outbox.flush()
        if state.outbox.sender is not None:
            state.outbox.sender.close()
        if scrape is not None:
            scrape.close()
        await _shutdown(server, config.close_timeout)
        state.producers.close()
        log.info("stopped")


async def _listen(config: BroadcasterConfig, state: State) -> Server:
    fanout = state.fanout

    async def handler(connection: ServerConnection) -> None:
        query = urlsplit(connection.request.path if connection.request else "").query
        try:
            subscription = Subscription.from_query(query)
        except SubscriptionError as exc:
            await connection.send(json.dumps({"error": str(exc)}))
            subscription = Subscription()
        try:
            subscription = subscription.with_labels(state.labels)
        except SubscriptionError as exc:
            await connection.send(json.dumps({"error": str(exc)}))
            subscription = replace(subscription, labels=False)
        detector = _detector(query)
        try:
            since = from_query(query)
            if since is not None:
                check(since, subscription)
        except SinceError as exc:
            await connection.send(json.dumps({"error": str(exc)}))
            since = None
        fanout.add(connection, subscription)
        state.follow_clients()
        log.info("client %s connected (n=%d)", peer(connection), len(fanout.clients))
        limit = InboundLimit(config.inbound_rate, _INBOUND_BURST)
        try:
            if since is not None:
                await _send_since(config, state, connection, subscription, since)
            else:
                fanout.history(connection, subscription, connecting=True)
            alert_limit = alerts.AlertLimit(config.alert_rate)
            async for message in connection:
                body = alerts.alert_body(message) if isinstance(message, str) else None
                if body is not None:
                    if not await _alert(
                        state, connection, subscription, body, detector, alert_limit
                    ):
                        break
                    continue
                if not limit.allow(time.monotonic()):
                    log.warning("client %s sends too many messages: closing", peer(connection))
                    await connection.close(CloseCode.POLICY_VIOLATION, "too many messages")
                    break
                if isinstance(message, bytes):
                    await connection.close(CloseCode.UNSUPPORTED_DATA, "text messages only")
                    break
                try:
                    asked = parse_message(message)
                    if isinstance(asked, Since):
                        check(asked, subscription)
                    if isinstance(asked, Subscription):
                        asked = asked.with_labels(state.labels)
                except (SubscriptionError, SinceError) as exc:
                    state.bad_messages += 1
                    await connection.send(json.dumps({"error": str(exc)}))
                    continue
                if isinstance(asked, Since):
                    await _send_since(config, state, connection, subscription, asked)
                    continue
                subscription = asked
                fanout.add(connection, subscription)
                state.follow_clients()
                await connection.send(json.dumps({"subscribed": subscription.describe()}))
                fanout.history(connection, subscription)
        except ConnectionClosed:
            pass
        finally:
            fanout.discard(connection)
            state.follow_clients()
            state.disconnects += 1
            log.info("client %s disconnected (n=%d)", peer(connection), len(fanout.clients))

    admission = Admission(config.max_clients, config.origins, config.token)
    reuse_port = _reuse_port(config)
    where = f"{config.ws_host}:{config.ws_port}"
    tls = config.tls_cert is not None
    if reuse_port:  # a port shared with another pipeline's broadcaster would mix streams
        await peers.check_before(config.ws_host, config.ws_port, tls, state.pipeline)
    try:
        # With reuse_port, every socket serve() makes (one per address the host resolves
        # to, e.g. 127.0.0.1 and ::1 for localhost) is shared the same way.
        server = await serve(
            handler,
            config.ws_host,
            config.ws_port,
            process_request=_requests(admission, lambda: len(fanout.clients), state),
            ssl=_tls(config),
            max_size=config.max_inbound_message,
            reuse_port=reuse_port,
            **protocol_options(config),
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            # A shared port is refused only by a listener that does not share it.
            reason = "address already in use" + (
                " by a listener that does not share it (SO_REUSEPORT)" if reuse_port else ""
            )
            reason += ": choose another port with --ws-port (STREAM_WS_PORT)"
        else:
            reason = exc.strerror or str(exc)
        raise StartupError(f"cannot listen on {where}: {reason}") from None
    except ValueError as exc:  # asyncio: SO_REUSEPORT defined but not implemented
        raise StartupError(f"cannot listen on {where}: {exc}; use --no-reuse-port") from None
    if reuse_port:
        try:
            await peers.check_after(config.ws_host, config.ws_port, tls, state.pipeline)
        except StartupError:
            server.close()
            raise
    shared = " (SO_REUSEPORT: this pipeline's other broadcasters may share it)" * reuse_port
    for sock in server.sockets:
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        log.info(
            "listening on %s://%s:%d%s", "wss" if config.tls_cert else "ws", shown, port, shared
        )
    return server


def _detector(query: str) -> str:
    """The connection's `?detector=` name (its alerts' default), if valid."""
    names = parse_qs(query).get("detector")
    try:
        return alerts.detector_name(names[-1]) if names else "detector"
    except alerts.AlertError:
        return "detector"


async def _alert(
    state: State,
    connection: ServerConnection,
    subscription: Subscription,
    body: object,
    detector: str,
    limit: alerts.AlertLimit,
) -> bool:
    """Take one alert message: acknowledge it, or refuse it with an error; False if the
    connection floods and was closed."""
    n = alerts.count(body)
    now = time.monotonic()
    if limit.flood(now, n):
        state.alert_floods += 1
        state.alerts_refused["rate"] += n
        log.warning("client %s floods alerts: closing", peer(connection))
        await connection.close(CloseCode.POLICY_VIOLATION, "too many alerts")
        return False
    if not limit.allow(now, n):
        state.alerts_refused["rate"] += n
        limit.refused_since_error += n
        if now - limit.last_error >= 1.0:
            limit.last_error = now
            refused, limit.refused_since_error = limit.refused_since_error, 0
            await connection.send(
                json.dumps(
                    {
                        "error": (
                            f"too many alerts: {refused} refused; at most {limit.rate:g} a second"
                        )
                    }
                )
            )
        return True
    try:
        records = alerts.parse(body, subscription, state.devices, detector, alerts.now_ms())
    except alerts.AlertError as exc:
        state.alerts_refused[exc.reason] += n
        await connection.send(json.dumps({"error": str(exc)}))
        return True
    state.outbox.add(records)
    state.alerts_accepted += len(records)
    await connection.send(json.dumps({"alerted": len(records)}))
    return True


async def _send_since(
    config: BroadcasterConfig,
    state: State,
    connection: ServerConnection,
    subscription: Subscription,
    since: Since,
) -> None:
    """Send the client what it missed after `since`, then the live samples, with nothing
    twice and nothing left out that is not named in one gap message.

    Its live samples are held from the start (so they overlap the history rather than
    follow a hole), the producers' history is asked once the bus is settled, and the held
    samples follow the history, each device's only above what the history gave."""
    fanout = state.fanout
    fanout.hold(connection, config.resume_max)
    try:
        await asyncio.sleep(state.settled())
        after, after_seq = since.after(subscription.devices)
        answer = await backlog.fetch(
            state.producers, after, after_seq, config.resume_max, lambda: connection in fanout.held
        )
        if connection not in fanout.held:
            return  # gone (or dropped for holding too much) meanwhile
        plan = backlog.plan(after, after_seq, answer, config.resume_max)
        state.resumes += 1
        if plan.gaps and connection in fanout.held:
            await connection.send(gap_message(plan.gaps).decode())
        sent = sum(len(b) for b in plan.batches)
        if not await fanout.write_paced(connection, subscription, plan.batches):
            return
        state.resumed_samples += sent
        log.info(
            "client %s resumed: %d missed sample(s), %d gap(s)",
            peer(connection),
            sent,
            len(plan.gaps),
        )
        while held := fanout.take_held(connection):
            for item in held:
                if isinstance(item, list):  # gap records of the live stream, in their place
                    named = plan.watermark.named(item)
                    if named:
                        await connection.send(gap_message(named).decode())
                elif not await fanout.write_paced(
                    connection, subscription, [plan.watermark.admit(item)]
                ):
                    return
    finally:
        fanout.release(connection)  # after an empty take_held, with no await in between


def _reuse_port(config: BroadcasterConfig) -> bool:
    """Whether to set SO_REUSEPORT: asked for, and the platform has it (Linux spreads the
    connections over the listeners; on a port of 0 each process gets a port of its own)."""
    if not config.reuse_port:
        return False
    if not hasattr(socket, "SO_REUSEPORT"):
        log.warning("SO_REUSEPORT is not available here: the port cannot be shared")
        return False
    return True


def _address(server: Server) -> tuple[str, int]:
    """(host, port) a client on this machine can use; IPv4 first (with port 0 each address
    family gets its own port)."""
    sockets = sorted(server.sockets, key=lambda s: s.family != socket.AF_INET)
    host, port = sockets[0].getsockname()[:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return (f"[{host}]" if ":" in host else host), port


def _requests(admission: Admission, clients, state: State):
    """WebSocket upgrades go through admission; plain GETs get the pages (the token too)."""
    admit = admission.checker(clients)

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return page(
                connection,
                request,
                state.health,
                len(state.fanout.clients),
                state.registry,
                admission.authorized(request),
                state.schema,
                state.fleet.body,
                state.samples_exposition if state.latest.max_devices else None,
            )
        return admit(connection, request)

    return process_request


async def _relay(
    config: BroadcasterConfig, relay: Relay, state: State, stop: asyncio.Event
) -> None:
    fanout, subscriber = state.fanout, relay.subscriber
    log.info("relaying samples from %s", subscriber.endpoint)
    await relay.begin()
    next_stats = time.monotonic() + config.stats_interval
    while not stop.is_set():
        wait = max(0.0, min(next_stats - time.monotonic(), relay.retry_s))
        received = await subscriber.receive(wait, stop)
        for batch in received:  # as sent: a message holds ticks of one producer's devices
            state.latest.update(batch)
        for item in await relay.take(received):  # in order, refills and gaps in their place
            if isinstance(item, list):
                fanout.send_gaps(item)
                continue
            batch = item.batch if isinstance(item, Refill) else item
            state.health.saw(int(batch.rows["ts_ms"][-1]))
            state.devices.update(batch.rows)
            if isinstance(item, Refill):  # maybe large: a chunk at a time
                await fanout.send_paced(batch)
            else:  # kept for history; rendered only for subscriptions in use
                fanout.send(batch)
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
