"""`python -m bridge`: the command line, which only builds a config and runs it."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import click

from bridge import service
from bridge.config import (
    MQTT_VERSIONS,
    RETENTIONS,
    SASL_MECHANISMS,
    BridgeConfig,
    check_prefix,
    check_stream_name,
    check_topic,
    parse_target,
)
from common.cli import (
    catchup_from,
    duration,
    log_level_option,
    metrics_port_option,
    option,
    producer_endpoints,
    producers_option,
    ready_file_option,
    security_from,
    security_options,
    serve,
    shard_option,
    zmq_catchup_option,
    zmq_pub_option,
)
from common.logs import setup_logging
from common.ready import instance_path
from common.shards import Shard

KAFKA_WINDOW = 20_000  # messages per transaction: 2,000 held the plain producer to 52 k/s


def _checked(check):
    """A click callback from a function that raises ValueError on a bad value."""

    def callback(ctx: click.Context, param: click.Parameter, value):
        if value is None:
            return None
        try:
            return check(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


def _target(value: str | None):
    if not value:
        raise ValueError(
            "no broker given: expected nats://HOST:PORT, mqtt://HOST:PORT or kafka://HOST:PORT"
        )
    return parse_target(value)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@option(
    "--to",
    "STREAM_BRIDGE_TO",
    callback=lambda ctx, param, value: _checked(_target)(ctx, param, value or ""),
    help="Broker to publish to: nats://HOST:PORT (JetStream; tls:// for TLS), "
    "mqtt://[USER:PASS@]HOST:PORT (mqtts:// for TLS) or "
    "kafka://[USER:PASS@]HOST:PORT[,HOST:PORT...] (kafka+ssl:// for TLS).",
)
@zmq_pub_option
@zmq_catchup_option
@producers_option
@security_options
@option(
    "--prefix",
    "STREAM_BRIDGE_PREFIX",
    default="samples",
    callback=_checked(check_prefix),
    help="Subjects are PREFIX.<device> (NATS), topics PREFIX/<device> (MQTT).",
)
@option(
    "--stream",
    "STREAM_BRIDGE_STREAM",
    default="SAMPLES",
    callback=_checked(check_stream_name),
    help="JetStream stream, created if missing (subjects PREFIX.>).",
)
@option(
    "--topic",
    "STREAM_BRIDGE_TOPIC",
    default="samples",
    callback=_checked(check_topic),
    help="Kafka topic, created if missing; key = device id.",
)
@option(
    "--partitions",
    "STREAM_BRIDGE_PARTITIONS",
    default=6,
    type=click.IntRange(1, 10_000),
    help="Partitions of a Kafka topic the bridge creates.",
)
@option(
    "--replicas",
    "STREAM_BRIDGE_REPLICAS",
    default=1,
    type=click.IntRange(1, 5),
    help="Replicas of a stream, or replication factor of a Kafka topic, the bridge creates "
    "(a topic gets min.insync.replicas 2 from 3 replicas on, else 1).",
)
@option(
    "--retention",
    "STREAM_BRIDGE_RETENTION",
    default="limits",
    type=click.Choice(RETENTIONS),
    help="Retention policy of a stream the bridge creates.",
)
@option(
    "--max-age",
    "STREAM_BRIDGE_MAX_AGE",
    default="1d",
    callback=duration,
    help="How long a created stream keeps messages, e.g. 12h, 7d (0: for ever).",
)
@option(
    "--qos",
    "STREAM_BRIDGE_QOS",
    default=1,
    type=click.IntRange(0, 2),
    help="MQTT quality of service: 0 at most once, 1 at least once, 2 exactly once.",
)
@option(
    "--retain",
    "STREAM_BRIDGE_RETAIN",
    is_flag=True,
    help="MQTT: the broker keeps each device's last message for new subscribers.",
)
@option(
    "--mqtt-version",
    "STREAM_BRIDGE_MQTT_VERSION",
    default="3.1.1",
    type=click.Choice(MQTT_VERSIONS),
    help="MQTT protocol version.",
)
@option(
    "--tls-ca",
    "STREAM_BRIDGE_TLS_CA",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM file of the CAs that may sign the broker's certificate (default: the "
    "system's); for tls://, mqtts://, kafka+ssl:// and nats:// to a server that requires TLS.",
)
@option(
    "--username",
    "STREAM_BRIDGE_USERNAME",
    help="Broker user name (overrides the URL's); for Kafka, SASL with --sasl-mechanism.",
)
@option("--password", "STREAM_BRIDGE_PASSWORD", help="Broker password (overrides the URL's).")
@option(
    "--sasl-mechanism",
    "STREAM_BRIDGE_SASL_MECHANISM",
    default="SCRAM-SHA-256",
    type=click.Choice(SASL_MECHANISMS, case_sensitive=False),
    help="Kafka: how the user name and password are checked.",
)
@option(
    "--transactions/--no-transactions",
    "STREAM_BRIDGE_TRANSACTIONS",
    default=True,
    help="Kafka: commit each window as one transaction, so read_committed consumers see "
    "every sample once even after the bridge is killed.",
)
@option(
    "--transactional-id",
    "STREAM_BRIDGE_TRANSACTIONAL_ID",
    default="",
    help="Kafka transactional id (default: stream-bridge-TOPIC-I-of-N, from --shard); a "
    "bridge started with the id of a running one takes over and stops it.",
)
@shard_option("bridge", "STREAM_BRIDGE_SHARD")
@option(
    "--client-id",
    "STREAM_BRIDGE_CLIENT_ID",
    default="",
    help="MQTT client id (default: stream-bridge-<host>-<pid>).",
)
@option(
    "--batch",
    "STREAM_BRIDGE_BATCH",
    is_flag=True,
    help="Send a JSON array of consecutive samples of one device per message.",
)
@option(
    "--batch-max",
    "STREAM_BRIDGE_BATCH_MAX",
    default=500,
    type=click.IntRange(2, 100_000),
    help="Samples per message at most, with --batch.",
)
@option(
    "--batch-linger",
    "STREAM_BRIDGE_BATCH_LINGER",
    default="100ms",
    callback=duration,
    help="With --batch: how long samples may wait to fill larger messages (0: send what "
    "has come at once); a device at N Hz gets about N x this many samples a message.",
)
@option(
    "--window",
    "STREAM_BRIDGE_WINDOW",
    default=2000,
    type=click.IntRange(1, 60_000),
    help="Messages published before their acknowledgements are awaited (Kafka: one "
    f"transaction; {KAFKA_WINDOW} unless given).",
)
@option(
    "--max-unsent",
    "STREAM_BRIDGE_MAX_UNSENT",
    default=1_000_000,
    type=click.IntRange(1, 10**9),
    help="Samples held while the broker does not acknowledge them; past this the oldest "
    "are given up and recorded in the gaps file.",
)
@option(
    "--gaps-file",
    "STREAM_BRIDGE_GAPS",
    default="data/{instance}.gaps.csv",
    help="CSV of the samples that could not be bridged ({instance}: bridge-nats, bridge-mqtt "
    "or bridge-kafka, or honcho's process name such as bridge.2).",
)
@option(
    "--state-file",
    "STREAM_BRIDGE_STATE",
    default="data/{instance}.state.json",
    help="MQTT: where the bridge got to per device, so a restarted bridge continues there "
    "({instance}: as for --gaps-file).",
)
@metrics_port_option("STREAM_BRIDGE_METRICS_PORT")
@ready_file_option
@log_level_option
@click.pass_context
def main(
    ctx: click.Context,
    to,
    zmq_pub: str,
    zmq_catchup: str,
    producers: str,
    curve_dir: Path | None,
    allow_insecure: bool,
    prefix: str,
    stream: str,
    topic: str,
    partitions: int,
    replicas: int,
    retention: str,
    max_age: float,
    qos: int,
    retain: bool,
    mqtt_version: str,
    tls_ca: Path | None,
    username: str | None,
    password: str | None,
    sasl_mechanism: str,
    transactions: bool,
    transactional_id: str,
    shard: Shard,
    client_id: str,
    batch: bool,
    batch_max: int,
    batch_linger: float,
    window: int,
    max_unsent: int,
    gaps_file: str,
    state_file: str,
    metrics_port: int,
    ready_file: str | None,
    log_level: str,
) -> None:
    """Publish every sample to NATS JetStream, MQTT or Kafka, none lost or doubled."""
    setup_logging(log_level)
    if tls_ca is not None and to.scheme in ("mqtt", "kafka"):
        raise click.BadParameter(
            f"a CA file is for TLS: use {to.scheme}{'+ssl' if to.scheme == 'kafka' else 's'}:// "
            f"instead of {to.url}",
            param_hint="'--tls-ca'",
        )
    if batch_linger > 60:
        raise click.BadParameter(
            f"at most 60 s (samples wait this long in memory), got {batch_linger:g} s",
            param_hint="'--batch-linger'",
        )
    if (
        to.kind == "kafka"
        and ctx.get_parameter_source("window") == click.core.ParameterSource.DEFAULT
    ):
        window = KAFKA_WINDOW  # a transaction per window: larger ones cost less per sample
    # Bridges to different brokers run side by side: files are named after the broker
    # (data/bridge-kafka.gaps.csv), or after honcho's process name.
    name = f"bridge-{to.family}"
    if username is not None or password is not None:
        to = dataclasses.replace(
            to,
            username=username if username is not None else to.username,
            password=password if password is not None else to.password,
        )
    config = BridgeConfig(
        target=to,
        zmq_pub=",".join(producer_endpoints(zmq_pub, producers)),
        zmq_catchup=",".join(producer_endpoints(catchup_from(ctx, zmq_catchup), producers)),
        security=security_from(curve_dir, allow_insecure),
        prefix=prefix,
        stream=stream,
        topic=topic,
        partitions=partitions,
        transactions=transactions,
        transactional_id=transactional_id,
        sasl_mechanism=sasl_mechanism.upper(),
        shard=shard,
        replicas=replicas,
        retention=retention,
        max_age=max_age,
        qos=qos,
        retain=retain,
        mqtt_version=mqtt_version,
        client_id=client_id or f"stream-bridge-{socket.gethostname()}-{os.getpid()}",
        tls_ca=tls_ca,
        batch=batch,
        batch_max=batch_max,
        batch_linger=batch_linger,
        window=window,
        max_unsent=max_unsent,
        gaps_file=instance_path(gaps_file, name),
        state_file=instance_path(state_file, name),
        metrics_port=metrics_port,
        ready_file=str(instance_path(ready_file, name)) if ready_file else None,
    )
    serve(service.run, config)
