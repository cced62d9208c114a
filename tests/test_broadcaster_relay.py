"""The broadcaster's live relay: what its own ZeroMQ subscriber misses (the slow joiner, a
drop, a producer restart) reaches live WebSocket clients from the producers' history, in
order, or as a gap message naming it with its reason."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from websockets.asyncio.client import connect as client_connect
from websockets.sync.client import connect

import streamsim
from broadcaster.backlog import Watermark
from broadcaster.relay import Refill, interleave
from common import schema
from common.bus import Publisher
from conftest import Pipeline, read_until
from delivery.gaps import Gap, GapRecord
from delivery.reasons import Reason
from producer.catchup.history import History
from producer.catchup.server import CatchupServer

DEVICES = ("host-01", "host-02")
START_MS = 1_754_265_600_000


def gaps_until(ws, done, timeout: float = 20) -> tuple[list[dict], dict[str, list[int]]]:
    """(gap ranges, seqs by device in arrival order) received until `done(seqs)` holds."""
    others, samples = read_until(ws, done, timeout)
    assert not [m for m in others if "error" in m], others
    gaps = [r for m in others for r in m.get("gap", {}).get("ranges", [])]
    seqs: dict[str, list[int]] = defaultdict(list)
    for sample in samples:
        seqs[sample["device"]].append(sample["seq"])
    return gaps, dict(seqs)


def test_a_client_connected_before_the_producer_gets_every_sample_from_seq_0(
    pipeline: Pipeline,
):
    """The slow joiner: the broadcaster's subscriber misses the first ticks of a producer
    started after it; a client already connected still gets every seq from 0, in order,
    with no gap message."""
    broadcaster = pipeline.broadcaster()
    broadcaster.wait_for("no producer answered")  # it has asked which devices publish
    with connect(pipeline.ws_url + "/?batch=1&history=0", open_timeout=10, max_queue=None) as ws:
        broadcaster.wait_for(r"client .* connected \(n=1\)")
        # a small, slow fleet starts publishing soonest after binding: often before the
        # broadcaster's subscriber, which retries its connection every 0.5 s, is there
        pipeline.producer("--rate", "20", "--devices", "2")
        gaps, seqs = gaps_until(ws, lambda s: len(s) == 2 and min(max(v) for v in s.values()) >= 30)
    assert gaps == []
    for device, got in seqs.items():
        assert got == list(range(len(got))), (device, got[:20])


def tick(seq: int, devices: tuple[str, ...] = DEVICES) -> schema.Batch:
    """One tick of valid samples, 10 ms after the one before."""
    rows = schema.empty_rows(len(devices))
    rows["ts_ms"] = START_MS + 10 * seq
    rows["seq"] = seq
    rows["device"] = [schema.device_bytes(d) for d in devices]
    for metric in schema.METRICS:
        rows[metric] = 10.0
    return schema.Batch(rows, schema.MILLISECONDS)


class StandIn:
    """A producer stand-in: the producer's own history and catch-up server, and a PUB
    socket, ticking at 100 Hz; the ticks in `withheld` go to the history but not on the
    bus (a subscriber misses exactly those), the ticks in `skipped` nowhere (the producer
    skipped them). Its history's clock is the ticks' (10 ms each), so what it holds when
    asked is the same from run to run."""

    def __init__(self, tmp_path: Path, max_age_s: float) -> None:
        self.pub = f"ipc://{tmp_path}/stand-in.sock"
        self.catchup = f"ipc://{tmp_path}/stand-in-catchup.sock"
        self.history = History(max_age_s, 1 << 30)
        self.publisher = Publisher(self.pub)
        self.server = CatchupServer(self.catchup, self.history)

    async def tick(
        self, count: int, withheld: set[int], skipped: range, stop: asyncio.Event
    ) -> None:
        for seq in range(count):
            if stop.is_set():
                return
            if seq in skipped:
                if seq == skipped[-1]:
                    self.history.not_produced(skipped[0], skipped[-1])
            else:
                batch = tick(seq)
                self.history.add(batch, now=seq / 100)
                if seq not in withheld:
                    self.publisher.publish(batch)
            await asyncio.sleep(0.01)  # its schedule, as a producer's: not a wait on a test

    def close(self) -> None:
        self.server.close()
        self.publisher.close()


async def read_async(ws, done, timeout: float = 30) -> tuple[list[dict], dict[str, list[int]]]:
    """read_until for an asyncio client."""
    gaps: list[dict] = []
    seqs: dict[str, list[int]] = defaultdict(list)
    async with asyncio.timeout(timeout):
        while not done(seqs):
            message = json.loads(await ws.recv())
            if isinstance(message, dict):
                assert "error" not in message, message
                gaps += message.get("gap", {}).get("ranges", [])
                continue
            for sample in message:
                seqs[sample["device"]].append(sample["seq"])
    return gaps, dict(seqs)


def figures(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    pairs = (line.rsplit(" ", 1) for line in text.splitlines() if line and line[0] != "#")
    return {name: float(value) for name, value in pairs}


def run_stand_in(
    pipeline: Pipeline,
    ticks: int,
    withheld: set[int],
    skipped: range = range(0),
    catchup: str | None = None,
    watch: Callable[[str], object] | None = None,
) -> tuple[list[dict], dict[str, list[int]], dict[str, float], object]:
    """A broadcaster fed by a stand-in producer (asking `catchup` for its history, the
    stand-in's by default) and one live client connected before the first tick: the gap
    ranges and seqs that client got, the broadcaster's figures, and what `watch(url)`
    returned, a second client run in a thread from before the first tick too."""
    stand_in = StandIn(pipeline.cwd, max_age_s=0.6)

    async def scenario() -> tuple[list[dict], dict[str, list[int]], dict[str, float], object]:
        stop = asyncio.Event()
        serving = asyncio.create_task(stand_in.server.serve(stop))
        try:
            broadcaster = pipeline.start(
                "broadcaster",
                *("--zmq-pub", stand_in.pub, "--zmq-catchup", catchup or stand_in.catchup),
                *("--zmq-control", pipeline.control, "--ws-port", "0", "--metrics-port", "any"),
            )
            info = await asyncio.to_thread(broadcaster.ready)
            async with client_connect(info["url"] + "?batch=1&history=0", max_queue=None) as ws:
                await asyncio.to_thread(broadcaster.wait_for, r"client .* connected \(n=1\)")
                watching = None
                if watch is not None:
                    watching = asyncio.create_task(asyncio.to_thread(watch, info["url"]))
                    await asyncio.to_thread(broadcaster.wait_for, r"connected \(n=2\)")
                # the broadcaster has asked which devices publish (none yet) before any tick
                async with asyncio.timeout(10):
                    while not stand_in.history.requests and catchup is None:
                        await asyncio.sleep(0.02)
                ticking = asyncio.create_task(stand_in.tick(ticks, withheld, skipped, stop))
                last = ticks - 1
                got = await read_async(
                    ws, lambda s: len(s) == len(DEVICES) and min(v[-1] for v in s.values()) == last
                )
                await ticking
                watched = await watching if watching is not None else None
            return *got, figures(info["metrics_port"]), watched
        finally:
            stop.set()
            await serving

    try:
        return asyncio.run(scenario())
    finally:
        stand_in.close()


def test_what_the_subscriber_misses_is_refilled_in_order_or_named(pipeline: Pipeline):
    """Against a stand-in producer whose ticks the broadcaster's subscriber misses on
    purpose: the first ticks (a slow joiner) and a drop the history holds come from the
    history, in order; a drop partly older than the history is named `not_held` and ticks
    the producer skipped `not_produced`, each in a gap message just before the device's
    next sample; /metrics counts both by reason."""
    withheld = {*range(0, 10), *range(100, 120), *range(200, 300)}
    gaps, seqs, counts, _ = run_stand_in(pipeline, 460, withheld, skipped=range(400, 420))
    for device in DEVICES:
        assert seqs[device][:200] == list(range(200))  # the slow joiner's ticks, the drop's
        mine = [g for g in gaps if g["device"] == device]
        assert [g["reason"] for g in mine] == ["not_held", "not_produced"], gaps
        lost, skipped = mine
        assert lost["from_seq"] == 200 and 200 <= lost["to_seq"] < 299
        assert (skipped["from_seq"], skipped["to_seq"]) == (400, 419)
        expected = [*range(0, 200), *range(lost["to_seq"] + 1, 400), *range(420, 460)]
        assert seqs[device] == expected
    not_held = sum(g["to_seq"] - g["from_seq"] + 1 for g in gaps if g["reason"] == "not_held")
    assert counts['stream_gap_samples_total{reason="not_held"}'] == not_held
    assert counts['stream_gap_samples_total{reason="not_produced"}'] == 40
    assert counts["stream_samples_refilled_total"] >= 2 * (10 + 20 + 299 - lost["to_seq"])


def test_a_drop_no_producer_answers_for_is_named_unavailable(pipeline: Pipeline, tmp_path: Path):
    """A broadcaster whose catch-up endpoint nobody serves names a drop `unavailable` in a
    gap message, and the stream goes on in order; the Python API's stream records that gap
    as the server named it, and nothing `unannounced`."""

    def watch(url: str) -> tuple[list[tuple[str, int]], list]:
        with streamsim.stream(url, count=2 * 180, timeout=30) as live:
            got = [(s["device"], s["seq"]) for s in live]
            return got, live.gaps

    nobody = f"ipc://{tmp_path}/nobody.sock"
    gaps, seqs, counts, watched = run_stand_in(
        pipeline, 200, set(range(100, 120)), catchup=nobody, watch=watch
    )
    for device in DEVICES:
        assert [g for g in gaps if g["device"] == device] == [
            {"device": device, "from_seq": 100, "to_seq": 119, "reason": "unavailable"}
        ]
        assert seqs[device] == [*range(seqs[device][0], 100), *range(120, 200)]
    assert counts['stream_gap_samples_total{reason="unavailable"}'] == 40
    got, api_gaps = watched
    assert sorted((g.device, g.from_seq, g.to_seq, g.reason) for g in api_gaps) == [
        (device, 100, 119, "unavailable") for device in DEVICES
    ]
    for device in DEVICES:
        mine = [seq for d, seq in got if d == device]
        assert mine == [*range(mine[0], 100), *range(120, mine[-1] + 1)]


def test_a_producer_restart_is_named_and_its_first_ticks_refilled(pipeline: Pipeline):
    """A producer restarted (continuing its series): a live client gets a `not_produced` gap
    message for the ticks skipped while it was down, then every seq of the new run from its
    first, the ones the broadcaster's subscriber missed while reconnecting included; a
    client that connects after the restart asking for no sample is not told of it."""
    producer = pipeline.producer("--rate", "100", "--devices", "2")
    broadcaster = pipeline.broadcaster()
    with connect(pipeline.ws_url + "/?batch=1&history=0", open_timeout=10, max_queue=None) as ws:
        broadcaster.wait_for(r"client .* connected \(n=1\)")
        gaps_until(ws, lambda s: len(s) == 2 and min(len(v) for v in s.values()) > 50)
        producer.stop()
        pipeline.producer("--rate", "100", "--devices", "2")
        # a client that asks for no sample on connecting: its stream starts after the gap
        with connect(pipeline.ws_url + "/?history=0", open_timeout=10, max_queue=None) as late:
            late_gaps, _ = gaps_until(late, lambda s: len(s) == 2)
        gaps, seqs = gaps_until(ws, lambda s: len(s) == 2 and min(len(v) for v in s.values()) > 100)
    assert late_gaps == []
    assert len(gaps) == 2 and {g["device"] for g in gaps} == {"host-01", "host-02"}, gaps
    for gap in gaps:
        assert gap["reason"] == "not_produced"
        got = seqs[gap["device"]]
        assert got == [*range(got[0], gap["from_seq"]), *range(gap["to_seq"] + 1, got[-1] + 1)]


def record(device: str, first: int, last: int, reason: Reason = Reason.NOT_HELD) -> GapRecord:
    return GapRecord(Gap(device, first, last), reason)


def shown(items: list) -> list:
    """Items as a client sees them: ("gap", device, first, last) or (device, seq)."""
    out: list = []
    for item in items:
        if isinstance(item, list):
            out += [("gap", r.device, r.from_seq, r.to_seq) for r in item]
        else:
            batch = item.batch if isinstance(item, Refill) else item
            out += [(r["device"].decode(), int(r["seq"])) for r in batch.rows]
    return out


def test_each_gap_comes_just_before_the_next_sample_of_its_device():
    """Gap records are placed before the first later sample of their own device, splitting
    a batch where needed (refilled rows stay marked as such); one that nothing follows
    comes last; rows keep their order."""
    rows = [Refill(schema.Batch(schema.concat([tick(5).rows, tick(6).rows]))), tick(10)]
    gaps = [record("host-02", 3, 4), record("host-01", 7, 9), record("host-01", 11, 20)]
    items = interleave(rows, gaps)
    kinds = [type(item).__name__ for item in items]
    assert kinds == ["Refill", "list", "Refill", "list", "Batch", "list"]  # refills stay so
    assert shown(items) == [
        ("host-01", 5),
        ("gap", "host-02", 3, 4),
        ("host-02", 5),
        ("host-01", 6),
        ("host-02", 6),
        ("gap", "host-01", 7, 9),
        ("host-01", 10),
        ("host-02", 10),
        ("gap", "host-01", 11, 20),
    ]
    assert shown(interleave(rows, [])) == shown(rows)


def test_a_held_client_is_told_only_of_gaps_above_what_it_has():
    """A resuming client's held gap records are cut to what lies above its mark for the
    device; the mark moves past them, so a live sample inside them cannot pass."""
    mark = Watermark({"host-01": 15})
    named = mark.named([record("host-01", 10, 12), record("host-01", 14, 20), record("b", 3, 4)])
    assert [(r.device, r.from_seq, r.to_seq, str(r.reason)) for r in named] == [
        ("host-01", 16, 20, "not_held"),
        ("b", 3, 4, "not_held"),
    ]
    assert shown([mark.admit(tick(19)), mark.admit(tick(21))]) == [
        ("host-02", 19),
        ("host-01", 21),
        ("host-02", 21),
    ]


def test_device_groups_taken_again_start_afresh_and_kept_ones_have_no_hole(pipeline: Pipeline):
    """A broadcaster taking only the device groups its clients want (no /metrics/samples):
    while a client of every device comes and goes, a client of host-01 alone gets every
    seq of it with no gap message; a device whose group is taken again starts at its next
    sample, not after a refill of the time it was not taken."""
    pipeline.producer("--rate", "50", "--devices", "2", "--anomaly-rate", "0")
    pipeline.broadcaster("--sample-metrics-devices", "0")
    every = pipeline.ws_url + "/?batch=1&history=0"
    told: list[dict] = []
    ones: list[int] = []

    def more_of_one(upto: int) -> None:
        gaps, seqs = gaps_until(one, lambda s: s.get("host-01", [-1])[-1] >= upto)
        told.extend(gaps)
        ones.extend(seqs["host-01"])

    def every_device() -> list[int]:
        with connect(every, open_timeout=10, max_queue=None) as ws:
            gaps, seqs = gaps_until(ws, lambda s: len(s.get("host-02", [])) > 25)
        told.extend(gaps)
        return seqs["host-02"]

    # one sample a frame: a batched frame holds a whole tick, which needs every group
    alone = pipeline.ws_url + "/?history=0&devices=host-01"
    with connect(alone, open_timeout=10, max_queue=None) as one:
        more_of_one(10)
        first = every_device()
        more_of_one(first[-1] + 75)  # 1.5 s without host-02's group
        second = every_device()
        more_of_one(second[-1] + 10)
    assert told == []
    assert ones == list(range(ones[0], ones[0] + len(ones)))
    for seqs in (first, second):
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert second[0] > first[-1] + 50  # not a refill of the time host-02 was not taken


def test_a_series_started_over_from_seq_0_is_relayed(pipeline: Pipeline):
    """A producer restarted without its state file starts its series over at seq 0: the
    broadcaster relays it (newer samples under old seqs are not repeats), so a client that
    connects then gets it at once, in order."""
    producer = pipeline.producer("--rate", "50", "--devices", "2")
    broadcaster = pipeline.broadcaster()
    with connect(pipeline.ws_url + "/?batch=1&history=0", open_timeout=10, max_queue=None) as ws:
        broadcaster.wait_for(r"client .* connected \(n=1\)")
        _, before = gaps_until(ws, lambda s: len(s) == 2 and min(max(v) for v in s.values()) > 100)
    producer.stop()
    (pipeline.cwd / "data" / "producer_state.json").unlink()
    pipeline.producer("--rate", "50", "--devices", "2")
    with connect(pipeline.ws_url + "/?batch=1&history=0", open_timeout=10, max_queue=None) as ws:
        gaps, after = gaps_until(ws, lambda s: len(s) == 2 and min(len(v) for v in s.values()) > 20)
    assert gaps == []
    for device, seqs in after.items():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert seqs[0] < 50 < max(before[device])  # the new series, not the old one's seqs
