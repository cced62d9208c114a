"""What every sample passes before the producer publishes it: the one definition of a valid
sample (common.schema), the very one subscribers apply, so nothing published is ever
refused downstream.

A sample that fails is not published: its seq is withheld in the catch-up history with
the reason `invalid_input` (so a logger that sees the jump records a gap with that
reason), counted, and logged once per kind of problem, never once per sample.
"""

from __future__ import annotations

import logging

import numpy as np

from common import schema
from delivery.reasons import Reason
from producer.catchup.history import History

log = logging.getLogger(__name__)


class Gate:
    """Keeps what is not a valid sample from being published, and accounts for it."""

    def __init__(self, history: History) -> None:
        self.history = history
        self.refused = 0  # samples (or replay rows) not published because they were not valid
        self._told: set[str] = set()  # kinds of problem already logged
        self._vouched: np.ndarray | None = None  # a valid block, cut into batches later

    def vouch(self, block: np.ndarray) -> None:
        """Check at once a block of rows a source generated ahead: if every row is valid,
        the batches later cut from it (views of it) pass admit() without a check of their
        own. A tick of 1000 samples costs ~50 us to check, mostly per call; a block of 20
        ticks costs little more than one tick."""
        self._vouched = _owner(block) if not schema.problems(block) else None

    def admit(self, batch: schema.Batch) -> schema.Batch:
        """The valid samples of `batch` (itself if all are; checked in a few numpy passes)."""
        if self._vouched is not None and _owner(batch.rows) is self._vouched:
            return batch
        found = schema.problems(batch.rows)
        if not found:
            return batch
        bad = np.zeros(len(batch), bool)
        unattributed = np.zeros(len(batch), bool)  # no valid device id to withhold a seq of
        for rule, rows, problem in found:
            bad |= rows
            if rule == "device":
                unattributed = rows
            if rule not in self._told:
                self._told.add(rule)
                log.error(
                    "not publishing samples that are not valid (this kind is logged once): %s",
                    problem,
                )
        refused = batch.rows[bad & ~unattributed]
        for device, seq in zip(refused["device"].tolist(), refused["seq"].tolist(), strict=True):
            self.history.withhold(schema.device_name(device), seq, seq, Reason.INVALID_INPUT)
        self.refused += int(bad.sum())
        return batch.with_rows(batch.rows[~bad])

    def refuse(self, device: str | None, seq: int | None) -> None:
        """A row a source found invalid itself (a bad replay row): withheld under its device's
        seq, or only counted if it has no valid device id."""
        if device is not None and seq is not None:
            self.history.withhold(device, seq, seq, Reason.INVALID_INPUT)
        self.refused += 1


def _owner(rows: np.ndarray) -> np.ndarray:
    """The array that owns the memory of `rows` (itself, or the array it is a view of)."""
    while isinstance(rows.base, np.ndarray):
        rows = rows.base
    return rows
