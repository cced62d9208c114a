"""This machine's real metrics as a source (psutil), in the same format as the simulation."""

from __future__ import annotations

import socket
import time

import numpy as np
import psutil

from common import schema
from producer.sources import build_rows
from producer.sources.series import Series


def host_device_name(hostname: str | None = None) -> str:
    """This host's name as a device id: kept as it is when it is a valid one, else with what
    an id may not hold (control characters, edge spaces, bytes past 64) taken out."""
    name = socket.gethostname() if hostname is None else hostname
    if schema.device_problem(name) is None:
        return name
    name = "".join(c if c.isprintable() else "-" for c in name).strip()
    name = name.encode()[: schema.DEVICE_MAX_BYTES].decode("utf-8", "ignore").strip()
    return name or "localhost"


class LiveSource:
    """cpu %, mem %, disk I/O MB/s (read + write) and network KB/s (sent + received)."""

    def __init__(self, series: Series, first_tick: int = 0) -> None:
        self.series = series
        self.next_tick = first_tick
        self.precision = schema.precision_for_rate(series.rate)
        self.device = host_device_name()
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement
        self._last = self._counters()

    def describe(self) -> str:
        return (
            f"streaming this machine's metrics as {self.device!r} at {self.series.rate:g} Hz, "
            f"from seq {self.series.seq_base + self.next_tick}"
        )

    def next_due_ms(self) -> float:
        return self.series.due_ms(self.next_tick)

    def take(self, now_ms: float) -> list[schema.Batch]:
        """One sample, stamped with the current tick; ticks missed while busy are skipped."""
        tick = max(self.next_tick, self.series.last_tick_due_by(now_ms))
        self.next_tick = tick + 1
        now, disk_bytes, net_bytes = self._counters()
        then, disk_before, net_before = self._last
        self._last = (now, disk_bytes, net_bytes)
        elapsed = max(now - then, 1e-3)
        values = np.array(
            [
                [
                    psutil.cpu_percent(interval=None),
                    psutil.virtual_memory().percent,
                    (disk_bytes - disk_before) / elapsed / 1e6,
                    (net_bytes - net_before) / elapsed / 1e3,
                ]
            ]
        )
        rows = build_rows(
            ts_ms=self.series.time_ms(np.array([tick])),
            seq=np.array([self.series.seq_base + tick]),
            devices=schema.device_array([self.device]),
            values=np.round(np.maximum(values, 0.0), 1) + 0.0,
        )
        return [schema.Batch(rows=rows, precision=self.precision)]

    def prefetch(self) -> None:
        """Nothing to prepare: values are read when due."""
        return None

    @staticmethod
    def _counters() -> tuple[float, int, int]:
        disk = psutil.disk_io_counters()
        net = psutil.net_io_counters()
        disk_bytes = (disk.read_bytes + disk.write_bytes) if disk else 0
        net_bytes = (net.bytes_sent + net.bytes_recv) if net else 0
        return time.monotonic(), disk_bytes, net_bytes
