"""The newest sample of each device, for Prometheus: `/metrics/samples`.

Grafana users watch fleets through Prometheus, which scrapes gauges rather than streams.
The broadcaster already sees every sample, so it keeps each device's newest one (a record
per device, brought up to date when scraped) and shows it as gauges labelled by device and
metric, with the current anomaly and planned event as labels of series of their own.

Cardinality is bounded: at most `max_devices` devices are shown (the first seen since the
broadcaster started; the others are counted, not shown), each with nine series:

    stream_device_value{device, metric}          4 per device: cpu, mem, disk_io, net
    stream_device_anomaly{device, kind, metrics} 1: kind="none" while normal
    stream_device_event{device, event}           1: event="none" outside planned events
    stream_device_seq{device}                    1
    stream_device_timestamp_seconds{device}      1: the sample's own (simulated) time
    stream_device_info{device, role, group}      1: once the producers have said

A device's anomaly and event series change their labels with its state, so over time a
device may have had one series per kind (and set of metrics) it went through; only one is
current at each scrape (Prometheus marks the one gone stale).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import numpy as np

from common import schema
from common.layout import Layout, words

DEFAULT_MAX_DEVICES = 1000
SERIES_PER_DEVICE = 9
_OMITTED_KEPT = 100_000  # distinct omitted devices counted at most (the largest fleet)


_DEVICE = schema.RECORD.fields["device"][1]  # the device id's offset in a record
_PROBES = 8  # devices compared along two messages to call them the same shape


def _same_shape(one: memoryview, two: memoryview, count: int) -> bool:
    """Whether two messages' records hold, as far as a few probes tell, the same devices in
    the same places (the ticks of one fleet): same length, same ids at _PROBES places."""
    if len(one) != len(two):
        return False
    size, width = schema.RECORD.itemsize, schema.DEVICE_MAX_BYTES
    step = max(1, count // _PROBES)
    for row in (*range(0, count, step), count - 1):
        at = row * size + _DEVICE
        if one[at : at + width] != two[at : at + width]:
            return False
    return True


def label_value(text: str) -> str:
    """`text` as a label value of the Prometheus text format (backslash, quote, newline)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


