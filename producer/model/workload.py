"""The simulation model: coupled, bursty, bounded host metrics per device, by role.

Each device has a role (producer.model.roles) and a latent *load* whose logarithm sums a
daily cycle, a weekend dip, AR(1) processes at three time scales (seconds, half an hour,
hours) and short bursts. cpu is the role's level times the load (log-normal: mostly
low, sometimes high); disk_io and net follow the load under log-normal noise, bursts of
seconds and long episodes (batch runs, backups, transfers, traffic surges: minutes to
hours, heavy-tailed) that survive aggregation; mem drifts over hours and grows in a
sawtooth that garbage collection releases. Every value is a pure function of (seed,
device, timestamp), so live, fast-forwarded, backfilled and restarted series agree
sample for sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from producer.model import noise
from producer.model.episodes import EpisodeProcess
from producer.model.roles import DEFAULT_MIX, Role, RoleMix, columns, distinct

# Streams keep the random numbers of different purposes independent.
_PARAMS, _AR, _NOISE_CPU_MEM, _NOISE_IO, _SLOW, _DRIFT = 1, 2, 3, 5, 6, 11
_BURST, _GC, _DISK_BURST, _NET_BURST = 7, 8, 9, 10
_EPISODES = {"jobs": 20, "surges": 24, "transfers": 28, "backups": 32}  # 4 streams each

AR_BLOCK = 1024  # grid steps: an AR process restarts from zero two blocks back
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
_MONDAY_MS = 4 * DAY_MS  # 1970-01-05, the first Monday after the epoch
CPU, MEM, DISK, NET = range(4)
_SECONDS_CACHED = 16  # whole seconds of latent state kept for live ticks


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
    """Per-device constants: the role's values, varied per device from the seed."""

    cpu_level: np.ndarray  # median cpu %
    cpu_noise: np.ndarray  # per-sample cpu jitter, points
    daily: np.ndarray  # daily cycle amplitude (log of load)
    peak_hour: np.ndarray  # hour of day (UTC) with the highest load
    weekend: np.ndarray  # log of load removed on Saturdays and Sundays
    slow_sigma: np.ndarray  # sd of each of the two slow log-load processes
    fast_sigma: np.ndarray  # sd of the fast log-load process
    fast_tau: np.ndarray  # its correlation time, seconds
    burst_chance: np.ndarray  # probability of a load burst in a 15-minute slot
    mem_level: np.ndarray  # percent
    mem_swing: np.ndarray  # amplitude of the slow drift, percentage points
    mem_period: np.ndarray  # period of the slow drift, seconds
    mem_phase: np.ndarray  # 0..1
    gc_period: np.ndarray  # milliseconds between garbage collections
    gc_growth: np.ndarray  # mean percentage points mem grows between two collections
    disk_base: np.ndarray  # MB/s at median load
    net_base: np.ndarray  # KB/s at median load
    io_follow: np.ndarray  # exponent of the load in disk_io and net

    @classmethod
    def draw(cls, seed: int, devices: int | np.ndarray, roles: Sequence[Role]) -> DeviceParams:
        """A count means devices 0..n-1; an array, those global indices (in its order); `roles`
        gives each one's role."""
        device = device_indices(devices)
        unique, which = distinct(roles)

        def between(index: int, low: float, high: float) -> np.ndarray:
            return low + (high - low) * noise.uniform(seed, _PARAMS, index, device)

        def role(name: str) -> np.ndarray:
            return columns(unique, which, name)

        return cls(
            cpu_level=role("cpu") * np.exp(between(0, -0.25, 0.25)),
            cpu_noise=role("cpu_noise"),
            daily=role("daily") * between(1, 0.8, 1.2),
            peak_hour=role("peak_hour") + between(2, -1.5, 1.5),
            weekend=role("weekend") * between(12, 0.8, 1.2),
            slow_sigma=role("cpu_spread") * between(3, 0.8, 1.2) / np.sqrt(2.0),
            fast_sigma=between(16, 0.06, 0.12),
            fast_tau=between(4, 20.0, 60.0),
            burst_chance=between(13, 0.1, 0.3),
            mem_level=role("mem") + between(8, -4.0, 4.0),
            mem_swing=role("mem_swing") * between(9, 0.7, 1.3),
            mem_period=between(10, 2 * 3600.0, 8 * 3600.0),
            mem_phase=between(11, 0.0, 1.0),
            gc_period=np.round(between(14, 8 * 60_000.0, 30 * 60_000.0)),
            gc_growth=role("gc_growth") * between(15, 0.6, 1.4),
            disk_base=role("disk") * np.exp(between(7, -0.4, 0.4)),
            net_base=role("net") * np.exp(between(6, -0.4, 0.4)),
            io_follow=role("io_follow"),
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


_LOAD_BURSTS = SlotEvents(slot_ms=900_000, min_ms=60_000, max_ms=420_000)
_IO_BURSTS = SlotEvents(slot_ms=60_000, min_ms=2_000, max_ms=30_000)


class ARProcess:
    """A stationary AR(1) process on a grid of `step_s` seconds, per device, without state.

    Each block of AR_BLOCK steps is computed from zero a block earlier (the correlation
    time must be far below a block), so a value depends on its block alone. Between grid
    points it is interpolated linearly.
    """

    def __init__(
        self,
        seed: int,
        stream: int,
        indices: np.ndarray,
        step_s: int,
        tau_steps: np.ndarray,
        sigma: np.ndarray,
    ) -> None:
        self.seed, self.stream, self.indices, self.step_s = seed, stream, indices, step_s
        self.phi = np.exp(-1.0 / tau_steps)
        self.scale = sigma * np.sqrt(1.0 - self.phi**2)
        self._cache: dict[int, np.ndarray] = {}

    def at(self, seconds: np.ndarray) -> np.ndarray:
        """Values at these whole seconds, (n, devices)."""
        if self.step_s == 1:
            step, frac = seconds, None
        else:
            step = seconds // self.step_s
            frac = ((seconds - step * self.step_s) / self.step_s)[:, None]
        # Only the blocks these seconds fall in (scattered instants, such as where stuck
        # sensors froze, would otherwise cost every block between them).
        needed = step // AR_BLOCK if frac is None else np.r_[step, step + 1] // AR_BLOCK
        needed = np.unique(needed)
        blocks = self._blocks(needed.tolist())
        grid = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)

        def position(steps: np.ndarray) -> np.ndarray:
            return np.searchsorted(needed, steps // AR_BLOCK) * AR_BLOCK + steps % AR_BLOCK

        if frac is None:
            return grid[position(step)]
        low = grid[position(step)]
        return low + frac * (grid[position(step + 1)] - low)

    def _blocks(self, blocks: list[int]) -> list[np.ndarray]:
        """Values per block; live use asks for the same one or two blocks each tick."""
        missing = [b for b in blocks if b not in self._cache]
        fresh = dict(zip(missing, self._compute(np.array(missing)), strict=True)) if missing else {}
        result = [self._cache[b] if b in self._cache else fresh[b] for b in blocks]
        if len(blocks) <= 2:
            if len(self._cache) + len(fresh) > 4:
                self._cache.clear()
            self._cache.update(fresh)
        return result

    def _compute(self, blocks: np.ndarray) -> list[np.ndarray]:
        """Run the AR(1) over each block and the one before it, from zero, with a parallel scan.

        The scan (log2 steps of y[i] += phi^s * y[i - s]) gives the same numbers whatever
        set of blocks is computed together, which keeps the series chunk-independent.
        """
        window = 2 * AR_BLOCK
        steps = (blocks[None, :] - 1) * AR_BLOCK + np.arange(window)[:, None]
        y = self.scale * noise.normal(self.seed, self.stream, self.indices, steps[:, :, None])
        step, factor = 1, self.phi
        while step < window:
            y[step:] = y[step:] + factor * y[:-step]
            step, factor = step * 2, factor * factor
        return list(np.moveaxis(y[AR_BLOCK:], 1, 0))


class Model:
    """Generates the values of every device, or of a subset of them, at given timestamps.

    `devices` is a count (devices 0..n-1) or an array of global indices: a subset costs
    in proportion to its size and gives exactly the full fleet's columns for it. `roles`
    is a RoleMix (default: the seed's default mix) or one Role per device, in order.

    The slowly varying state (load, daily cycle, episodes, bursts, mem) is computed at
    whole seconds and interpolated between them; per-sample noise is added on top.
    """

    def __init__(
        self,
        seed: int,
        devices: int | np.ndarray,
        roles: RoleMix | Sequence[Role] | None = None,
    ) -> None:
        self.seed = seed
        self.indices = device_indices(devices)  # the global index of each column
        self.devices = len(self.indices)
        if roles is None or isinstance(roles, RoleMix):
            roles = (roles or DEFAULT_MIX).roles(seed, self.indices)
        elif len(roles) != self.devices:
            raise ValueError(
                f"roles must name one role per device: {len(roles)} for {self.devices}"
            )
        self.roles: list[Role] = list(roles)
        p = self.params = DeviceParams.draw(seed, self.indices, self.roles)
        index = self.indices
        self._fast = ARProcess(seed, _AR, index, 1, p.fast_tau, p.fast_sigma)
        self._slow = ARProcess(seed, _SLOW, index, 30, np.full(len(index), 60.0), p.slow_sigma)
        self._drift = ARProcess(seed, _DRIFT, index, 300, np.full(len(index), 72.0), p.slow_sigma)
        self._episodes = [
            EpisodeProcess(seed, stream, index, distinct(self.roles), kind)
            for kind, stream in _EPISODES.items()
        ]
        self._seconds: dict[int, np.ndarray] = {}

    def values(self, ts_ms: np.ndarray) -> np.ndarray:
        """Array (len(ts_ms), devices, 4) of cpu, mem, disk_io, net, before rounding."""
        ts_ms = np.asarray(ts_ms, dtype=np.int64)
        whole = ts_ms // 1000
        part = ts_ms - whole * 1000
        if not part.any():
            state = self._state(whole)
        else:
            seconds, inverse = np.unique(np.concatenate([whole, whole + 1]), return_inverse=True)
            grid = self._state(seconds)
            low = grid[inverse[: len(whole)]]
            frac = (part / 1000.0)[:, None, None]
            state = low + frac * (grid[inverse[len(whole) :]] - low)
        key = ts_ms[:, None]
        z_cpu, z_mem = noise.normal_pair(self.seed, _NOISE_CPU_MEM, self.indices, key)
        z_disk, z_net = noise.normal_pair(self.seed, _NOISE_IO, self.indices, key)
        out = np.empty((len(ts_ms), self.devices, 4))
        out[..., CPU] = state[:, CPU] + self.params.cpu_noise * z_cpu
        out[..., MEM] = state[:, MEM] + 0.3 * z_mem
        out[..., DISK] = state[:, DISK] * np.exp(0.3 * z_disk)
        out[..., NET] = state[:, NET] * np.exp(0.25 * z_net)
        return out

    def _state(self, seconds: np.ndarray) -> np.ndarray:
        """The slow state at whole seconds, (n, 4, devices); live ticks reuse recent seconds."""
        if len(seconds) > 4:
            return self._state_at(seconds)
        keys = [int(s) for s in seconds]
        missing = sorted({k for k in keys if k not in self._seconds})
        if missing:
            fresh = self._state_at(np.array(missing, np.int64))
            if len(self._seconds) + len(missing) > _SECONDS_CACHED:
                self._seconds = {k: self._seconds[k] for k in keys if k in self._seconds}
            self._seconds.update(zip(missing, fresh, strict=True))
        return np.stack([self._seconds[k] for k in keys])

    def _state_at(self, seconds: np.ndarray) -> np.ndarray:
        """cpu, mem, disk_io and net without per-sample noise at these whole seconds."""
        order = None
        if len(seconds) > 1 and not (np.diff(seconds) > 0).all():
            seconds, order = np.unique(seconds, return_inverse=True)
        p = self.params
        ms = seconds * 1000
        t = seconds[:, None].astype(np.float64)
        log_load = (
            p.daily * np.cos(2 * np.pi * (t / 86_400 - p.peak_hour / 24))
            - p.weekend * _weekend(ms)[:, None]
            + self._fast.at(seconds)
            + self._slow.at(seconds)
            + self._drift.at(seconds)
            + self._bursts(ms)
        )
        load = np.exp(log_load)
        io = np.exp(p.io_follow * log_load)
        cpu = p.cpu_level * load
        mem = (
            p.mem_level
            + p.mem_swing * np.sin(2 * np.pi * (t / p.mem_period + p.mem_phase))
            + self._garbage(ms)
            + 4.0 * log_load
        )
        disk = p.disk_base * io * self._io_bursts(_DISK_BURST, ms)
        net = p.net_base * io * self._io_bursts(_NET_BURST, ms)
        for process in self._episodes:
            process.add(seconds, [cpu, mem, disk, net])
        state = np.stack([cpu, mem, disk, net], axis=1)
        return state if order is None else state[order]

    def _bursts(self, ts_ms: np.ndarray) -> np.ndarray:
        """Load bursts: a smooth bump of 0.2-0.6 (log of load) lasting 1-7 minutes."""
        active, position, size = _LOAD_BURSTS.at(
            self.seed, _BURST, self.params.burst_chance, self.indices, ts_ms
        )
        shape = np.sin(np.pi * np.clip(position, 0.0, 1.0)) ** 0.5
        return np.where(active, (0.2 + 0.4 * size) * shape, 0.0)

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
