"""The simulation model: coupled, smooth, bounded host metrics per device.

Each device has a latent *workload* in roughly [0, 1]: a daily cycle, a weekend dip, an
AR(1) process on a one-second grid and occasional bursts of activity. cpu follows the
workload; net and disk_io rise and fall with it under their own log-normal noise and
heavy-tailed bursts; mem drifts over hours and grows in a sawtooth that garbage
collection releases. Every value is a pure function of (seed, device, timestamp), so
live, fast-forwarded, backfilled and restarted series agree sample for sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from producer.model import noise

# Streams keep the random numbers of different purposes independent.
_PARAMS, _AR, _CPU, _MEM, _DISK, _NET, _BURST, _GC, _DISK_BURST, _NET_BURST = range(1, 11)

AR_BLOCK_S = 1024  # the AR process restarts from zero two blocks back: exp(-1024 / tau) ~ 0
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
_MONDAY_MS = 4 * DAY_MS  # 1970-01-05, the first Monday after the epoch


def device_indices(devices: int | np.ndarray) -> np.ndarray:
    """Global device indices (int64): 0..n-1 for a count n, else the given 1-D integer array.

    Every random draw is keyed by these, never by a column position, so that any subset
    of a fleet is simulated exactly as in the whole fleet.
    """
    if isinstance(devices, int | np.integer):
        return np.arange(int(devices), dtype=np.int64)
    indices = np.asarray(devices)
    if indices.ndim != 1 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
        raise ValueError(f"devices must be a count or a 1-D integer array, got {devices!r}")
    if indices.size and indices.min() < 0:
        raise ValueError(f"device indices must be >= 0, got {int(indices.min())}")
    return indices.astype(np.int64)


@dataclass(frozen=True)
class DeviceParams:
    """Per-device constants drawn from the seed, so devices differ but stay stable."""

    load: np.ndarray  # mean workload, 0..1
    daily_amplitude: np.ndarray
    peak_hour: np.ndarray  # hour of day (UTC) with the highest load
    weekend_dip: np.ndarray  # workload removed on Saturdays and Sundays
    ar_sigma: np.ndarray  # stationary std of the workload's random part
    ar_tau: np.ndarray  # its correlation time, seconds
    burst_chance: np.ndarray  # probability of a workload burst in a 15-minute slot
    cpu_noise: np.ndarray  # per-sample cpu jitter, percentage points
    net_base: np.ndarray  # KB/s at workload 0.5
    disk_base: np.ndarray  # MB/s at workload 0.5
    mem_base: np.ndarray  # percent
    mem_swing: np.ndarray  # amplitude of the slow drift, percentage points
    mem_period: np.ndarray  # period of the slow drift, seconds
    mem_phase: np.ndarray  # 0..1
    gc_period: np.ndarray  # milliseconds between garbage collections
    gc_growth: np.ndarray  # mean percentage points mem grows between two collections

    @classmethod
    def draw(cls, seed: int, devices: int | np.ndarray) -> DeviceParams:
        """A count means devices 0..n-1; an array, those global indices (in its order)."""
        device = device_indices(devices)

        def between(index: int, low: float, high: float) -> np.ndarray:
            return low + (high - low) * noise.uniform(seed, _PARAMS, index, device)

        return cls(
            load=between(0, 0.35, 0.55),
            daily_amplitude=between(1, 0.06, 0.16),
            peak_hour=between(2, 11.0, 17.0),
            weekend_dip=between(12, 0.04, 0.12),
            ar_sigma=between(3, 0.05, 0.09),
            ar_tau=between(4, 20.0, 60.0),
            burst_chance=between(13, 0.15, 0.45),
            cpu_noise=between(5, 0.8, 2.0),
            net_base=between(6, 60.0, 160.0),
            disk_base=between(7, 40.0, 120.0),
            mem_base=between(8, 45.0, 65.0),
            mem_swing=between(9, 3.0, 8.0),
            mem_period=between(10, 2 * 3600.0, 8 * 3600.0),
            mem_phase=between(11, 0.0, 1.0),
            gc_period=np.round(between(14, 8 * 60_000.0, 30 * 60_000.0)),
            gc_growth=between(15, 3.0, 9.0),
        )


@dataclass(frozen=True)
class SlotEvents:
    """Events that start and end inside fixed slots: one slot at most one event.

    Confining an event to its slot makes "is an event active at t?" a function of t's
    slot alone, so it needs no history and vectorizes over any set of timestamps.
    """

    slot_ms: int
    min_ms: float
    max_ms: float

    def at(
        self, seed: int, stream: int, chance: np.ndarray | float, device: np.ndarray, ts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(active, position 0..1 in the event, a uniform per event), each (len(ts), devices)."""
        slot = ts // self.slot_ms
        first = int(slot.min())
        slots = np.arange(first, int(slot.max()) + 1)[:, None]
        has = noise.uniform(seed, stream, device, slots) < chance
        duration = self.min_ms + (self.max_ms - self.min_ms) * noise.uniform(
            seed, stream + 100, device, slots
        )
        start = slots * self.slot_ms + noise.uniform(seed, stream + 200, device, slots) * (
            self.slot_ms - duration
        )
        size = noise.uniform(seed, stream + 300, device, slots)
        row = slot - first
        t = ts[:, None].astype(np.float64)
        position = (t - start[row]) / duration[row]
        active = has[row] & (position >= 0) & (position < 1)
        return active, position, size[row]


