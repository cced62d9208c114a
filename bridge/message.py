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
from delivery.gaps import Gap

# The label columns, and the names of their codes (None: the code is shown as it is).
_LABELS: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("anomaly", schema.ANOMALY_KINDS),
    ("anomaly_id", None),
    ("anomaly_root", None),
    ("event", schema.EVENT_KINDS),
    ("anomaly_metrics", schema.METRIC_SETS[1:]),
)

ANOMALY_HEADER = "Sample-Anomaly"  # a JetStream header, an MQTT 5 user property: `anomalies`


@dataclass(eq=False, slots=True)  # not frozen: a frozen one costs 2 µs to make, this 0.3
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


@dataclass(eq=False, slots=True)
class Block:
    """Samples of any devices, in the order they came, that go out as one record each
    (Kafka without --batch): the outbox carries them as one unit, so that what it costs
    per message it costs per block, and the sink renders and sends them in one go."""

    batch: schema.Batch
    _ends: dict[str, tuple[int, int]] | None = None

    @property
    def samples(self) -> int:
        return len(self.batch.rows)

    def after(self, last: dict[str, tuple[int, int]]) -> Block | None:
        """The block less the samples at or before each device's seq in `last`; the block
        itself if none is, None if all are."""
        if not last:
            return self
        rows = self.batch.rows
        devices, where = np.unique(rows["device"], return_inverse=True)
        stored = np.array([last.get(schema.device_name(d), (-1, 0))[0] for d in devices])
        keep = rows["seq"].astype(np.int64) > stored[where]
        if keep.all():
            return self
        if not keep.any():
            return None
        return Block(self.batch.with_rows(rows[keep]))

    def ends(self) -> dict[str, tuple[int, int]]:
        """Per device, (seq, timestamp ms) of its last sample in the block."""
        if self._ends is None:
            self._ends = _ends(self.batch.rows, last=True)
        return self._ends

    def starts(self) -> dict[str, int]:
        """Per device, the seq of its first sample in the block."""
        return {d: s for d, (s, _) in _ends(self.batch.rows, last=False).items()}

    def gaps(self) -> list[Gap]:
        """The block's samples as gaps, one per run of consecutive seqs of a device."""
        return row_gaps(self.batch.rows)


Item = Message | Block  # what goes to a broker: messages, or blocks of one-sample records


def unstored(item: Message | Block, last: dict[str, tuple[int, int]]) -> Message | Block | None:
    """What of a message or block comes after each device's seq in `last` (see `after`)."""
    if isinstance(item, Block):
        return item.after(last)
    stored = last.get(item.device)
    return item if stored is None else after(item, stored[0])


def ends_of(item: Message | Block) -> dict[str, tuple[int, int]]:
    """Per device, (seq, timestamp ms) of its last sample in a message or block."""
    return item.ends() if isinstance(item, Block) else {item.device: (item.last, item.last_ms)}


def starts_of(item: Message | Block) -> dict[str, int]:
    """Per device, the seq of its first sample in a message or block."""
    return item.starts() if isinstance(item, Block) else {item.device: item.first}


def _ends(rows: np.ndarray, last: bool) -> dict[str, tuple[int, int]]:
    if last:
        rows = rows[::-1]
    devices, first = np.unique(rows["device"], return_index=True)
    seqs, times = rows["seq"][first].tolist(), rows["ts_ms"][first].tolist()
    return {
        schema.device_name(d): (s, t) for d, s, t in zip(devices.tolist(), seqs, times, strict=True)
    }


def row_gaps(rows: np.ndarray) -> list[Gap]:
    """`rows` as gaps: one per run of consecutive seqs of a device."""
    rows, starts, ends = runs(rows)
    return [
        Gap(
            schema.device_name(rows["device"][a]),
            int(rows["seq"][a]),
            int(rows["seq"][b - 1]),
            int(rows["ts_ms"][a]),
            int(rows["ts_ms"][b - 1]),
        )
        for a, b in zip(starts, ends, strict=True)
    ]


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
    """One JSON-array message per run [start, end) of `batch`'s rows (one device each).
    Most runs carry no label: whether one does is read off a running count of labelled
    rows, so that only those pay for finding their labels."""
    rows = batch.rows
    objects = render.json_objects(batch)
    seqs, times = rows["seq"].tolist(), rows["ts_ms"].tolist()
    devices = rows["device"].tolist()
    marked = np.r_[0, np.cumsum((rows["anomaly"] != 0) | (rows["event"] != 0))].tolist()
    made = []
    for a, b in zip(starts, ends, strict=True):
        labelled = marked[b] > marked[a]
        made.append(
            Message(
                devices[a].decode("utf-8", "replace"),
                seqs[a],
                seqs[b - 1],
                times[a],
                times[b - 1],
                b"[" + b",".join(objects[a:b]) + b"]",
                rows[a:b],
                batch.precision,
                batch.decimals,
                labels(rows[a:b]) if labelled else (),
                anomalies(rows[a:b]) if labelled else "",
            )
        )
    return made


def row_labels(rows: np.ndarray) -> dict[int, list[tuple[str, str]]]:
    """For each row that carries a label, its labels as `labels` gives a single row's,
    found for all rows in one pass."""
    marked = np.flatnonzero((rows["anomaly"] != 0) | (rows["event"] != 0))
    if not len(marked):
        return {}
    columns = [(name, names, rows[name][marked].tolist()) for name, names in _LABELS]
    found: dict[int, list[tuple[str, str]]] = {}
    for j, i in enumerate(marked.tolist()):
        found[i] = [
            (name, names[codes[j] - 1] if names else str(codes[j]))
            for name, names, codes in columns
            if codes[j]
        ]
    return found


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
