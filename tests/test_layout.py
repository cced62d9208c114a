"""Tick layouts: a repeated device column is recognised, anything else is not."""

from __future__ import annotations

import numpy as np

from common import schema
from common.layout import Layout, Layouts


def _grid(names: list[bytes], ticks: int) -> np.ndarray:
    rows = schema.empty_rows(len(names) * ticks)
    rows["device"] = np.tile(np.array(names, schema.DEVICE_DTYPE), ticks)
    return rows


def test_layout_counts_ticks_of_a_grid():
    """A column repeating one tick's devices in order gives its tick count; a reordered one None."""
    rows = _grid([b"host-01", b"host-02", b"host-03"], 4)
    layout = Layout.of(rows["device"])
    assert layout is not None and len(layout) == 3
    assert layout.ticks(rows["device"]) == 4
    swapped = rows.copy()
    swapped["device"][[4, 5]] = swapped["device"][[5, 4]]
    assert layout.ticks(swapped["device"]) is None
    assert Layout.of(swapped["device"]) is None


def test_layouts_tell_a_longer_id_from_its_prefix():
    """An id that only extends a known one (same first bytes) is not taken for it."""
    known = Layouts()
    rows = _grid([b"host-01", b"host-02"], 2)
    known.remember(rows["device"])
    assert known.known(rows["device"])
    longer = rows.copy()
    longer["device"][3] = b"host-02" + b"x" * 40
    assert not known.known(longer["device"])


def test_validate_still_refuses_a_bad_id_after_a_valid_layout():
    """A layout found valid does not let a later column with one bad id through."""
    rows = _grid([b"host-01", b"host-02"], 3)
    schema.validate(rows)
    bad = rows.copy()
    bad["device"][4] = b" host-01"
    assert schema.problems(bad)[0][0] == "device"
