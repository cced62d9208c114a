"""The simulation model: coupled, smooth, bounded host metrics per device.

Each device has a latent *workload* in roughly [0, 1]: a daily cycle plus an AR(1)
process that evolves on a one-second grid. cpu follows the workload, net and disk_io
rise and fall with it under their own multiplicative noise, and mem drifts slowly with
a small workload component. Every value is a pure function of (seed, device, timestamp),
so live, backfilled and restarted series agree sample for sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from producer import noise

# Streams keep the random numbers of different purposes independent.
_PARAMS, _AR, _CPU, _MEM, _DISK, _NET = range(1, 7)

AR_BLOCK_S = 1024  # the AR process restarts from zero two blocks back: exp(-1024 / tau) ~ 0
DAY_S = 86_400


@dataclass(frozen=True)
class DeviceParams:
    """Per-device constants drawn from the seed, so devices differ but stay stable."""

    load: np.ndarray  # mean workload, 0..1
    daily_amplitude: np.ndarray
    peak_hour: np.ndarray  # hour of day (UTC) with the highest load
    ar_sigma: np.ndarray  # stationary std of the workload's random part
    ar_tau: np.ndarray  # its correlation time, seconds
    cpu_noise: np.ndarray  # per-sample cpu jitter, percentage points
    net_base: np.ndarray  # KB/s at workload 0.5
    disk_base: np.ndarray  # MB/s at workload 0.5
    mem_base: np.ndarray  # percent
    mem_swing: np.ndarray  # amplitude of the slow drift, percentage points
    mem_period: np.ndarray  # period of the slow drift, seconds
    mem_phase: np.ndarray  # 0..1

    @classmethod
    def draw(cls, seed: int, devices: int) -> DeviceParams:
        device = np.arange(devices)

        def between(index: int, low: float, high: float) -> np.ndarray:
            return low + (high - low) * noise.uniform(seed, _PARAMS, index, device)

        return cls(
            load=between(0, 0.35, 0.55),
            daily_amplitude=between(1, 0.06, 0.16),
            peak_hour=between(2, 11.0, 17.0),
            ar_sigma=between(3, 0.05, 0.09),
            ar_tau=between(4, 20.0, 60.0),
            cpu_noise=between(5, 0.8, 2.0),
            net_base=between(6, 60.0, 160.0),
            disk_base=between(7, 40.0, 120.0),
            mem_base=between(8, 45.0, 70.0),
            mem_swing=between(9, 3.0, 10.0),
            mem_period=between(10, 2 * 3600.0, 8 * 3600.0),
            mem_phase=between(11, 0.0, 1.0),
        )


class Model:
    """Generates the values of every device at given timestamps."""

    def __init__(self, seed: int, devices: int) -> None:
        self.seed = seed
        self.devices = devices
        self.params = DeviceParams.draw(seed, devices)
        self._device = np.arange(devices)
        self._ar_cache: dict[int, np.ndarray] = {}

    def values(self, ts_ms: np.ndarray) -> np.ndarray:
        """Array (len(ts_ms), devices, 4) of cpu, mem, disk_io, net, rounded to 0.1."""
        p = self.params
        ts_ms = np.asarray(ts_ms, dtype=np.int64)
        seconds = (ts_ms / 1000.0)[:, None]
        workload = (
            p.load
            + p.daily_amplitude * np.cos(2 * np.pi * (seconds / DAY_S - p.peak_hour / 24))
            + self._ar(ts_ms)
        )
        busy = np.clip(workload, 0.0, 1.0)
        key = ts_ms[:, None]
        seed, device = self.seed, self._device

        cpu = 100.0 * workload + p.cpu_noise * noise.normal(seed, _CPU, device, key)
        drift = np.sin(2 * np.pi * (seconds / p.mem_period + p.mem_phase))
        mem = (
            p.mem_base
            + p.mem_swing * drift
            + 10.0 * (workload - p.load)
            + 0.3 * noise.normal(seed, _MEM, device, key)
        )
        disk = (
            p.disk_base * (0.3 + 1.4 * busy) * np.exp(0.3 * noise.normal(seed, _DISK, device, key))
        )
        net = p.net_base * (0.4 + 1.2 * busy) * np.exp(0.25 * noise.normal(seed, _NET, device, key))

        out = np.stack([np.clip(cpu, 0.0, 100.0), np.clip(mem, 0.0, 100.0), disk, net], axis=-1)
        return np.round(out, 1) + 0.0  # + 0.0 turns -0.0 into 0.0

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
        y = scale * noise.normal(self.seed, _AR, self._device, seconds[:, :, None])
        step, factor = 1, phi
        while step < window:
            y[step:] = y[step:] + factor * y[:-step]
            step, factor = step * 2, factor * factor
        return list(np.moveaxis(y[AR_BLOCK_S:], 1, 0))
