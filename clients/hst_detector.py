#!/usr/bin/env python3
"""A detector built on River's HalfSpaceTrees (Tan, Ting and Liu, 2011), an online
isolation forest: each device's four metrics, scaled online to [0, 1], are scored and
learnt one sample at a time; a score above THRESHOLD is an alert. A device that stops
reporting values raises a dropout alert.

    python clients/hst_detector.py                       # the blind stream on :8765
    python clients/hst_detector.py --csv data/train.csv --out alerts.csv   # a backfill
"""

from __future__ import annotations

import argparse
import os
import sys

from river import anomaly, compose, preprocessing

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from alerting import METRICS, run_live, run_offline  # noqa: E402


class HalfSpaceTreesDetector:
    def __init__(self, threshold: float = 0.9, window: int = 250, seed: int = 42) -> None:
        self.threshold = threshold
        self.model = compose.Pipeline(
            preprocessing.MinMaxScaler(),
            anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=window, seed=seed),
        )
        self.seen = 0
        self.warmup = window  # the trees score nothing useful before one window is learnt

    def update(self, sample: dict) -> tuple[float, str | None] | None:
        values = {m: sample.get(m) for m in METRICS}
        if all(v is None for v in values.values()):
            return 1.0, "dropout"
        features = {m: float(v) for m, v in values.items() if v is not None}
        score = self.model.score_one(features)
        self.model.learn_one(features)
        self.seen += 1
        if self.seen > self.warmup and score > self.threshold:
            return score, None
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("STREAM_CLIENT_URL", "ws://localhost:8765"))
    parser.add_argument("--name", default="hst", help="the detector's name in the report")
    parser.add_argument("--threshold", type=float, default=0.9, help="score above which to alert")
    parser.add_argument("--window", type=int, default=250, help="samples per reference window")
    parser.add_argument("--count", type=int, default=None, help="stop after this many samples")
    parser.add_argument("--csv", help="run over this log or backfill instead of the stream")
    parser.add_argument("--out", default="alerts.csv", help="with --csv: the alerts file")
    args = parser.parse_args()
    make = lambda: HalfSpaceTreesDetector(args.threshold, args.window)  # noqa: E731
    if args.csv:
        return run_offline(make, args.csv, args.out, args.name)
    return run_live(make, args.url, args.name, args.count)


if __name__ == "__main__":
    sys.exit(main())