class Latest:
    """Each device's newest sample, kept for scrapes; at most `max_devices` devices.

    A message is not looked into when it comes: it is held, and a later message of the same
    shape (same first device, length and a few devices checked along it: a tick of the same
    fleet) replaces it, so a thousand ticks a second cost a dictionary update each. What is
    held is stored when a scrape asks (or a message of another shape comes): then each
    device's last sample is found, with one comparison and one scatter per message for the
    usual tick of a known layout.
    """

    _HELD_MAX = 64  # messages of distinct shapes held at once (a fleet's producers: a few)

    def __init__(self, max_devices: int = DEFAULT_MAX_DEVICES) -> None:
        self.max_devices = max_devices
        self._slots: dict[bytes, int] = {}  # stored device id -> row of _rows
        self._names: list[str] = []  # by slot
        self._rows = np.zeros(min(max_devices, 1024), schema.RECORD)
        self._filled = np.zeros(len(self._rows), bool)
        # The slots of each tick layout seen (found by its first device), so that a tick of
        # the usual fleet is stored with one comparison and one scatter.
        self._layouts: dict[bytes, tuple[Layout, np.ndarray]] = {}
        self._omitted: set[bytes] = set()
        # first device -> the newest message's rows, and their bytes
        self._held: dict[bytes, tuple[np.ndarray, memoryview]] = {}
        self._lock = threading.Lock()  # a scrape may come from another thread

    @property
    def devices(self) -> int:
        return len(self._names)

    @property
    def omitted(self) -> int:
        return len(self._omitted)

    def update(self, batch: schema.Batch) -> None:
        """Note the batch's samples (batches come in time order)."""
        rows = batch.rows
        if not self.max_devices or not len(rows):
            return
        raw = memoryview(np.ascontiguousarray(rows).view(np.uint8))  # no copy: records are
        key = bytes(raw[_DEVICE : _DEVICE + schema.DEVICE_MAX_BYTES])  # contiguous as sent
        with self._lock:
            held = self._held.get(key)
            if held is not None and _same_shape(held[1], raw, len(rows)):
                del self._held[key]  # superseded by this newer tick of the same devices
            elif held is not None or len(self._held) >= self._HELD_MAX:
                self._store_held()  # another shape: what is held, older, is stored first
            self._held[key] = (rows, raw)  # the newest last: dict order is the order to store

    def _store_held(self) -> None:
        held, self._held = self._held, {}
        for rows, _ in held.values():
            self._store(rows)

    def _store(self, rows: np.ndarray) -> None:
        """Each device's last sample among `rows` into the table."""
        devices = rows["device"]
        known = self._layouts.get(words(devices[:1]).tobytes())
        if known is not None:
            layout, slots = known
            if layout.ticks(devices) is not None:
                self._scatter(rows[len(rows) - len(layout) :], slots)
                return
        backwards = rows[::-1]
        names, first = np.unique(backwards["device"], return_index=True)
        slots = np.array([self._slot(bytes(name)) for name in names], np.int64)
        self._scatter(backwards[first], slots)
        layout = Layout.of(devices)
        if layout is not None and len(self._layouts) < self._HELD_MAX:
            order = np.array([self._slot(bytes(d)) for d in layout.devices], np.int64)
            self._layouts[words(layout.devices[:1]).tobytes()] = (layout, order)

    def _scatter(self, rows: np.ndarray, slots: np.ndarray) -> None:
        kept = slots >= 0
        if not kept.all():
            rows, slots = rows[kept], slots[kept]
        self._rows[slots] = rows
        self._filled[slots] = True

    def _slot(self, stored: bytes) -> int:
        slot = self._slots.get(stored)
        if slot is not None:
            return slot
        if len(self._names) >= self.max_devices:
            if len(self._omitted) < _OMITTED_KEPT:
                self._omitted.add(stored)
            return -1
        slot = len(self._names)
        if slot == len(self._rows):
            grown = max(1, min(self.max_devices, 2 * len(self._rows)))
            self._rows = np.resize(self._rows, grown)
            self._filled = np.resize(self._filled, grown)
            self._filled[slot:] = False
        self._slots[stored] = slot
        self._names.append(schema.device_name(stored))
        return slot

    def _table(self) -> tuple[list[str], np.ndarray]:
        """The names and newest rows of the devices shown, after storing what is held."""
        with self._lock:
            self._store_held()
            count = len(self._names)
            shown = np.flatnonzero(self._filled[:count])
            return [self._names[i] for i in shown], self._rows[shown]

    def exposition(self, info: Callable[[str], tuple[str, str] | None] = lambda d: None) -> bytes:
        """The Prometheus text format of every shown device's newest sample; `info` gives a
        device's (role, group) where the producers said (None: not known)."""
        names, rows = self._table()
        devices = [label_value(n) for n in names]
        lines = [
            "# HELP stream_device_value The newest sample's value of each device and metric "
            "(NaN: the device did not report it)",
            "# TYPE stream_device_value gauge",
        ]
        for metric in schema.METRICS:  # columns as lists: numpy scalars cost a microsecond each
            lines += [
                f'stream_device_value{{device="{d}",metric="{metric}"}} {_number(v)}'
                for d, v in zip(devices, rows[metric].tolist(), strict=True)
            ]
        kinds, sets = ("none", *schema.ANOMALY_KINDS), schema.METRIC_SETS
        lines += [
            "# HELP stream_device_anomaly The newest sample's anomaly: its kind and the metrics "
            'it alters (kind="none": normal)',
            "# TYPE stream_device_anomaly gauge",
        ]
        lines += [
            f'stream_device_anomaly{{device="{d}",kind="{kinds[k]}",metrics="{sets[m]}"}} 1'
            for d, k, m in zip(
                devices, rows["anomaly"].tolist(), rows["anomaly_metrics"].tolist(), strict=True
            )
        ]
        events = ("none", *schema.EVENT_KINDS)
        lines += [
            "# HELP stream_device_event The planned event the newest sample is part of "
            '(event="none": none)',
            "# TYPE stream_device_event gauge",
        ]
        lines += [
            f'stream_device_event{{device="{d}",event="{events[e]}"}} 1'
            for d, e in zip(devices, rows["event"].tolist(), strict=True)
        ]
        lines += [
            "# HELP stream_device_seq The newest sample's sequence number",
            "# TYPE stream_device_seq gauge",
        ]
        lines += [
            f'stream_device_seq{{device="{d}"}} {q}'
            for d, q in zip(devices, rows["seq"].tolist(), strict=True)
        ]
        lines += [
            "# HELP stream_device_timestamp_seconds The newest sample's own (simulated) time",
            "# TYPE stream_device_timestamp_seconds gauge",
        ]
        lines += [
            f'stream_device_timestamp_seconds{{device="{d}"}} {t / 1000:.3f}'
            for d, t in zip(devices, rows["ts_ms"].tolist(), strict=True)
        ]
        known = [(d, i) for d, i in zip(devices, map(info, names), strict=True) if i is not None]
        if known:
            lines += [
                "# HELP stream_device_info A device's role and group (scenario), as its "
                "producer says",
                "# TYPE stream_device_info gauge",
            ]
            lines += [
                f'stream_device_info{{device="{d}",role="{label_value(role)}",'
                f'group="{label_value(group)}"}} 1'
                for d, (role, group) in known
            ]
        lines += [
            "# HELP stream_devices_shown Devices shown here (at most --sample-metrics-devices)",
            "# TYPE stream_devices_shown gauge",
            f"stream_devices_shown {len(devices)}",
            "# HELP stream_devices_omitted Devices seen but not shown, past the bound",
            "# TYPE stream_devices_omitted gauge",
            f"stream_devices_omitted {self.omitted}",
        ]
        return ("\n".join(lines) + "\n").encode()