_WORKLOAD_BURSTS = SlotEvents(slot_ms=900_000, min_ms=60_000, max_ms=420_000)
_IO_BURSTS = SlotEvents(slot_ms=60_000, min_ms=2_000, max_ms=30_000)


class Model:
    """Generates the values of every device, or of a subset of them, at given timestamps.

    `devices` is a count (devices 0..n-1) or an array of global indices: a subset costs
    in proportion to its size and gives exactly the full fleet's columns for it.
    """

    def __init__(self, seed: int, devices: int | np.ndarray) -> None:
        self.seed = seed
        self.indices = device_indices(devices)  # the global index of each column
        self.devices = len(self.indices)
        self.params = DeviceParams.draw(seed, self.indices)
        self._ar_cache: dict[int, np.ndarray] = {}

    def values(self, ts_ms: np.ndarray) -> np.ndarray:
        """Array (len(ts_ms), devices, 4) of cpu, mem, disk_io, net, before rounding."""
        p = self.params
        seed, device = self.seed, self.indices
        ts_ms = np.asarray(ts_ms, dtype=np.int64)
        seconds = (ts_ms / 1000.0)[:, None]
        key = ts_ms[:, None]

        workload = (
            p.load
            + p.daily_amplitude * np.cos(2 * np.pi * (seconds / 86_400 - p.peak_hour / 24))
            - p.weekend_dip * _weekend(ts_ms)[:, None]
            + self._ar(ts_ms)
            + self._bursts(ts_ms)
        )
        busy = np.clip(workload, 0.0, 1.0)

        cpu = 100.0 * workload + p.cpu_noise * noise.normal(seed, _CPU, device, key)
        mem = (
            p.mem_base
            + p.mem_swing * np.sin(2 * np.pi * (seconds / p.mem_period + p.mem_phase))
            + self._garbage(ts_ms)
            + 10.0 * (workload - p.load)
            + 0.3 * noise.normal(seed, _MEM, device, key)
        )
        disk = (
            p.disk_base
            * (0.3 + 1.4 * busy)
            * np.exp(0.3 * noise.normal(seed, _DISK, device, key))
            * self._io_bursts(_DISK_BURST, ts_ms)
        )
        net = (
            p.net_base
            * (0.4 + 1.2 * busy)
            * np.exp(0.25 * noise.normal(seed, _NET, device, key))
            * self._io_bursts(_NET_BURST, ts_ms)
        )
        return np.stack([cpu, mem, disk, net], axis=-1)

    def _bursts(self, ts_ms: np.ndarray) -> np.ndarray:
        """Workload bursts: a smooth bump of 0.08-0.25 lasting 1-7 minutes."""
        active, position, size = _WORKLOAD_BURSTS.at(
            self.seed, _BURST, self.params.burst_chance, self.indices, ts_ms
        )
        shape = np.sin(np.pi * np.clip(position, 0.0, 1.0)) ** 0.5
        return np.where(active, (0.08 + 0.17 * size) * shape, 0.0)

    def _io_bursts(self, stream: int, ts_ms: np.ndarray) -> np.ndarray:
        """Heavy-tailed multipliers (Pareto, alpha 1.5, capped at 8x) for seconds at a time."""
        active, _, size = _IO_BURSTS.at(self.seed, stream, 0.15, self.indices, ts_ms)
        return np.where(active, np.minimum(size ** (-1 / 1.5), 8.0), 1.0)

    def _garbage(self, ts_ms: np.ndarray) -> np.ndarray:
        """The mem sawtooth: growth since the last collection, released at each one."""
        p = self.params
        since = ts_ms[:, None] + p.gc_period * p.mem_phase
        cycle = since // p.gc_period
        progress = (since - cycle * p.gc_period) / p.gc_period
        growth = p.gc_growth * (0.5 + noise.uniform(self.seed, _GC, self.indices, cycle))
        return growth * (progress - 0.5)

    def _ar(self, ts_ms: np.ndarray) -> np.ndarray:
        """The workload's AR(1) part, linearly interpolated between whole seconds."""
        whole = ts_ms // 1000
        frac = ((ts_ms - whole * 1000) / 1000.0)[:, None]
        first_block = int(whole.min()) // AR_BLOCK_S
        last_block = (int(whole.max()) + 1) // AR_BLOCK_S
        grid = np.concatenate(self._ar_blocks(range(first_block, last_block + 1)))
        index = whole - first_block * AR_BLOCK_S
        return (1.0 - frac) * grid[index] + frac * grid[index + 1]

    def _ar_blocks(self, blocks: range) -> list[np.ndarray]:
        """AR values per block; live use asks for the same one or two blocks each tick."""
        missing = [b for b in blocks if b not in self._ar_cache]
        fresh = (
            dict(zip(missing, self._compute_ar_blocks(np.array(missing)), strict=True))
            if missing
            else {}
        )
        result = [self._ar_cache[b] if b in self._ar_cache else fresh[b] for b in blocks]
        if len(blocks) <= 2:
            if len(self._ar_cache) + len(fresh) > 4:
                self._ar_cache.clear()
            self._ar_cache.update(fresh)
        return result

    def _compute_ar_blocks(self, blocks: np.ndarray) -> list[np.ndarray]:
        """Run AR(1) over each block and the one before it, from zero, with a parallel scan.

        The scan (log2 steps of y[i] += phi^s * y[i - s]) gives the same numbers whatever
        set of blocks is computed together, which keeps the series chunk-independent.
        """
        p = self.params
        window = 2 * AR_BLOCK_S
        seconds = (blocks[None, :] - 1) * AR_BLOCK_S + np.arange(window)[:, None]
        phi = np.exp(-1.0 / p.ar_tau)
        scale = p.ar_sigma * np.sqrt(1.0 - phi**2)
        y = scale * noise.normal(self.seed, _AR, self.indices, seconds[:, :, None])
        step, factor = 1, phi
        while step < window:
            y[step:] = y[step:] + factor * y[:-step]
            step, factor = step * 2, factor * factor
        return list(np.moveaxis(y[AR_BLOCK_S:], 1, 0))


def _weekend(ts_ms: np.ndarray) -> np.ndarray:
    """1 on Saturday and Sunday (UTC), 0 on weekdays, with one-hour smooth edges."""
    into_week = ((ts_ms - _MONDAY_MS) % WEEK_MS) / 3_600_000.0  # hours since Monday 00:00
    rise = 1 / (1 + np.exp(-(into_week - 120.0) * 4))  # Saturday 00:00
    fall = 1 / (1 + np.exp(-(into_week - 167.5) * 4))  # late Sunday
    return rise - fall


def finish(values: np.ndarray) -> np.ndarray:
    """Bound and round raw values: cpu and mem to 0-100, rates >= 0, one decimal."""
    out = np.empty_like(values)
    np.clip(values[..., :2], 0.0, 100.0, out=out[..., :2])
    np.maximum(values[..., 2:], 0.0, out=out[..., 2:])
    return np.round(out, 1) + 0.0  # + 0.0 turns -0.0 into 0.0
