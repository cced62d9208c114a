"""The newest sample of each device, for Prometheus: `/metrics/samples`.

Grafana users watch fleets through Prometheus, which scrapes gauges rather than streams.
The broadcaster already sees every sample, so it keeps each device's newest one (a record
per device, updated with one scatter per tick) and, when scraped, shows it as gauges
labelled by device and metric, with the current anomaly and planned event as labels of
series of their own.

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
from collections.abc import Callable

import numpy as np

from common import schema
from common.layout import Layout, words

DEFAULT_MAX_DEVICES = 1000
SERIES_PER_DEVICE = 9
_OMITTED_KEPT = 100_000  # distinct omitted devices counted at most (the largest fleet)


def label_value(text: str) -> str:
    """`text` as a label value of the Prometheus text format (backslash, quote, newline)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


class Latest:
    """Each device's newest sample, kept for scrapes; at most `max_devices` devices."""

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

    @property
    def devices(self) -> int:
        return len(self._names)

    @property
    def omitted(self) -> int:
        return len(self._omitted)

    def update(self, batch: schema.Batch) -> None:
        """Keep each device's last sample of the batch (batches come in time order)."""
        rows = batch.rows
        if not self.max_devices or not len(rows):
            return
        devices = rows["device"]
        known = self._layouts.get(words(devices[:1]).tobytes())
        if known is not None:
            layout, slots = known
            ticks = layout.ticks(devices)
            if ticks is not None:
                self._store(rows[len(rows) - len(layout) :], slots)
                return
        self._update_any(rows)

    def _update_any(self, rows: np.ndarray) -> None:
        backwards = rows[::-1]
        names, first = np.unique(backwards["device"], return_index=True)
        slots = np.array([self._slot(bytes(name)) for name in names], np.int64)
        self._store(backwards[first], slots)
        layout = Layout.of(rows["device"])
        if layout is not None and len(self._layouts) < 64:
            order = np.array([self._slot(bytes(d)) for d in layout.devices], np.int64)
            self._layouts[words(layout.devices[:1]).tobytes()] = (layout, order)

    def _store(self, rows: np.ndarray, slots: np.ndarray) -> None:
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

    def exposition(self, info: Callable[[str], tuple[str, str] | None] = lambda d: None) -> bytes:
        """The Prometheus text format of every shown device's newest sample; `info` gives a
        device's (role, group) where the producers said (None: not known)."""
        count = len(self._names)
        names = self._names[:count]
        rows = self._rows[:count].copy()  # a scrape may come from another thread
        filled = self._filled[:count].copy()
        picked = [(n, r) for n, r, f in zip(names, rows, filled, strict=True) if f]
        shown = [(label_value(n), r) for n, r in picked]
        lines = [
            "# HELP stream_device_value The newest sample's value of each device and metric "
            "(NaN: the device did not report it)",
            "# TYPE stream_device_value gauge",
        ]
        for device, row in shown:
            for metric in schema.METRICS:
                lines.append(
                    f'stream_device_value{{device="{device}",metric="{metric}"}} '
                    f"{_number(row[metric])}"
                )
        lines += [
            "# HELP stream_device_anomaly The newest sample's anomaly: its kind and the metrics "
            'it alters (kind="none": normal)',
            "# TYPE stream_device_anomaly gauge",
        ]
        kinds = ("none", *schema.ANOMALY_KINDS)
        for device, row in shown:
            kind, mask = kinds[int(row["anomaly"])], schema.METRIC_SETS[int(row["anomaly_metrics"])]
            lines.append(
                f'stream_device_anomaly{{device="{device}",kind="{kind}",metrics="{mask}"}} 1'
            )
        lines += [
            "# HELP stream_device_event The planned event the newest sample is part of "
            '(event="none": none)',
            "# TYPE stream_device_event gauge",
        ]
        events = ("none", *schema.EVENT_KINDS)
        for device, row in shown:
            event = events[int(row["event"])]
            lines.append(f'stream_device_event{{device="{device}",event="{event}"}} 1')
        lines += [
            "# HELP stream_device_seq The newest sample's sequence number",
            "# TYPE stream_device_seq gauge",
        ]
        lines += [f'stream_device_seq{{device="{d}"}} {int(r["seq"])}' for d, r in shown]
        lines += [
            "# HELP stream_device_timestamp_seconds The newest sample's own (simulated) time",
            "# TYPE stream_device_timestamp_seconds gauge",
        ]
        lines += [
            f'stream_device_timestamp_seconds{{device="{d}"}} {int(r["ts_ms"]) / 1000:.3f}'
            for d, r in shown
        ]
        described = [(label_value(n), info(n)) for n, _ in picked]
        known = [(d, i) for d, i in described if i is not None]
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
            f"stream_devices_shown {len(shown)}",
            "# HELP stream_devices_omitted Devices seen but not shown, past the bound",
            "# TYPE stream_devices_omitted gauge",
            f"stream_devices_omitted {self.omitted}",
        ]
        return ("\n".join(lines) + "\n").encode()
