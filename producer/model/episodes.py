"""Long episodes (minutes to hours) without state: found by looking back from hour slots.

Each device may start an episode in any hour slot (chance by hour of day); it lasts a
heavy-tailed (Pareto) duration. Whether an instant is inside one is a function of the
hour slots that could still reach it (up to the longest duration back), so any instant
of any device is computed alone, like the rest of the model. Episodes are sparse, so
their effects are added only to the samples inside them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from producer.model import noise
from producer.model.roles import Episodes, Role

SLOT_S = 3600
EVENT = np.dtype(
    [
        ("column", "<i8"),
        ("start", "<f8"),  # seconds
        ("end", "<f8"),
        ("ramp", "<f8"),  # seconds to full strength, and back to nothing at the end
        ("effect", "<f8", (4,)),  # cpu points, mem points, disk and net multipliers - 1
    ]
)
_CACHE_SLOTS = 64  # slots kept when a request is small (live ticks)


class EpisodeProcess:
    """One kind of episode (e.g. every device's batch jobs) for a set of devices."""

    def __init__(
        self,
        seed: int,
        stream: int,
        indices: np.ndarray,
        roles: tuple[Sequence[Role], np.ndarray],
        kind: str,
    ) -> None:
        """`roles` is the fleet's distinct roles and each device's position among them."""
        unique, which = roles
        specs: list[Episodes] = [getattr(r, kind) for r in unique]
        self.seed, self.stream, self.indices = seed, stream, indices
        self.chance = np.array([s.chance_by_hour() for s in specs]).reshape(-1, 24)[which].T.copy()
        self.active = bool(self.chance.any())
        self.min_s = np.array([s.min_s for s in specs])[which]
        self.max_s = np.array([s.max_s for s in specs])[which]
        self.alpha = np.array([s.alpha for s in specs])[which]
        self.effect = np.array([[s.cpu, s.mem, s.disk, s.net] for s in specs]).reshape(-1, 4)[which]
        self.lookback_slots = int(np.ceil(self.max_s.max() / SLOT_S)) + 1 if len(which) else 1
        self._slots: dict[int, np.ndarray] = {}

    def add(self, seconds: np.ndarray, channels: list[np.ndarray]) -> None:
        """Add the episodes' effects to cpu, mem (points) and disk, net (multipliers) in place.

        `seconds` (n,) increasing; each channel is (n, devices)."""
        if not self.active or not len(seconds):
            return
        events = self.events(int(seconds[0]), int(seconds[-1]))
        lo = np.searchsorted(seconds, events["start"], side="left")
        hi = np.searchsorted(seconds, events["end"], side="left")
        counts = hi - lo
        inside = counts > 0
        if not inside.any():
            return
        events, lo, counts = events[inside], lo[inside], counts[inside]
        which = np.repeat(np.arange(len(events)), counts)
        row = lo[which] + np.arange(len(which)) - np.repeat(np.cumsum(counts) - counts, counts)
        event = events[which]
        t = seconds[row]
        edge = np.minimum(t - event["start"], event["end"] - t)
        shape = np.minimum(edge / event["ramp"], 1.0)
        column = event["column"]
        cpu, mem, disk, net = channels
        np.add.at(cpu, (row, column), event["effect"][:, 0] * shape)
        np.add.at(mem, (row, column), event["effect"][:, 1] * shape)
        np.multiply.at(disk, (row, column), 1.0 + event["effect"][:, 2] * shape)
        np.multiply.at(net, (row, column), 1.0 + event["effect"][:, 3] * shape)

    def events(self, first_s: int, last_s: int) -> np.ndarray:
        """EVENT records of every episode that may touch [first_s, last_s], by slot then column."""
        first = first_s // SLOT_S - self.lookback_slots
        last = last_s // SLOT_S
        if last - first >= _CACHE_SLOTS // 2:
            return self._compute(np.arange(first, last + 1))[0]
        wanted = range(first, last + 1)
        missing = [s for s in wanted if s not in self._slots]
        if missing:
            if len(self._slots) + len(missing) > _CACHE_SLOTS:
                self._slots = {s: e for s, e in self._slots.items() if s in wanted}
            fresh, slot_of = self._compute(np.array(missing))
            for s in missing:
                self._slots[s] = fresh[slot_of == s]
        return np.concatenate([self._slots[s] for s in wanted])

    def _compute(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The episodes starting in these slots, and the slot of each."""
        seed, stream, device = self.seed, self.stream, self.indices
        s = slots[:, None]
        has = noise.uniform(seed, stream, device, s) < self.chance[slots % 24]
        slot_i, col = np.nonzero(has)
        slot = slots[slot_i]
        dev = device[col]
        offset = noise.uniform(seed, stream + 1, dev, slot) * SLOT_S
        spread = noise.uniform(seed, stream + 2, dev, slot)
        duration = np.minimum(self.min_s[col] * spread ** (-1.0 / self.alpha[col]), self.max_s[col])
        size = 3.0 ** (2.0 * noise.uniform(seed, stream + 3, dev, slot) - 1.0)
        out = np.zeros(len(col), EVENT)
        out["column"] = col
        out["start"] = slot * float(SLOT_S) + offset
        out["end"] = out["start"] + duration
        out["ramp"] = np.minimum(60.0, duration / 4)
        out["effect"] = self.effect[col] * size[:, None]
        return out, slot
