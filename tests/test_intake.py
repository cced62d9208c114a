"""The intake's guarantee, face to face: batches in, rows in order and gap records out, with
the producer's real history server (ROUTER) on one side, or an endpoint nobody answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from test_resume_parts import pairs, ticks

from common import schema
from delivery.client import CatchupClient
from delivery.intake import Delivery, Intake
from producer.catchup.history import History
from producer.catchup.server import CatchupServer


def records(deliveries: list[Delivery]) -> list[tuple[str, int, int, str]]:
    return [(g.device, g.first, g.last, str(r)) for d in deliveries for g, r in d.gaps]


def rows(deliveries: list[Delivery]) -> list[tuple[str, int]]:
    return pairs([b for d in deliveries for b in d.rows])


def refused_rows(device: str, seqs: range) -> np.ndarray:
    return ticks(seqs.start, len(seqs), [device]).rows


def test_refused_seqs_are_recorded_once_whatever_comes_with_them(tmp_path: Path):
    """Seqs of a refused message that no producer gives again are recorded 'refused' when
    they are met, alone in their receive, and the samples after them report nothing more."""

    async def scenario() -> list[Delivery]:
        client = CatchupClient(f"ipc://{tmp_path}/nobody.sock", idle_timeout=0.1)
        try:
            intake = Intake(client, delivered={"a": (2, 200)})
            out = await intake.take([], refused_rows("a", range(3, 5)))
            out += await intake.take([ticks(5, 2, ["a"])])
            return out + [intake.close()]
        finally:
            client.close()

    out = asyncio.run(scenario())
    assert records(out) == [("a", 3, 4, "refused")]
    assert rows(out) == [("a", 5), ("a", 6)]


def test_a_device_met_mid_series_gets_what_is_held_then_the_rest_named(tmp_path: Path):
    """A device first met at seq 30, whose producer's run began at 10 and holds 20 on: seqs
    20-29 come from the history before the live ones, 10-19 are 'not_held' and 0-9 (before
    the run) 'earlier_run'; a device met at its first seq gets no gap."""
    history = History(max_age_s=1.0, max_bytes=1 << 30)
    history.series_first = 0
    history.add(ticks(10, 10, ["a"]), now=0.0)
    history.add(ticks(0, 5, ["b"]), now=0.6)  # closes the first block
    history.add(ticks(20, 10, ["a"]), now=5.0)  # ... which is then too old to keep
    endpoint = f"ipc://{tmp_path}/catchup.sock"

    async def scenario() -> list[Delivery]:
        stop = asyncio.Event()
        server = CatchupServer(endpoint, history)
        serving = asyncio.create_task(server.serve(stop))
        client = CatchupClient(endpoint)
        try:
            intake = Intake(client)
            return await intake.take([ticks(30, 2, ["a"]), ticks(0, 2, ["b"])])
        finally:
            client.close()
            stop.set()
            await serving
            server.close()

    out = asyncio.run(scenario())
    assert sorted(records(out)) == [("a", 0, 9, "earlier_run"), ("a", 10, 19, "not_held")]
    got = rows(out)
    assert [s for d, s in got if d == "a"] == list(range(20, 32))
    assert [s for d, s in got if d == "b"] == [0, 1]
    assert all(d.precision == schema.MILLISECONDS for d in out)
