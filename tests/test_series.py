"""The producer's series: the tick grid and seq numbers across restarts."""

from __future__ import annotations

import json

import numpy as np

from producer.sources import series as store
from producer.sources.series import Series


def test_ticks_are_exactly_one_period_apart_on_an_absolute_grid():
    """No drift: tick k is at origin + k/rate however large k gets."""
    s = Series(seed=1, devices=1, rate=100.0, origin_ms=1_000_000, wall_origin_ms=0, seq_base=0)
    ticks = np.array([0, 1, 2, 360_000_000])
    assert s.time_ms(ticks).tolist() == [1_000_000, 1_000_010, 1_000_020, 1_000_000 + 3_600_000_000]


def test_tick_lookup():
    """At 3 Hz, where tick 1 is due at 333.3 ms, tick_due_at_or_after gives the first tick due at or
    after a time and last_tick_due_by the last tick due by it."""
    s = Series(seed=1, devices=1, rate=3.0, origin_ms=0, wall_origin_ms=0, seq_base=0)
    assert s.tick_due_at_or_after(0) == 0
    assert s.tick_due_at_or_after(1) == 1
    assert s.tick_due_at_or_after(334) == 2
    assert s.last_tick_due_by(333.4) == 1
    assert s.last_tick_due_by(332) == 0


def test_speed_runs_simulated_time_faster_with_exact_spacing():
    """At speed 3600 a 1 Hz series has 3600 ticks per wall second, 1 simulated second apart."""
    s = Series(
        seed=1, devices=1, rate=1.0, origin_ms=10**12, wall_origin_ms=0, seq_base=0, speed=3600
    )
    assert s.last_tick_due_by(1000) == 3600
    assert np.all(np.diff(s.time_ms(np.arange(3601))) == 1000)


def test_restart_with_same_settings_continues_the_series(tmp_path):
    """A new series starts on the next whole wall second with seq_base 0 and is saved, and a later
    restart with the same settings returns it unchanged, random seed included."""
    path = tmp_path / "state.json"
    first, continued = store.continue_or_start(path, None, 2, 1.0, 1_000_000.5)
    assert not continued and first.origin_ms == 1_001_000 and first.seq_base == 0
    assert first.wall_origin_ms == 1_001_000
    again, continued = store.continue_or_start(path, None, 2, 1.0, 9_000_000)
    assert continued and again == first  # the random seed was remembered too


def test_new_settings_start_a_new_series_after_every_used_seq(tmp_path):
    """Changing the rate never reuses a seq the old series could have published."""
    path = tmp_path / "state.json"
    old, _ = store.continue_or_start(path, 5, 1, 100.0, 0)
    now = 60_000  # 6,000 ticks later
    new, continued = store.continue_or_start(path, 5, 1, 1.0, now)
    assert not continued
    assert new.seq_base > old.seq_base + old.last_tick_due_by(now)
    assert json.loads(path.read_text())["rate"] == 1.0


def test_unreadable_state_is_ignored(tmp_path):
    """A state file that is not valid JSON is ignored: a new series starts with the given seed
    instead of an error."""
    path = tmp_path / "state.json"
    path.write_text("{not json")
    s, continued = store.continue_or_start(path, 3, 1, 1.0, 0)
    assert not continued and s.seed == 3


def test_a_requested_start_is_part_of_the_series(tmp_path):
    """--start sets simulated time; restarting with another start begins a new series."""
    path = tmp_path / "state.json"
    s, _ = store.continue_or_start(path, 1, 1, 1.0, 5_000, start_ms=42_000)
    assert s.time_ms(np.array([0, 2])).tolist() == [42_000, 44_000]
    again, continued = store.continue_or_start(path, 1, 1, 1.0, 9_000, start_ms=42_000)
    assert continued
    other, continued = store.continue_or_start(path, 1, 1, 1.0, 9_000, start_ms=0)
    assert not continued and other.seq_base > 0
