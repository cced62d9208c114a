"""`LiveDataset`: the live stream as a River dataset, so River's anomaly detectors and its
progressive evaluation run on it unchanged:

    evaluate.progressive_val_score(LiveDataset(url, count=5000), detector, metrics.ROCAUC())

Imported on first use (`streamsim.LiveDataset`): River itself takes seconds to import.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from river.datasets import base

from streamsim.live import CONNECT_TIMEOUT_S, DEFAULT_URL, Stream, stream
from streamsim.online import METRICS, Pair, xy


class LiveDataset(base.Dataset):
    """The broadcaster's samples at `url` as River's `(x, y)` pairs, `x` the four metrics of
    a sample (a missing value left out), `y` whether it is anomalous (see
    `streamsim.online`). Each iteration opens a `stream` with these options (`count`,
    `timeout`, `devices`, ...), so a count or a timeout ends it; `last` is the stream of the
    latest iteration (its `gaps`, `received`, `connections`)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        devices: Iterable[str] | None = None,
        count: int | None = None,
        timeout: float | None = None,
        raise_on_gap: bool = False,
        token: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
    ) -> None:
        super().__init__(task=base.BINARY_CLF, n_features=len(METRICS), n_samples=count)
        self.url = url
        self._options: dict[str, Any] = dict(
            labels=True,  # y is the label: a server that never sends labels refuses at once
            devices=devices,
            count=count,
            timeout=timeout,
            raise_on_gap=raise_on_gap,
            token=token,
            connect_timeout=connect_timeout,
        )
        self.last: Stream | None = None

    def __iter__(self) -> Iterator[Pair]:
        with stream(self.url, **self._options) as live:
            self.last = live
            for sample in live:
                yield xy(sample)
