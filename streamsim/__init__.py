"""streamsim: the stream simulator from Python, in one import.

    samples, windows = streamsim.generate("7d", devices=10, seed=42, start="2025-08-04")
    samples, windows, gaps = streamsim.read_log("data/stream_log.csv")
    for sample in streamsim.stream("ws://localhost:8765", count=100): ...
    report = streamsim.score(alerts, windows, samples)  # or Pipeline(scorer=True).report()

See docs/python.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamsim.generate import Dataset, generate
from streamsim.live import (
    DEFAULT_URL,
    AsyncStream,
    Gap,
    GapError,
    Stream,
    astream,
    stream,
    to_frame,
)
from streamsim.logs import Log, read_log
from streamsim.online import pairs, xy
from streamsim.options import OptionError
from streamsim.pipeline import Pipeline
from streamsim.scoring import LiveReport, score

if TYPE_CHECKING:
    from streamsim.learning import LiveDataset

__all__ = [
    "DEFAULT_URL",
    "LiveDataset",
    "LiveReport",
    "AsyncStream",
    "Dataset",
    "Gap",
    "GapError",
    "Log",
    "OptionError",
    "Pipeline",
    "Stream",
    "astream",
    "generate",
    "pairs",
    "read_log",
    "score",
    "stream",
    "to_frame",
    "xy",
]


def __getattr__(name: str) -> object:
    """`LiveDataset` is imported on first use: it needs River, which takes seconds to import."""
    if name == "LiveDataset":
        from streamsim.learning import LiveDataset

        return LiveDataset
    raise AttributeError(f"module 'streamsim' has no attribute {name!r}")
