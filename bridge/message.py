"""What goes to the broker: samples as messages, each with an id derived from (device, seq).

A message holds one sample (the WebSocket frame's JSON) or, batched, a JSON array of
consecutive samples of one device. Its id is `<device>:<seq>` or `<device>:<first>-<last>`,
so a message sent again (a retry, a restarted or second bridge) carries the same id and
JetStream's duplicate window drops it. Batches never span a multiple of the batch size in
seq, so bridges that cut the same samples into messages cut them alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common import render, schema


@dataclass(frozen=True, eq=False)
class Message:
    device: str
    first: int  # seq of the first sample
    last: int  # seq of the last sample
    first_ms: int  # their timestamps
    last_ms: int
    payload: bytes

    @property
    def samples(self) -> int:
        return self.last - self.first + 1

    @property
    def id(self) -> str:
        if self.first == self.last:
            return f"{self.device}:{self.first}"
        return f"{self.device}:{self.first}-{self.last}"


def messages(batch: schema.Batch, batch_max: int = 1) -> list[Message]:
    """The samples of `batch` as messages of at most `batch_max` consecutive samples of one
    device (1: one sample per message, its JSON object as it is)."""
    rows = batch.rows
    if not len(rows):
        return []
    if batch_max <= 1:
        objects = render.json_objects(batch)
        return [
            Message(d.decode(), s, s, t, t, o)
            for d, s, t, o in zip(
                rows["device"].tolist(),
                rows["seq"].tolist(),
                rows["ts_ms"].tolist(),
                objects,
                strict=True,
            )
        ]
    rows, starts, ends = runs(rows, batch_max)
    objects = render.json_objects(batch.with_rows(rows))
    seq = rows["seq"].astype(np.int64)
    devices, ts = rows["device"], rows["ts_ms"]
    out = []
    for a, b in zip(starts, ends, strict=True):
        out.append(
            Message(
                devices[a].decode(),
                int(seq[a]),
                int(seq[b - 1]),
                int(ts[a]),
                int(ts[b - 1]),
                b"[" + b",".join(objects[a:b]) + b"]",
            )
        )
    return out


def runs(rows: np.ndarray, cut: int = 0) -> tuple[np.ndarray, list[int], list[int]]:
    """The rows sorted by device (each device's rows keep their order), and where each run
    of consecutive seqs of one device starts and ends; with `cut`, runs also end before
    every seq that is a multiple of it."""
    order = np.argsort(rows["device"], kind="stable")
    rows = rows[order]
    seq = rows["seq"].astype(np.int64)
    new = (rows["device"][1:] != rows["device"][:-1]) | (seq[1:] != seq[:-1] + 1)
    if cut > 1:
        new |= seq[1:] % cut == 0
    starts = np.flatnonzero(np.r_[True, new])
    ends = np.r_[starts[1:], len(rows)]
    return rows, starts.tolist(), ends.tolist()
