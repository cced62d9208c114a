"""The bridge's outbox and messages: ids from (device, seq), the bound, retries, gap records."""

from __future__ import annotations

import json
import time

import numpy as np

from bridge.message import after, messages
from bridge.outbox import Outbox
from common import schema
from delivery.reasons import Reason


def ticks(first: int, count: int, devices: int = 2) -> schema.Batch:
    """`count` ticks of `devices` devices, seqs from `first`, tick-major like the producer's."""
    rows = schema.empty_rows(count * devices)
    rows["seq"] = np.repeat(np.arange(first, first + count), devices)
    rows["device"] = np.tile([f"host-{d:02d}".encode() for d in range(1, devices + 1)], count)
    rows["ts_ms"] = 1_700_000_000_000 + rows["seq"].astype(np.int64) * 10
    return schema.Batch(rows, schema.MILLISECONDS)


def test_message_ids_and_batches():
    """One sample per message has id device:seq; batches are runs of at most batch_max
    consecutive samples of one device, with id device:first-last."""
    single = messages(ticks(0, 2))
    assert [m.id for m in single] == ["host-01:0", "host-02:0", "host-01:1", "host-02:1"]
    assert json.loads(single[0].payload)["seq"] == 0
    batched = messages(ticks(95, 10), batch_max=100)
    assert [m.id for m in batched] == ["host-01:95-104", "host-02:95-104"]
    assert [s["seq"] for s in json.loads(batched[1].payload)] == list(range(95, 105))
    cut = messages(ticks(0, 7, devices=1), batch_max=3)
    assert [(m.first, m.last) for m in cut] == [(0, 2), (3, 5), (6, 6)]
    assert [s["seq"] for s in json.loads(cut[2].payload)] == [6]  # still an array


def test_a_batch_cut_down_to_the_samples_after_a_seq():
    """`after` keeps a batch's samples past a seq, as a JSON array with its own id; the
    whole message when all are past it, None when none is."""
    batch = messages(ticks(10, 20, devices=1), batch_max=100)[0]
    assert after(batch, 9) is batch
    assert after(batch, 29) is None and after(batch, 40) is None
    rest = after(batch, 24)
    assert rest is not None and (rest.first, rest.last, rest.id) == (25, 29, "host-01:25-29")
    assert rest.first_ms == 1_700_000_000_000 + 25 * 10
    assert [s["seq"] for s in json.loads(rest.payload)] == [25, 26, 27, 28, 29]
    assert json.loads(rest.payload) == json.loads(batch.payload)[15:]
    single = messages(ticks(3, 1, devices=1))[0]
    assert after(single, 2) is single and after(single, 3) is None


def test_bound_gives_up_exactly_the_oldest_never_sent():
    """Past the bound the oldest samples never sent are given up (down to a tenth below the
    bound), named exactly, while a message sent and not acknowledged is kept and comes
    back with its id."""
    box = Outbox(max_samples=20)
    assert box.add(ticks(0, 2)) == []
    sent = box.take(2)  # tick 0 of both devices
    box.settle(sent, [False, False])  # the broker did not answer: they may be stored
    # 24 held: 4 over the bound, and a tenth of it more, the 6 oldest never sent go
    gaps = box.add(ticks(2, 10))
    assert sorted((g.device, g.first, g.last) for g in gaps) == [
        ("host-01", 1, 3),
        ("host-02", 1, 3),
    ]
    assert box.given_up == 6 and box.held == 18
    again = box.take(2)
    assert [m.id for m in again] == [m.id for m in sent] and box.retried == 2
    assert box.settle(again, [True, True]) == 2 and box.held == 16


def test_drain_names_unsent_and_unacknowledged():
    """At stop, what was sent and not acknowledged and what was never sent are both
    recorded, with different reasons."""
    box = Outbox(max_samples=100)
    box.add(ticks(0, 3))
    taken = box.take(2)
    left = box.drain()
    reasons = {(g.device, g.first, g.last): r for g, r in left}
    assert reasons[("host-01", 0, 0)] == Reason.UNACKNOWLEDGED and len(taken) == 2
    assert reasons[("host-01", 1, 2)] == Reason.UNSENT
    assert box.held == 0 and box.given_up == 0
    assert Reason.GIVEN_UP == "given_up"


def test_done_stops_before_the_first_unacknowledged_message_of_a_device():
    """`done` moves past a device's acknowledged messages, up to its first message the
    broker did not acknowledge; other devices move on."""
    box = Outbox(max_samples=100, batch_max=2)
    box.add(ticks(0, 6))
    sent = box.take(10)  # host-01: 0-1, 2-3, 4-5; host-02: the same
    assert [m.id for m in sent][:3] == ["host-01:0-1", "host-01:2-3", "host-01:4-5"]
    box.settle(sent, [True, False, True, True, True, True])
    assert box.done == {"host-01": (1, 1_700_000_000_010), "host-02": (5, 1_700_000_000_050)}
    again = box.take(10)
    assert [m.id for m in again] == ["host-01:2-3"]
    box.settle(again, [True])
    # 4-5 was acknowledged before 2-3: `done` waits for a later message (a bridge restarted
    # now would send 4-5 again: at least once)
    assert box.done["host-01"] == (3, 1_700_000_000_030)


def test_a_take_is_due_once_the_oldest_sample_has_lingered():
    """Samples may wait `linger` s to fill larger messages: a take is due once the oldest
    waiting one has waited that long, at once for messages to send again, never when
    nothing is held; what a take leaves behind (over its budget) is due at once."""
    box = Outbox(1000, batch_max=50)
    assert box.due_in(0.1) == float("inf")
    box.add(ticks(0, 1))
    now = time.monotonic()
    assert 0.05 < box.due_in(0.1, now) <= 0.1
    box.add(ticks(1, 1))  # a later sample does not put the take off
    assert box.due_in(0.1, now + 0.1) == 0
    sent = box.take(10)
    assert box.due_in(0.1) == float("inf")
    box.settle(sent, [False] * len(sent))  # not acknowledged: sent again at once
    assert box.due_in(0.1) == 0
    box.settle(box.take(10), [True] * len(sent))
    box.add(ticks(2, 80, devices=1))
    came = time.monotonic()
    time.sleep(0.06)  # the scenario: the take comes 60 ms after the rows
    assert len(box.take(1)) == 1  # a budget of 50 samples: 30 stay behind
    assert box.due_in(0.1, came + 0.1) == 0  # they came with the rows taken, 100 ms ago
