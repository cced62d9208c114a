"""Subscriptions: devices, fields, max_rate, batched frames and history, by query or message."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.request
from collections import defaultdict
from datetime import UTC, datetime

import numpy as np
import pytest
from websockets.sync.client import connect

from broadcaster.fanout import Fanout
from broadcaster.subscription import Downsampler, Subscription, SubscriptionError
from common import schema
from conftest import Pipeline, Proc, cpu_wait, wait_until

BASE_KEYS = ["timestamp", "device", "seq", "anomaly", "anomaly_id", "anomaly_root", "event"]
BASE_KEYS += ["anomaly_metrics"]


class TestParsing:
    def test_defaults_keep_the_spec_behaviour(self):
        """No query means every device and field, one sample per frame: the spec's stream."""
        sub = Subscription.from_query("")
        assert sub == Subscription() and sub.fields == schema.METRICS and not sub.batch

    def test_query_and_message_mean_the_same(self):
        """A query string and a subscribe message with the same keys give the same subscription."""
        query = Subscription.from_query("devices=host-01,host-02&fields=net,cpu&max_rate=5&batch=1")
        message = Subscription.from_message(
            json.dumps(
                {
                    "subscribe": {
                        "devices": ["host-01", "host-02"],
                        "fields": "net,cpu",
                        "max_rate": 5,
                        "batch": True,
                    }
                }
            )
        )
        assert query == message
        assert query.fields == ("cpu", "net")  # contract order, whatever the asked order

    @pytest.mark.parametrize(
        "query, words",
        [
            ("fields=cpu,temp", "unknown field 'temp'"),
            ("max_rate=0", "max_rate must be between"),
            ("max_rate=fast", "max_rate must be a number"),
            ("history=5000", "history must be between"),
            ("batch=maybe", "batch must be 1 or 0"),
            ("colour=red", "unknown key 'colour'"),
        ],
    )
    def test_bad_values_are_named(self, query, words):
        """Each bad key or value is refused with a message naming it and what is allowed."""
        with pytest.raises(SubscriptionError, match=words):
            Subscription.from_query(query)

    def test_bad_messages(self):
        """Messages that are not a subscribe object are refused."""
        for text in ["hello", "[]", '{"subscribe": 3}', '{"unsubscribe": {}}']:
            with pytest.raises(SubscriptionError):
                Subscription.from_message(text)


def test_downsampler_keeps_one_sample_per_interval_per_device():
    """max_rate=5 keeps one sample per 200 ms interval of each device, across batches too."""
    rows = schema.empty_rows(40)
    rows["ts_ms"] = np.repeat(np.arange(20) * 50, 2)  # 20 Hz, two devices
    rows["device"] = [b"a", b"b"] * 20
    sampler = Downsampler(max_rate=5)
    kept = rows[sampler.keep(rows)]
    assert len(kept) == 10  # one per 200 ms per device
    assert not sampler.keep(rows[-2:]).any()  # same interval as already sent


def test_a_joining_client_gets_what_the_rate_passed():
    """A client joining a downsampled stream gets the samples the clients on it got last
    (spaced by the rate), not newer ones that would come too soon before the next; a device
    nothing was passed of yet gets its newest sample, which the rate then counts."""
    rows = schema.empty_rows(40)
    rows["ts_ms"] = np.repeat(np.arange(20) * 50, 2)  # 20 Hz, two devices
    rows["device"] = [b"a", b"b"] * 20
    sampler = Downsampler(max_rate=5)
    sampler.keep(rows[:18][rows[:18]["device"] == b"a"])  # a passed at 0, 200, 400 ms
    joined = sampler.ending(rows, 2)
    assert joined[joined["device"] == b"a"]["ts_ms"].tolist() == [200, 400]
    assert joined[joined["device"] == b"b"]["ts_ms"].tolist() == [750, 950]  # ends at its newest
    assert sampler.last == {b"a": 400.0, b"b": 950.0}
    assert not sampler.keep(rows[-1:]).any()  # b at 950 is already counted


