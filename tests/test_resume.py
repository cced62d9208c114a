"""Resuming WebSocket clients against real producers and broadcasters: what they missed,
then live, with no repeat and no hole; gaps named exactly; bounds; across a restart."""

from __future__ import annotations

import itertools
import json
import signal
import time
from collections import defaultdict
from urllib.parse import urlencode

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import Pipeline, read_until, unused_port, wait_until


def samples_of(message: str) -> list[dict]:
    parsed = json.loads(message)
    items = parsed if isinstance(parsed, list) else [parsed]
    return [s for s in items if "seq" in s]


def live_seqs(url: str, count: int = 1) -> dict[str, int]:
    """The last seq per device among the next `count` samples a fresh client gets."""
    last: dict[str, int] = {}
    # It leaves without reading what is on its way: with a bounded queue its reader would
    # stop before the server's close answer, and the close would wait 10 s for it.
    with connect(url, open_timeout=5, max_queue=None) as ws:
        for _ in range(count):
            for sample in samples_of(ws.recv(timeout=5)):
                last[sample["device"]] = sample["seq"]
    return last


def wait_for_seq(url: str, seq: int, timeout: float = 20) -> None:
    """Until the stream has passed `seq` (so a client that left before it missed some)."""
    wait_until(lambda: min(live_seqs(url).values()) > seq, timeout, interval=0.05)


