"""The test client's readers of the brokers the bridge writes to: Kafka, NATS and MQTT.

`python clients/test_client.py --url kafka://localhost:9092` prints the very lines it
prints for the broadcaster (`Received: {...}`, one sample each), so any hop can be checked
with one tool. What each reads, from the newest message on:

    kafka://[USER:PASS@]HOST:PORT[,HOST:PORT...][/TOPIC]   (kafka+ssl:// for TLS)
        the topic (default samples) with isolation.level=read_committed: only what the
        bridge's transactions committed;
    nats://[USER:PASS@]HOST:PORT[/PREFIX]                 (tls:// for TLS)
        the subjects PREFIX.> (default samples.>);
    mqtt://[USER:PASS@]HOST:PORT[/PREFIX]                 (mqtts:// for TLS)
        the topics PREFIX/# (default samples/#) at QoS 1.

A message holding a batch (the bridge's --batch) is shown as its samples, one line each.
Each engine's client library is imported only when its URL is used.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

SCHEMES = {"kafka": 9092, "kafka+ssl": 9093, "nats": 4222, "tls": 4222, "mqtt": 1883, "mqtts": 8883}


class Shows(Protocol):
    def connected(self) -> None: ...

    def show(self, message: str) -> None: ...


def is_engine_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SCHEMES


async def listen(url: str, count: int | None, output: Shows, devices: set[str] | None) -> None:
    """Show the samples read from the engine at `url` until `count` of them (or forever)."""
    scheme = url.partition("://")[0].lower()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def put(payload: bytes) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, payload)

    reader = {"kafka": _kafka, "kafka+ssl": _kafka, "mqtt": _mqtt, "mqtts": _mqtt}.get(scheme)
    close = reader(url, put) if reader else await _nats(url, queue.put_nowait)
    output.connected()
    shown = 0
    try:
        while count is None or shown < count:
            for line in samples(await queue.get(), devices):
                output.show(line)
                shown += 1
                if count is not None and shown >= count:
                    break
    finally:
        result = close()
        if asyncio.iscoroutine(result):
            await result


def samples(payload: bytes, devices: set[str] | None) -> list[str]:
    """The samples of one message, each as compact JSON; those of `devices` only if given."""
    try:
        body = json.loads(payload)
    except ValueError:
        print(f"not JSON: {payload[:80]!r}", file=sys.stderr, flush=True)
        return []
    items = body if isinstance(body, list) else [body]
    if devices is not None:
        items = [s for s in items if isinstance(s, dict) and s.get("device") in devices]
    if not isinstance(body, list):
        return [payload.decode()] if items else []
    return [json.dumps(s, separators=(",", ":"), ensure_ascii=False) for s in items]


def _parts(url: str) -> tuple[Any, list[tuple[str, int]], str]:
    """(split URL of the first server, every (host, port), path without its slash)."""
    scheme, _, rest = url.partition("://")
    credentials, at, hosts = rest.rpartition("@")
    hosts, slash, path = hosts.partition("/")
    servers = []
    for host in hosts.split(","):
        parts = urlsplit(f"{scheme}://{host}")
        if not parts.hostname:
            raise ValueError(f"malformed URL {url!r}: no host")
        servers.append((parts.hostname, parts.port or SCHEMES[scheme.lower()]))
    first = urlsplit(f"{scheme}://{credentials}{at}{hosts.split(',')[0]}")
    return first, servers, path.strip("/")


def _kafka(url: str, put: Callable[[bytes], None]) -> Callable[[], None]:
    """A read_committed consumer of every partition of the topic, from its end on."""
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    first, servers, topic = _parts(url)
    topic = topic or "samples"
    tls = first.scheme.lower() == "kafka+ssl"
    conf: dict[str, Any] = {
        "bootstrap.servers": ",".join(f"{h}:{p}" for h, p in servers),
        "group.id": f"test-client-{uuid.uuid4()}",  # assign() only: nothing is committed
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "security.protocol": ("SASL_" if first.username else "") + ("SSL" if tls else "PLAINTEXT"),
    }
    if first.username:
        conf.update(
            {
                "sasl.mechanism": "SCRAM-SHA-256",
                "sasl.username": unquote(first.username),
                "sasl.password": unquote(first.password or ""),
            }
        )
    consumer = Consumer(conf)
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    if not partitions:
        raise ValueError(f"no topic {topic} at {url}")
    consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in partitions])
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            for record in consumer.consume(1000, timeout=0.1):
                if record.error() is None and record.value() is not None:
                    put(record.value())
        consumer.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join(5)

    return close


def _mqtt(url: str, put: Callable[[bytes], None]) -> Callable[[], None]:
    """A QoS 1 subscriber to PREFIX/#, in paho's network thread."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    first, servers, prefix = _parts(url)
    host, port = servers[0]
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-client-{uuid.uuid4()}")
    if first.username:
        client.username_pw_set(unquote(first.username), unquote(first.password or ""))
    if first.scheme.lower() == "mqtts":
        client.tls_set_context(ssl.create_default_context())
    subscribed = threading.Event()
    topic = f"{(prefix or 'samples').replace('.', '/')}/#"
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, 1)
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = lambda c, u, msg: put(msg.payload)
    client.connect(host, port)
    client.loop_start()
    if not subscribed.wait(10):
        client.loop_stop()
        raise ConnectionError(f"could not subscribe to {topic} at {url}")

    def close() -> None:
        client.disconnect()
        client.loop_stop()

    return close


async def _nats(url: str, put: Callable[[bytes], None]) -> Callable[[], Any]:
    """A core NATS subscription to PREFIX.> (live: what the server routes from now on)."""
    import nats

    first, servers, prefix = _parts(url)
    scheme = "tls" if first.scheme.lower() == "tls" else "nats"
    options: dict[str, Any] = {"servers": [f"{scheme}://{h}:{p}" for h, p in servers]}
    if first.username:
        options.update(user=unquote(first.username), password=unquote(first.password or ""))
    nc = await nats.connect(**options, connect_timeout=5)

    async def on_message(msg) -> None:
        put(msg.data)

    sub = await nc.subscribe(f"{prefix or 'samples'}.>", cb=on_message)
    await nc.flush()

    async def close() -> None:
        await sub.unsubscribe()
        await nc.close()

    return close
