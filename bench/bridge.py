"""Samples per second into NATS JetStream and MQTT: the bridge against a plain client.

    python bench/bridge.py [--duration 15] [--devices 100] [--rate 1000] [--quick | --smoke]

Baseline, in the same run on the same brokers: a plain client publishing one sample per
message and waiting as such clients do (JetStream: publish_async, acknowledgements awaited
per 2,000; MQTT QoS 1: each PUBACK awaited before the next publish). Then the real
producer at DEVICES x RATE samples/s feeds the real bridge, with each setting, and the
rate is what the broker acknowledged per second in the second half of the run; the
bridge "holds" the producer's rate when what it holds unacknowledged stays under a
second of samples. Brokers: one JetStream node, a three-node cluster (three replicas)
and mosquitto, on loopback, started here. --smoke only checks that the script runs end to
end: a low rate for 1.5 s per setting, without the cluster.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bench._util import ready, start, stop, table, write  # noqa: E402
from brokers import Mosquitto, Nats  # noqa: E402


async def _plain_jetstream(url: str, stream: str, count: int, replicas: int = 1) -> float:
    import nats
    from nats.js.api import StreamConfig

    nc = await nats.connect(url)
    js = nc.jetstream()
    config = StreamConfig(name=stream, subjects=[f"{stream.lower()}.>"], num_replicas=replicas)
    await js.add_stream(config)
    payload = b'{"timestamp":"2026-11-28 00:05:07.000","cpu":47.2,"mem":62.1,"disk_io":120.0,'
    payload += b'"net":58.0,"device":"host-001","seq":17,"anomaly":null,"anomaly_id":null}'
    began = time.perf_counter()
    pending = []
    for i in range(count):
        subject = f"{stream.lower()}.host-{i % 100:03d}"
        headers = {"Nats-Msg-Id": f"host-{i % 100:03d}:{i}"}
        pending.append(await js.publish_async(subject, payload, headers=headers))
        if len(pending) >= 2000:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    took = time.perf_counter() - began
    await nc.close()
    return count / took


def _plain_mqtt(port: int, count: int) -> float:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-plain")
    client.connect("127.0.0.1", port)
    client.loop_start()
    payload = b'{"timestamp":"2026-11-28 00:05:07.000","cpu":47.2,"device":"host-001","seq":17}'
    began = time.perf_counter()
    for i in range(count):
        client.publish(f"plain/host-{i % 100:03d}", payload, qos=1).wait_for_publish(10)
    took = time.perf_counter() - began
    client.disconnect()
    client.loop_stop()
    return count / took


def _figure(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return float(re.search(rf"^stream_{name}(?:_total)? (\S+)$", text, re.M)[1])


def _through_bridge(
    work: Path, name: str, url: str, args: list[str], devices: int, rate: int, duration: float
) -> dict:
    """The producer at devices x rate, the bridge with `args`: acknowledged samples/s."""
    pub, catchup = f"ipc://{work}/{name}.pub", f"ipc://{work}/{name}.catchup"
    producer = start(
        "producer",
        *("--zmq-pub", pub, "--zmq-catchup", catchup, "--zmq-control", f"ipc://{work}/{name}.ctl"),
        *("--devices", str(devices), "--rate", str(rate), "--state", str(work / f"{name}.json")),
        cwd=work,
    )
    ready(producer)
    bridge = start(
        "bridge",
        *("--zmq-pub", pub, "--zmq-catchup", catchup, "--to", url, "--metrics-port", "any"),
        *("--gaps-file", str(work / f"{name}.gaps.csv"), *args),
        cwd=work,
    )
    port = ready(bridge)["metrics_port"]
    try:
        time.sleep(duration / 2)  # warm up: streams created, first samples through
        acked, began = _figure(port, "samples_acknowledged"), time.monotonic()
        time.sleep(duration / 2)
        rate_acked = (_figure(port, "samples_acknowledged") - acked) / (time.monotonic() - began)
        lag = _figure(port, "bridge_lag_samples")
        dropped = _figure(port, "samples_dropped")
    finally:
        stop(bridge, producer)
    offered = devices * rate
    return {
        "setting": name,
        "offered": offered,
        "acknowledged_per_s": rate_acked,
        "lag_samples": lag,
        "dropped": dropped,
        "holds": lag < offered and dropped == 0,
    }


@click.command()
@click.option("--duration", default=16.0, show_default=True, help="Seconds per bridge setting.")
@click.option("--devices", default=100, show_default=True)
@click.option("--rate", default=1000, show_default=True, help="Samples/s per device.")
@click.option("--quick", is_flag=True, help="4 s per setting, 100 devices x 200 Hz.")
@click.option(
    "--smoke",
    is_flag=True,
    help="A check that it runs, not a measurement: 1.5 s per setting at 50 Hz, one "
    "JetStream node with and without --batch and MQTT QoS 1 (no cluster).",
)
def main(duration: float, devices: int, rate: int, quick: bool, smoke: bool) -> None:
    if smoke:
        duration, rate = 1.5, 50
    elif quick:
        duration, rate = 4.0, 200
    plain_count = 1_000 if smoke else 5_000 if quick else 30_000
    work = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    (work / "one").mkdir()
    (work / "three").mkdir()
    (work / "mqtt").mkdir()
    brokers = [Nats(work / "one")]
    try:
        if not smoke:
            brokers.append(Nats(work / "three", nodes=3))
        brokers.append(Mosquitto(work / "mqtt"))
        one, mosquitto = brokers[0], brokers[-1]
        three = None if smoke else brokers[1]
        baselines = {
            "jetstream, 1 node": asyncio.run(_plain_jetstream(one.url, "PLAIN", plain_count)),
        }
        if three:
            baselines["jetstream, 3 replicas"] = asyncio.run(
                _plain_jetstream(three.url, "PLAIN3", plain_count, replicas=3)
            )
        baselines["mqtt qos 1"] = _plain_mqtt(mosquitto.port, plain_count // 5)
        settings = [
            ("jetstream, 1 node", one.url, []),
            (
                "jetstream, 1 node, --batch",
                one.url,
                ["--batch", "--stream", "B1", "--prefix", "b1"],
            ),
        ]
        if three:
            settings += [
                ("jetstream, 3 replicas", three.url, ["--replicas", "3"]),
                (
                    "jetstream, 3 replicas, --batch",
                    three.url,
                    ["--replicas", "3", "--batch", "--stream", "B3", "--prefix", "b3"],
                ),
            ]
        settings.append(("mqtt qos 1", mosquitto.url, ["--qos", "1"]))
        if not smoke:
            settings += [
                ("mqtt qos 1, --batch", mosquitto.url, ["--qos", "1", "--batch"]),
                ("mqtt qos 0", mosquitto.url, ["--qos", "0"]),
            ]
        results = []
        for i, (name, url, args) in enumerate(settings):
            results.append(_through_bridge(work, f"s{i}", url, args, devices, rate, duration))
            results[-1]["setting"] = name
    finally:
        for broker in brokers:
            broker.close()
    rows = [["setting", "plain client msgs/s", "bridge samples/s", "offered/s", "holds it"]]
    for r in results:
        base = next((v for k, v in baselines.items() if r["setting"].startswith(k)), None)
        rows.append(
            [
                r["setting"],
                f"{base:,.0f}" if base else "",
                f"{r['acknowledged_per_s']:,.0f}",
                f"{r['offered']:,}",
                "yes" if r["holds"] else f"no (lag {r['lag_samples']:,.0f})",
            ]
        )
    print(table(rows))
    path = write(
        "bridge",
        {"baselines_msgs_per_s": baselines, "bridge": results, "quick": quick, "smoke": smoke},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