def test_equal_subscriptions_share_one_object_and_downsampler():
    """Clients asking alike share one subscription object (so one group, and one pass of its
    downsampler, per batch); its downsampler goes with its last client."""
    fanout = Fanout(max_buffer=1 << 20, close_timeout=1.0)
    a, b = Subscription(max_rate=5.0), Subscription(max_rate=5.0)
    fanout.add("one", a)
    fanout.add("two", b)
    assert fanout.clients["one"] is fanout.clients["two"]
    sampler = fanout._sampler(b)
    fanout.add("one", Subscription())  # "one" subscribes anew, to all samples
    assert fanout._sampler(a) is sampler  # "two" still has it
    fanout.discard("two")
    assert fanout._sampler(a) is not sampler  # gone with its last client: a fresh one
    fanout.discard("one")


def frames(url: str, count: int) -> list:
    """The first `count` frames of a new connection, parsed."""
    with connect(url, open_timeout=10, max_size=None) as ws:
        return [json.loads(ws.recv(timeout=10)) for _ in range(count)]


def test_device_and_field_filter(pipeline: Pipeline):
    """devices= and fields= in the query give only those devices, with only those metrics."""
    pipeline.producer("--rate", "10", "--devices", "4")
    pipeline.broadcaster()
    got = frames(pipeline.ws_url + "/?devices=host-02,host-04&fields=net,cpu", 20)
    assert {s["device"] for s in got} == {"host-02", "host-04"}
    for sample in got:
        assert list(sample) == ["timestamp", "cpu", "net", *BASE_KEYS[1:]]


def test_max_rate_downsamples_each_device(pipeline: Pipeline):
    """max_rate=5 on a 20 Hz stream gives every fourth sample of each device."""
    pipeline.producer("--rate", "20", "--devices", "2")
    pipeline.broadcaster()
    got = frames(pipeline.ws_url + "/?max_rate=5", 20)
    by_device = defaultdict(list)
    for sample in got:
        by_device[sample["device"]].append(sample["seq"])
    for seqs in by_device.values():
        assert all(b - a == 4 for a, b in zip(seqs, seqs[1:], strict=False)), seqs  # 20 Hz / 5


def test_max_rate_holds_across_a_join(pipeline: Pipeline):
    """A client joining a running stream with max_rate=5 gets each device's latest sample
    (or its history) as the rate allows: a second client of the same rate begins with the
    sample the first got last, and history=3 is spaced as the live samples are."""
    pipeline.producer("--rate", "20", "--devices", "2")
    pipeline.broadcaster()
    wait_until(lambda: received(pipeline.ws_url) >= 2 * 30, timeout=10)
    url = pipeline.ws_url + "/?max_rate=5"
    with connect(url, open_timeout=10) as first:
        seen = [json.loads(first.recv(timeout=10)) for _ in range(8)]
        second = frames(url, 8)  # joins while the first client is on the same rate
        history = frames(url + "&history=3", 12)
    for got in (seen, second, history):
        by_device = defaultdict(list)
        for sample in got:
            by_device[sample["device"]].append(sample["seq"])
        assert set(by_device) == {"host-01", "host-02"}
        for seqs in by_device.values():
            assert all(b - a == 4 for a, b in zip(seqs, seqs[1:], strict=False)), (seqs, got)


def test_batched_frames_carry_a_tick_each(pipeline: Pipeline):
    """batch=1 sends one JSON array per tick, holding that tick's sample of every device."""
    pipeline.producer("--rate", "10", "--devices", "3")
    pipeline.broadcaster()
    for frame in frames(pipeline.ws_url + "/?batch=1", 5):
        assert isinstance(frame, list) and len(frame) == 3
        assert len({s["timestamp"] for s in frame}) == 1


def received(ws_url: str) -> float:
    """Samples the broadcaster has received so far (its stream_samples_received_total)."""
    url = ws_url.replace("ws://", "http://", 1) + "/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    match = re.search(r"^stream_samples_received_total (\S+)$", text, re.MULTILINE)
    assert match, text
    return float(match[1])


