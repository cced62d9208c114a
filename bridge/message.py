"""What goes to the broker: samples as messages, each with an id derived from (device, seq).

A message holds one sample (the WebSocket frame's JSON) or, batched, a JSON array of
consecutive samples of one device. Its id is `<device>:<seq>` or `<device>:<first>-<last>`,
so a message sent again (a retry) carries the same id and JetStream's duplicate window drops
it. Two bridges may cut the same samples into different batches; the JetStream sink keeps
those from overlapping (see bridge.jetstream), and a batch can be cut down to the samples
after a given seq for that. A message also names the labels of its samples (`labels`), for
brokers that carry them in headers (Kafka), so consumers can filter without parsing.

A message holding labelled samples also says so outside its payload, for brokers whose
consumers filter on headers (JetStream, MQTT 5 user properties): `anomalies` names each
kind with the metrics it alters, `kind:metrics`, comma-joined in order of appearance
(`spike:cpu`, `memory_leak:mem,incident:cpu|mem|disk_io|net`); empty when none is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from common import render, schema

# The label columns, and the names of their codes (None: the code is shown as it is).
_LABELS: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("anomaly", schema.ANOMALY_KINDS),
    ("anomaly_id", None),
    ("anomaly_root", None),
    ("event", schema.EVENT_KINDS),
    ("anomaly_metrics", schema.METRIC_SETS[1:]),
)

ANOMALY_HEADER = "Sample-Anomaly"  # a JetStream header, an MQTT 5 user property: `anomalies`


@dataclass(frozen=True, eq=False)
class Message:
    device: str
    first: int  # seq of the first sample
    last: int  # seq of the last sample
    first_ms: int  # their timestamps
    last_ms: int
    payload: bytes
    rows: np.ndarray | None = None  # a batch's samples, to cut it down (see `after`)
    precision: int = schema.SECONDS
    decimals: int = schema.DECIMALS
    # (name, value) of each label its samples carry: anomaly, anomaly_id, anomaly_root and
    # event; a batch gives each one's distinct values, comma-separated. Empty: unlabelled.
    labels: tuple[tuple[str, str], ...] = ()
    anomalies: str = ""  # `kind:metrics` of its labelled samples (see the module's docstring)

    @property
    def samples(self) -> int:
        return self.last - self.first + 1

    @property
    def id(self) -> str:
        if self.first == self.last and self.rows is None:
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
        texts = _PAIRS[rows["anomaly"], rows["anomaly_metrics"]].tolist()
        made = [
            Message(d.decode(), s, s, t, t, o, anomalies=a)
            for d, s, t, o, a in zip(
                rows["device"].tolist(),
                rows["seq"].tolist(),
                rows["ts_ms"].tolist(),
                objects,
                texts,
                strict=True,
            )
        ]
        labelled = np.flatnonzero((rows["anomaly"] != 0) | (rows["event"] != 0))
        for i in labelled.tolist():
            made[i] = dataclasses.replace(made[i], labels=labels(rows[i : i + 1]))
        return made
    rows, starts, ends = runs(rows, batch_max)
    return _arrays(batch.with_rows(rows), starts, ends)


def after(message: Message, seq: int) -> Message | None:
    """The part of `message` whose samples come after `seq`: the message itself if all do,
    None if none does."""
    if seq < message.first:
        return message
    if seq >= message.last or message.rows is None:
        return None
    rows = message.rows[seq + 1 - message.first :]
    shown = schema.Batch(rows, message.precision, message.decimals)
    return _arrays(shown, [0], [len(rows)])[0]


def _arrays(batch: schema.Batch, starts: list[int], ends: list[int]) -> list[Message]:
    """One JSON-array message per run [start, end) of `batch`'s rows (one device each)."""
    rows = batch.rows
    objects = render.json_objects(batch)
    seq = rows["seq"].astype(np.int64)
    devices, ts = rows["device"], rows["ts_ms"]
    return [
        Message(
            schema.device_name(devices[a]),
            int(seq[a]),
            int(seq[b - 1]),
            int(ts[a]),
            int(ts[b - 1]),
            b"[" + b",".join(objects[a:b]) + b"]",
            rows[a:b],
            batch.precision,
            batch.decimals,
            labels(rows[a:b]),
            anomalies(rows[a:b]),
        )
        for a, b in zip(starts, ends, strict=True)
    ]


def labels(rows: np.ndarray) -> tuple[tuple[str, str], ...]:
    """The labels `rows` carry, as Message.labels: each one's distinct values, in order."""
    found: list[tuple[str, str]] = []
    for name, names in _LABELS:
        codes = rows[name]
        if not codes.any():
            continue
        values = dict.fromkeys(c for c in codes.tolist() if c)
        shown = (names[c - 1] if names else str(c) for c in values)
        found.append((name, ",".join(shown)))
    return tuple(found)


# `kind:metrics` of every anomaly code and metrics mask ("" for code 0).
_PAIRS = np.array(
    [
        ["", *(f"{kind}:{metrics}" for metrics in schema.METRIC_SETS[1:])]
        if code
        else [""] * len(schema.METRIC_SETS)
        for code, kind in enumerate(("", *schema.ANOMALY_KINDS))
    ],
    dtype=object,
)
_PAIRS[1:, 0] = [f"{kind}:" for kind in schema.ANOMALY_KINDS]  # metrics not known (old logs)


def anomalies(rows: np.ndarray) -> str:
    """`kind:metrics` of the labelled samples among `rows`, each once, in order of appearance."""
    labelled = np.flatnonzero(rows["anomaly"])
    if not len(labelled):
        return ""
    texts = _PAIRS[rows["anomaly"][labelled], rows["anomaly_metrics"][labelled]].tolist()
    return ",".join(dict.fromkeys(texts))


def runs(rows: np.ndarray, most: int = 0) -> tuple[np.ndarray, list[int], list[int]]:
    """The rows sorted by device (each device's rows keep their order), and where each run
    of consecutive seqs of one device starts and ends; with `most`, a longer run is cut into
    runs of `most` rows (the last one shorter)."""
    order = np.argsort(rows["device"], kind="stable")
    rows = rows[order]
    seq = rows["seq"].astype(np.int64)
    new = (rows["device"][1:] != rows["device"][:-1]) | (seq[1:] != seq[:-1] + 1)
    starts = np.flatnonzero(np.r_[True, new]).tolist()
    ends = [*starts[1:], len(rows)]
    if most > 0 and any(b - a > most for a, b in zip(starts, ends, strict=True)):
        bounds = zip(starts, ends, strict=True)
        cut = [(s, min(s + most, b)) for a, b in bounds for s in range(a, b, most)]
        starts, ends = [a for a, _ in cut], [b for _, b in cut]
    return rows, starts, ends
