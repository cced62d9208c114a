#!/usr/bin/env python3
"""A rolling z-score detector: alerts when a metric is more than THRESHOLD standard
deviations from its mean over the device's last WINDOW samples, or when a device stops
reporting values (a dropout).

    python clients/zscore_detector.py                       # the blind stream on :8765
    python clients/zscore_detector.py --csv data/train.csv --out alerts.csv   # a backfill
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import deque

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from alerting import METRICS, run_live, run_offline  # noqa: E402


class RollingZ:
    """Mean and variance of the last `size` values, kept as running sums."""

    def __init__(self, size: int) -> None:
        self.values: deque[float] = deque(maxlen=size)
        self.total = self.squares = 0.0

    def z(self, value: float) -> float | None:
        """How many standard deviations `value` is from the window's mean (None while
        the window fills), then take it in."""
        n = len(self.values)
        z = None
        if n == self.values.maxlen:
            mean = self.total / n
            var = max(self.squares / n - mean * mean, 0.0)
            z = (value - mean) / math.sqrt(var) if var > 1e-12 else (0.0 if value == mean else 99.0)
        if n == self.values.maxlen:
            old = self.values[0]
            self.total -= old
            self.squares -= old * old
        self.values.append(value)
        self.total += value
        self.squares += value * value
        return z


class ZScoreDetector:
    def __init__(self, window: int = 60, threshold: float = 4.0) -> None:
        self.threshold = threshold
        self.windows = {m: RollingZ(window) for m in METRICS}

    def update(self, sample: dict) -> tuple[float, str | None] | None:
        values = {m: sample.get(m) for m in METRICS}
        if all(v is None for v in values.values()):
            return 1.0, "dropout"
        worst = 0.0
        for metric, value in values.items():
            if value is not None:
                z = self.windows[metric].z(float(value))
                if z is not None:
                    worst = max(worst, abs(z))
        if worst > self.threshold:
            return worst, None
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("STREAM_CLIENT_URL", "ws://localhost:8765"))
    parser.add_argument("--name", default="zscore", help="the detector's name in the report")
    parser.add_argument("--window", type=int, default=60, help="samples per rolling window")
    parser.add_argument("--threshold", type=float, default=4.0, help="standard deviations")
    parser.add_argument("--count", type=int, default=None, help="stop after this many samples")
    parser.add_argument("--csv", help="run over this log or backfill instead of the stream")
    parser.add_argument("--out", default="alerts.csv", help="with --csv: the alerts file")
    args = parser.parse_args()
    make = lambda: ZScoreDetector(args.window, args.threshold)  # noqa: E731
    if args.csv:
        return run_offline(make, args.csv, args.out, args.name)
    return run_live(make, args.url, args.name, args.count)


if __name__ == "__main__":
    sys.exit(main())