def test_history_fills_a_chart_at_once(pipeline: Pipeline):
    """history=15 sends the last 15 samples of each device at once, then the live ones with no
    gap in between."""
    pipeline.producer("--rate", "20", "--devices", "2")
    pipeline.broadcaster()
    # Let the broadcaster keep more than 15 samples per device before asking for them.
    wait_until(lambda: received(pipeline.ws_url) >= 2 * 30, timeout=10)
    got = frames(pipeline.ws_url + "/?history=15", 40)
    by_device = defaultdict(list)
    for sample in got:
        by_device[sample["device"]].append(sample["seq"])
    for seqs in by_device.values():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # history, then live: no gap
        assert len(seqs) >= 15


def _stamp(sample: dict) -> float:
    return datetime.fromisoformat(sample["timestamp"]).replace(tzinfo=UTC).timestamp()


def _connect_after_a_tick(
    url: str, query: str, broadcaster: Proc
) -> tuple[float, float, list[dict]]:
    """Connect right after the broadcaster gets a 1 Hz tick; (time connected, seconds until
    two frames came, those frames). The seconds leave out the time the machine kept the
    broadcaster or this thread waiting for a CPU meanwhile (`cpu_wait`)."""
    before = received(url)
    wait_until(lambda: received(url) > before, timeout=10)
    me = (os.getpid(), threading.get_native_id())
    waited = cpu_wait(broadcaster.popen.pid) + cpu_wait(*me)
    connected = time.time()
    with connect(url + query, open_timeout=10) as ws:
        got = [json.loads(ws.recv(timeout=10)) for _ in range(2)]
    took = time.time() - connected
    waited = cpu_wait(broadcaster.popen.pid) + cpu_wait(*me) - waited
    return connected, took - waited, got


def test_new_client_gets_each_devices_latest_sample_at_once(pipeline: Pipeline):
    """At 1 Hz a new client gets each device's latest sample at once (stamped before it
    connected), instead of waiting up to a second; history=0 waits for the next tick."""
    pipeline.producer("--rate", "1", "--devices", "2")
    broadcaster = pipeline.broadcaster()
    wait_until(lambda: received(pipeline.ws_url) >= 2, timeout=10)
    connected, took, got = _connect_after_a_tick(pipeline.ws_url, "/", broadcaster)
    assert took < 0.5, took
    assert {s["device"] for s in got} == {"host-01", "host-02"}
    assert all(_stamp(s) <= connected for s in got), (connected, got)
    connected, took, got = _connect_after_a_tick(pipeline.ws_url, "/?history=0", broadcaster)
    assert all(_stamp(s) > connected for s in got), (connected, got)


def test_subscribe_message_and_errors_keep_the_connection(pipeline: Pipeline):
    """A bad query or message gets an error reply and keeps the connection on its previous
    subscription; a good message changes it, confirmed by a reply."""
    pipeline.producer("--rate", "10", "--devices", "3")
    pipeline.broadcaster()
    with connect(pipeline.ws_url + "/?fields=temp", open_timeout=10) as ws:
        assert "unknown field 'temp'" in json.loads(ws.recv(timeout=10))["error"]
        assert "timestamp" in json.loads(ws.recv(timeout=10))  # defaults meanwhile
        ws.send(json.dumps({"subscribe": {"devices": ["host-03"], "fields": ["mem"]}}))
        replies = [json.loads(ws.recv(timeout=10)) for _ in range(30)]
        confirmed = next(i for i, r in enumerate(replies) if "subscribed" in r)
        assert replies[confirmed]["subscribed"]["devices"] == ["host-03"]
        after = replies[confirmed + 1 :]
        assert after and all(s["device"] == "host-03" and "cpu" not in s for s in after)
        ws.send('{"subscribe": {"max_rate": -1}}')
        replies = [json.loads(ws.recv(timeout=10)) for _ in range(10)]
        assert any("max_rate must be between" in r.get("error", "") for r in replies)
        assert all(r.get("device", "host-03") == "host-03" for r in replies)  # unchanged
