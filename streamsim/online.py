"""Samples as online-learning pairs in River's convention: `(x, y)`, `x` a sample's metrics
as a dict and `y` whether the sample is anomalous.

A metric with no value (a dropout, a device down for maintenance) is left out of `x`, as
River expects of a missing feature (its detectors then walk around it), rather than given
as NaN, which would compare false with every threshold. A planned event (maintenance, a
deploy, a load test) is not an anomaly: `y` is False there, as the labels say.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pandas as pd

from streamsim._isolated import project

METRICS: tuple[str, ...] = project("common.schema").METRICS

Pair = tuple[dict[str, float], bool]


def xy(sample: Mapping[str, Any]) -> Pair:
    """One sample (a dict from `stream`, or a row's values) as `(x, y)`."""
    x = {}
    for metric in METRICS:
        value = sample.get(metric)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            x[metric] = float(value)
    anomaly = sample.get("anomaly")
    return x, not (anomaly is None or anomaly is pd.NA or anomaly != anomaly)


def pairs(samples: pd.DataFrame | Iterable[Mapping[str, Any]]) -> Iterator[Pair]:
    """`(x, y)` for each sample, in order: of a DataFrame from `generate` or `read_log` (a
    training set replayed to an online model), or of samples from `stream`. The anomaly
    label must be there (not with `labels=False`)."""
    if isinstance(samples, pd.DataFrame):
        if "anomaly" not in samples:
            raise ValueError("the samples have no anomaly column: y needs the labels")
        columns = [m for m in METRICS if m in samples]
        labelled = samples["anomaly"].notna().to_numpy()
        for values, y in zip(samples[columns].itertuples(index=False), labelled, strict=True):
            yield {m: v for m, v in zip(columns, values, strict=True) if v == v}, bool(y)
        return
    for sample in samples:
        if "anomaly" not in sample:
            raise ValueError("a sample has no anomaly label: y needs the labels")
        yield xy(sample)
