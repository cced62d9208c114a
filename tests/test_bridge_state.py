"""The MQTT bridge's state file: where it got to per device, kept across restarts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bridge.state import StateFile
from common.errors import StartupError


def test_saved_then_loaded_by_the_next_run(tmp_path: Path):
    """What one run saves, the next loads; devices not seen by a run keep their place."""
    path = tmp_path / "data" / "bridge.state.json"
    first = StateFile(path)
    first.open()  # creates the folder and an empty state
    assert first.saved == {}
    first.save({"host-01": (10, 1000), "host-02": (7, 700)})
    first.close()
    second = StateFile(path)
    second.open()
    assert second.saved == {"host-01": (10, 1000), "host-02": (7, 700)}
    second.save({"host-01": (12, 1200)})
    second.close()
    assert StateFile(path).load() == {"host-01": (12, 1200), "host-02": (7, 700)}
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "bridge.state.json",
        "bridge.state.json.lock",
    ]


def test_a_second_bridge_on_the_same_state_file_is_refused(tmp_path: Path):
    """Two bridges cannot share a state file: the second stops at start, naming it."""
    path = tmp_path / "state.json"
    first = StateFile(path)
    first.open()
    try:
        with pytest.raises(StartupError, match=r"state\.json is in use by another bridge"):
            StateFile(path).open()
    finally:
        first.close()
    third = StateFile(path)
    third.open()  # free again once the first let go
    third.close()


def test_a_file_that_is_not_a_state_file_is_ignored(tmp_path: Path, caplog):
    """A torn or foreign file is reported and the bridge starts from the live samples."""
    path = tmp_path / "state.json"
    for text in ['{"version": 1, "devices": {"host-01": [1', '{"version": 9}', "[]"]:
        path.write_text(text)
        with caplog.at_level(logging.WARNING):
            assert StateFile(path).load() == {}
        assert "not a bridge state file" in caplog.text
    assert json.loads(path.read_text()) == []  # left alone until the bridge saves


def test_an_unwritable_state_file_fails_at_start(tmp_path: Path):
    """A state file that cannot be written stops the bridge at start, naming it."""
    (tmp_path / "data").write_text("a file where the folder should be")
    with pytest.raises(StartupError, match=r"cannot write the state file .*data/state.json"):
        StateFile(tmp_path / "data" / "state.json").open()
