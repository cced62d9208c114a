"""The MQTT sink: topics `<prefix>/<device>`, QoS 0, 1 or 2, MQTT 3.1.1 or 5 (paho-mqtt)."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import threading

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from bridge.broker import Backoff, tls_context, tls_failure
from bridge.config import BridgeConfig
from bridge.message import ANOMALY_HEADER, Message
from common.errors import StartupError
from common.signals import wait_or_stop

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[/+#\s]")  # not allowed inside one level of a topic


def topic(prefix: str, device: str) -> str:
    return f"{prefix}/{_UNSAFE.sub('_', device)}"


class MqttSink:
    """Publishes messages to an MQTT broker, through paho-mqtt's network thread.

    Guarantees: at QoS 1 and 2 a message counts as acknowledged only when the broker
    acknowledged it (PUBACK; PUBCOMP at QoS 2); while the connection is down paho keeps
    unacknowledged messages and sends them again (DUP) once reconnected, so `write_batch`
    waits for them rather than reporting failure (the bridge's outbox bound applies to
    what piles up meanwhile). QoS 1 may deliver a message twice when an acknowledgement is
    lost (subscribers drop repeats by (device, seq)); QoS 2 delivers once per connection
    session. At QoS 0 a message counts as sent once written to the socket.
    """

    def __init__(
        self, config: BridgeConfig, client: paho.Client, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.config = config
        self.url = config.target.url
        self.reconnects = 0
        self.overlaps = 0  # JetStream only
        self._client = client
        self._loop = loop
        self._lock = threading.Lock()
        self._waiting: dict[int, asyncio.Future[bool]] = {}  # mid -> its acknowledgement
        self._early: dict[int, bool] = {}  # acknowledged before registered
        self._connack: asyncio.Future[ReasonCode] = loop.create_future()
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish

    @classmethod
    async def open(cls, config: BridgeConfig, stop: asyncio.Event) -> MqttSink | None:
        """Connect (retrying with backoff while the broker is unreachable); None if `stop`
        came first. Refused credentials and failed TLS handshakes raise StartupError."""
        target = config.target
        backoff = Backoff()
        while not stop.is_set():
            sink = cls(config, _client(config), asyncio.get_running_loop())
            try:
                await asyncio.to_thread(sink._client.connect, target.host, target.port, 30)
            except ssl.SSLError as exc:
                raise StartupError(tls_failure(target.url, exc)) from None
            except ConnectionResetError as exc:
                if target.tls:  # a plain listener drops the TLS hello
                    raise StartupError(
                        f"TLS handshake with {target.url} failed ({exc.strerror}): "
                        "is it a TLS port?"
                    ) from None
                reason = exc.strerror or str(exc)
            except OSError as exc:
                reason = exc.strerror or str(exc)
            else:
                sink._client.loop_start()
                try:
                    code = await asyncio.wait_for(asyncio.shield(sink._connack), 10)
                except TimeoutError:
                    code = None
                if code is not None and not code.is_failure:
                    log.info(
                        "connected to %s (MQTT %s, QoS %d)",
                        target.url,
                        config.mqtt_version,
                        config.qos,
                    )
                    return sink
                await sink.close()
                if code is not None and code.value in (4, 5, 134, 135):
                    raise StartupError(f"broker {target.url} refused the credentials ({code})")
                if code is not None:
                    raise StartupError(f"broker {target.url} refused the connection ({code})")
                reason = "no answer to CONNECT within 10 s"
            delay = backoff.next()
            log.warning("broker %s unreachable (%s); retrying in %.1f s", target.url, reason, delay)
            await wait_or_stop(stop, delay)
        return None

    async def last_stored(self, devices: list[str]) -> dict[str, tuple[int, int]]:
        """MQTT keeps no history to ask: the bridge's state file says (bridge.state)."""
        return {}

    async def write_batch(self, messages: list[Message]) -> list[bool]:
        """Publish all (paho pipelines up to `window` in flight), then await their
        acknowledgements, however long the broker is away."""
        futures = []
        qos, retain = self.config.qos, self.config.retain
        prefix = self.config.topic_prefix
        v5 = self.config.mqtt_version == "5"
        for m in messages:
            future = self._loop.create_future()
            properties = _properties(m) if v5 and m.anomalies else None
            info = self._client.publish(
                topic(prefix, m.device), m.payload, qos, retain, properties=properties
            )
            held = info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
                info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0  # kept, sent on reconnect
            )
            if not held:
                future.set_result(False)
            else:
                with self._lock:
                    early = self._early.pop(info.mid, None)
                    if early is None:
                        self._waiting[info.mid] = future
                if early is not None:
                    future.set_result(early)
            futures.append(future)
        return list(await asyncio.gather(*futures))

    async def flush(self) -> None:
        """Nothing to do: write_batch returns once its messages are acknowledged."""

    async def close(self) -> None:
        client = self._client
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)

    # paho's network thread calls these.

    def _on_connect(self, client, userdata, flags, reason_code: ReasonCode, properties) -> None:
        if self._connack.done():
            if not reason_code.is_failure:
                self.reconnects += 1
                log.info("reconnected to %s", self.url)
            return
        self._loop.call_soon_threadsafe(_settle, self._connack, reason_code)

    def _on_disconnect(self, client, userdata, flags, reason_code: ReasonCode, properties) -> None:
        if self._connack.done() and reason_code.value != 0:
            log.warning("lost the connection to %s (%s); reconnecting", self.url, reason_code)

    def _on_publish(self, client, userdata, mid: int, reason_code: ReasonCode, properties) -> None:
        ok = not reason_code.is_failure
        with self._lock:
            future = self._waiting.pop(mid, None)
            if future is None:
                self._early[mid] = ok
                return
        self._loop.call_soon_threadsafe(_settle, future, ok)


def _settle(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


def _properties(m: Message) -> Properties:
    """MQTT 5: the message's anomalies as a user property, for subscribers that filter."""
    properties = Properties(PacketTypes.PUBLISH)
    properties.UserProperty = [(ANOMALY_HEADER, m.anomalies)]
    return properties


def _client(config: BridgeConfig) -> paho.Client:
    target = config.target
    v5 = config.mqtt_version == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=config.client_id,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        clean_session=None if v5 else True,
    )
    if target.username is not None:
        client.username_pw_set(target.username, target.password)
    if target.tls:
        client.tls_set_context(tls_context(config))
    client.max_inflight_messages_set(config.window)
    client.max_queued_messages_set(0)  # unbounded here: the bridge's outbox is the bound
    client.reconnect_delay_set(0.2, 5)
    return client