def seqs_by_device(samples: list[dict]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = defaultdict(list)
    for sample in samples:
        found[sample["device"]].append(sample["seq"])
    return dict(found)


def contiguous(seqs: list[int], first: int) -> bool:
    return seqs == list(range(first, first + len(seqs)))


def test_a_client_that_comes_back_gets_what_it_missed_then_live(pipeline: Pipeline):
    """since=SEQ after a disconnect: every sample with a greater seq, of every device, from
    the history and then live, each once and in order, and no gap message."""
    pipeline.producer("--rate", "20", "--devices", "3")
    pipeline.broadcaster()
    last = live_seqs(pipeline.ws_url, 6)
    since = min(last.values())
    wait_for_seq(pipeline.ws_url, since + 30)
    live_now = min(live_seqs(pipeline.ws_url).values())
    with connect(f"{pipeline.ws_url}/?since={since}", open_timeout=5) as ws:
        others, samples = read_until(
            ws, lambda d: len(d) == 3 and min(s[-1] for s in d.values()) >= live_now + 20
        )
    assert others == []
    for device, seqs in seqs_by_device(samples).items():
        assert contiguous(seqs, since + 1), (device, seqs)


def test_per_device_since_respects_the_device_filter(pipeline: Pipeline):
    """since=DEVICE:SEQ with devices=... and fields=...: each named device from its own seq,
    no other device, and only the fields asked, in the history and live."""
    pipeline.producer("--rate", "20", "--devices", "3")
    pipeline.broadcaster()
    base = min(live_seqs(pipeline.ws_url, 3).values())
    wait_for_seq(pipeline.ws_url, base + 30)
    query = urlencode(
        [
            ("devices", "host-01,host-03"),
            ("fields", "cpu"),
            ("since", f"host-01:{base}"),
            ("since", f"host-03:{base + 7}"),
        ]
    )
    with connect(f"{pipeline.ws_url}/?{query}", open_timeout=5) as ws:
        others, samples = read_until(
            ws, lambda d: len(d) == 2 and min(s[-1] for s in d.values()) >= base + 60
        )
    found = seqs_by_device(samples)
    assert others == [] and set(found) == {"host-01", "host-03"}
    assert contiguous(found["host-01"], base + 1) and contiguous(found["host-03"], base + 8)
    assert all("cpu" in s and "mem" not in s for s in samples)


def next_error(ws, timeout: float = 5) -> str:
    """The next {"error": ...} message's text, skipping samples."""
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if isinstance(message, dict) and "error" in message:
            return message["error"]


def test_bad_resume_requests_get_an_error_and_the_live_stream(pipeline: Pipeline):
    """A bad since in the URL or a bad resume message gets one {"error": ...} naming it; the
    connection stays and carries the live stream."""
    pipeline.producer("--rate", "20")
    pipeline.broadcaster()
    with connect(f"{pipeline.ws_url}/?since=host-01:soon", open_timeout=5) as ws:
        error = json.loads(ws.recv(timeout=5))
        assert (
            "since must be SEQ or DEVICE:SEQ" in error["error"] and "host-01:soon" in error["error"]
        )
        assert samples_of(ws.recv(timeout=5))
        for bad, words in [
            ({"resume": {"since": "7"}}, "must be a JSON integer"),
            ({"resume": {"since": 1, "until": 2}}, "unknown key 'until'"),
            ({"resume": {"since": -5}}, "must be between -1 and"),
        ]:
            ws.send(json.dumps(bad))
            assert words in next_error(ws), bad
        assert samples_of(ws.recv(timeout=5))


def test_a_resume_message_restarts_the_stream_after_since(pipeline: Pipeline):
    """{"resume": {"since": S}} on a live connection: after the samples already on their way,
    every sample after S follows, contiguous per device, and then live."""
    pipeline.producer("--rate", "20", "--devices", "2")
    pipeline.broadcaster()
    with connect(pipeline.ws_url, open_timeout=5) as ws:
        start = samples_of(ws.recv(timeout=5))[0]["seq"]
        wait_for_seq(pipeline.ws_url, start + 20)
        ws.send(json.dumps({"resume": {"since": {"host-01": start, "host-02": start + 3}}}))
        _, samples = read_until(
            ws, lambda d: len(d) == 2 and min(s[-1] for s in d.values()) >= start + 60
        )
    for device, first in (("host-01", start + 1), ("host-02", start + 4)):
        seqs = seqs_by_device(samples)[device]
        restart = len(seqs) - 1 - seqs[::-1].index(first)  # after what was already sent
        assert contiguous(seqs[restart:], first) and len(seqs[restart:]) >= 40, (device, seqs)


def test_gap_names_exactly_what_is_gone_then_the_rest_follows(pipeline: Pipeline):
    """With a 1 s history and a bound of 10 samples, asking from far back gets one gap
    message: the seqs the producer no longer holds (not_held), then those past the bound
    (over_limit), ending just before the first sample sent; then contiguous samples."""
    pipeline.producer("--rate", "20", "--devices", "2", "--history", "1")
    pipeline.broadcaster("--resume-max", "10")
    wait_for_seq(pipeline.ws_url, 80)
    with connect(f"{pipeline.ws_url}/?since=5", open_timeout=5) as ws:
        first = json.loads(ws.recv(timeout=5))
        _, samples = read_until(ws, lambda d: len(d) == 2 and min(map(len, d.values())) >= 30)
    assert set(first) == {"gap"}, first
    ranges = defaultdict(list)
    for entry in first["gap"]["ranges"]:
        ranges[entry["device"]].append(entry)
    found = seqs_by_device(samples)
    assert set(ranges) == set(found) == {"host-01", "host-02"}
    for device, (old, over) in ranges.items():
        assert (old["reason"], old["from_seq"]) == ("not_held", 6)
        assert over["reason"] == "over_limit" and over["from_seq"] == old["to_seq"] + 1
        assert contiguous(found[device], over["to_seq"] + 1), (device, found[device])


def test_a_resume_that_holds_more_live_samples_than_the_bound_is_dropped(pipeline: Pipeline):
    """Live samples held while a resume is prepared count against --resume-max: past it the
    client is closed with 1008, like a client that cannot keep up, and others are served."""
    pipeline.producer("--rate", "20", "--devices", "60")
    pipeline.broadcaster("--resume-max", "50")
    base = min(live_seqs(pipeline.ws_url).values())
    devices = ",".join(f"host-{i:02d}" for i in range(1, 61))
    # A device filter changes what the broadcaster takes from the bus, so the resume waits
    # for it to settle (0.3 s): six ticks of 60 samples are held meanwhile.
    with connect(f"{pipeline.ws_url}/?devices={devices}&since={base}", open_timeout=5) as ws:
        try:
            while True:
                ws.recv(timeout=5)
        except ConnectionClosed:
            pass
        assert ws.close_code == 1008
    assert live_seqs(pipeline.ws_url)


def test_scaled_producers_resume_per_device(pipeline: Pipeline):
    """With two producers whose seqs differ, a client resuming with per-device seqs gets each
    device's missed samples from the producer that owns it, then live, contiguous."""
    # Given a seed, each producer starts a series of its own (without one, producer 2 would
    # take producer 1's, seqs included).
    fleet = ("--rate", "20", "--devices", "4", "--seed", "3")
    pipeline.producer("--shard", "1/2", *fleet)
    pipeline.broadcaster("--producers", "2")
    wait_for_seq(pipeline.ws_url, 30)  # producer 2's series starts later: other seqs
    pipeline.producer("--shard", "2/2", *fleet)
    readings: list[dict[str, int]] = []

    def all_four() -> bool:
        readings.append(live_seqs(pipeline.ws_url, 8))
        return len(readings[-1]) == 4

    wait_until(all_four, timeout=10)
    last = readings[-1]
    assert len(set(last.values())) > 1, last

    def moved_on() -> bool:
        now = live_seqs(pipeline.ws_url, 8)
        return all(now.get(d, -1) > s + 20 for d, s in last.items())

    wait_until(moved_on, timeout=20)
    query = urlencode([("since", f"{d}:{s}") for d, s in last.items()])
    with connect(f"{pipeline.ws_url}/?{query}", open_timeout=5) as ws:
        others, samples = read_until(
            ws, lambda d: len(d) == 4 and all(d[k][-1] > last[k] + 40 for k in d)
        )
    assert others == []
    for device, seqs in seqs_by_device(samples).items():
        assert contiguous(seqs, last[device] + 1), (device, seqs)


def printed(client) -> dict[str, list[int]]:
    """Seqs per device of the test client's "Received:" lines, in order."""
    found: dict[str, list[int]] = defaultdict(list)
    for line in list(client.out):
        if line.startswith("Received: "):
            for sample in samples_of(line.removeprefix("Received: ")):
                found[sample["device"]].append(sample["seq"])
    return found


def test_the_test_client_prints_contiguous_seqs_across_a_broadcaster_restart(
    pipeline: Pipeline,
):
    """The broadcaster is killed and started again on its port: the test client resumes and
    prints every seq of every device once, in order; with --no-resume it shows the jump."""
    pipeline.producer("--rate", "20", "--devices", "2")
    port = unused_port()
    first = pipeline.broadcaster("--ws-host", "127.0.0.1", "--ws-port", str(port))
    url = f"ws://127.0.0.1:{port}"
    resuming = pipeline.start_script("clients/test_client.py", "--url", url)
    plain = pipeline.start_script("clients/test_client.py", "--url", url, "--no-resume")
    for client in (resuming, plain):
        wait_until(lambda c=client: sum(map(len, printed(c).values())) >= 20, timeout=15)
    first.stop(signal.SIGKILL)
    for client in (resuming, plain):
        client.wait_for("reconnecting to")
    before = {d: s[-1] for d, s in printed(resuming).items()}
    time.sleep(1.0)  # the scenario: the broadcaster stays down a second (20 ticks at least)
    pipeline.broadcaster("--ws-host", "127.0.0.1", "--ws-port", str(port))
    for client in (resuming, plain):
        wait_until(
            lambda c=client: all(printed(c)[d][-1] > before[d] + 60 for d in before), timeout=20
        )
    for device, seqs in printed(resuming).items():
        assert contiguous(seqs, seqs[0]), (device, seqs)
    jumps = [b - a for seqs in printed(plain).values() for a, b in itertools.pairwise(seqs)]
    assert max(jumps) > 15, "the outage lost nothing: the test proves nothing"
    assert not any('"gap"' in line for line in resuming.out)
