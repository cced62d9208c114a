"""The bridge over TLS: nats-server and mosquitto serving a self-signed certificate made by
the test, trusted with --tls-ca; and the one-line errors when TLS cannot work."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridging import assert_contiguous_once, assert_one_line_error, bridge, figure, run_bridge
from brokers import Mosquitto, MqttReader, Nats, by_device, certificate, read_stream
from conftest import Pipeline, wait_until


@pytest.fixture
def certs(tmp_path: Path) -> tuple[tuple[Path, Path], Path]:
    """The brokers' certificate and key, and a CA file that did not sign it."""
    served = certificate(tmp_path, "broker")
    stranger, _ = certificate(tmp_path, "stranger")
    return served, stranger


def test_jetstream_over_tls(pipeline: Pipeline, tmp_path: Path, certs):
    """tls:// with --tls-ca: every sample reaches a TLS-only nats-server; nats:// with the
    CA file works too, since the server asks for TLS."""
    (cert, key), _ = certs
    nats = Nats(tmp_path, extra=["--tls", "--tlscert", str(cert), "--tlskey", str(key)])
    try:
        url = nats.url.replace("nats://", "tls://")
        pipeline.producer("--rate", "50", "--devices", "5")
        first = bridge(pipeline, url, "--tls-ca", str(cert), gaps="a.gaps.csv")
        second = bridge(
            pipeline,
            nats.url,
            *("--tls-ca", str(cert), "--stream", "PLAIN_URL", "--prefix", "plain"),
            gaps="b.gaps.csv",
        )
        assert first.info["to"] == url
        wait_until(
            lambda: min(figure(b, "samples_acknowledged") for b in (first, second)) >= 200, 20
        )
        pipeline.procs[0].stop()
        for proc in (first, second):
            assert proc.stop()[0] == 0
        stored = by_device([s for _, s in read_stream(nats.url, ca=cert)])
        plain = by_device([s for _, s in read_stream(nats.url, "PLAIN_URL", ca=cert)])
    finally:
        nats.close()
    assert len(stored) == 5 and len(plain) == 5
    assert_contiguous_once(stored)
    assert sum(len(s) for s in stored.values()) >= 200


def test_mqtt_over_tls(pipeline: Pipeline, tmp_path: Path, certs):
    """mqtts:// with --tls-ca: a subscriber on mosquitto's TLS listener gets every sample."""
    (cert, key), _ = certs
    broker = Mosquitto(tmp_path, tls=(cert, key))
    try:
        reader = MqttReader(broker.port, ca=cert)
    except BaseException:
        broker.close()
        raise
    try:
        pipeline.producer("--rate", "50", "--devices", "5")
        proc = bridge(pipeline, broker.url, "--tls-ca", str(cert))
        assert proc.info["to"].startswith("mqtts://")
        wait_until(lambda: len(reader.received()) >= 200, 20)
        pipeline.procs[0].stop()
        wait_until(lambda: figure(proc, "bridge_lag_samples") == 0, 10)
        acknowledged = figure(proc, "samples_acknowledged")
        assert proc.stop()[0] == 0
        wait_until(lambda: len(reader.received()) >= acknowledged, 10)
    finally:
        reader.close()
        broker.close()
    seqs = by_device(reader.samples)
    assert len(seqs) == 5
    assert_contiguous_once(seqs)


def test_tls_failures_are_one_line_errors_with_status_3(tmp_path: Path, certs):
    """A certificate the bridge cannot trust (a wrong CA file, or none) and TLS to a plain
    port stop the bridge with one line saying what to do, and status 3."""
    (cert, key), stranger = certs
    for where in ("tls", "plain"):
        (tmp_path / where).mkdir()
    tls_nats = Nats(tmp_path / "tls", extra=["--tls", "--tlscert", str(cert), "--tlskey", str(key)])
    brokers = [tls_nats]
    try:
        plain_nats = Nats(tmp_path / "plain")
        brokers.append(plain_nats)
        tls_mqtt = Mosquitto(tmp_path / "tls", tls=(cert, key))
        brokers.append(tls_mqtt)
        plain_mqtt = Mosquitto(tmp_path / "plain")
        brokers.append(plain_mqtt)
        tls_url = tls_nats.url.replace("nats://", "tls://")
        untrusted = r"TLS certificate of {} not trusted \(self-signed certificate\): give the CA"
        for url, args in [
            (tls_url, ["--tls-ca", str(stranger)]),
            (tls_url, []),  # the system's CAs
            (tls_nats.url, []),  # nats:// to a server that requires TLS
            (tls_mqtt.url, ["--tls-ca", str(stranger)]),
        ]:
            pattern = untrusted.format(re.escape(url))
            assert_one_line_error(run_bridge(tmp_path, "--to", url, *args), 3, pattern)
        to_plain = plain_nats.url.replace("nats://", "tls://")
        assert_one_line_error(
            run_bridge(tmp_path, "--to", to_plain, "--tls-ca", str(cert)),
            3,
            rf"broker {to_plain} does not speak TLS \(a plain port\?\)",
        )
        to_plain = plain_mqtt.url.replace("mqtt://", "mqtts://")
        assert_one_line_error(
            run_bridge(tmp_path, "--to", to_plain, "--tls-ca", str(cert)),
            3,
            rf"TLS handshake with {to_plain} failed .*: is it a TLS port\?",
        )
    finally:
        for broker in brokers:
            broker.close()


def test_tls_settings_that_cannot_work_are_status_2(tmp_path: Path, certs):
    """A CA file that does not exist, or one given for plain mqtt://, is a usage error."""
    (cert, _), _ = certs
    assert_one_line_error(
        run_bridge(tmp_path, "--to", "tls://127.0.0.1:4222", "--tls-ca", str(tmp_path / "no.pem")),
        2,
        r"--tls-ca.*no\.pem.* does not exist",
    )
    assert_one_line_error(
        run_bridge(tmp_path, "--to", "mqtt://127.0.0.1:1883", "--tls-ca", str(cert)),
        2,
        r"--tls-ca.*a CA file is for TLS: use mqtts:// instead of mqtt://127\.0\.0\.1:1883",
    )
