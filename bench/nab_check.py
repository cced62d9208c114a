"""Check the scorer against NAB's own published per-file results.

    python bench/nab_check.py PATH/TO/NAB [--detectors numenta,null,random]

For every results file of each detector, and each of NAB's three profiles at the
threshold NAB published for it, the scorer's raw score and TP/TN/FP/FN/total counts are
compared with NAB's `results/<detector>/<detector>_<profile>_scores.csv`, to the precision
NAB printed. Needs a checkout of github.com/numenta/NAB (data, labels and results).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from scorer import nab  # noqa: E402
from scorer.files import read_alerts, truth_from_files  # noqa: E402
from scorer.report import evaluate  # noqa: E402
from scorer.settings import Settings  # noqa: E402


def printed_match(ours: float, text: str) -> bool:
    """Whether `ours` shows as NAB's printed number at the digits NAB printed."""
    theirs = float(text)
    digits = text.lower().split("e")[0].lstrip("-")
    significant = len(digits.replace(".", "").lstrip("0")) or 1
    scale = abs(theirs) if theirs else 1.0
    return abs(ours - theirs) <= 0.51 * 10 ** (np.floor(np.log10(scale)) - significant + 1) + 1e-12


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nab", type=Path)
    parser.add_argument("--detectors", default="")
    parser.add_argument("--out", type=Path, default=Path("bench/results/nab_check.json"))
    args = parser.parse_args()
    windows = args.nab / "labels" / "combined_windows.json"
    names = [d for d in args.detectors.split(",") if d] or sorted(
        p.name for p in (args.nab / "results").iterdir() if p.is_dir()
    )
    checked = mismatched = 0
    per_detector: dict[str, list[int]] = {}
    failures: list[str] = []
    started = time.monotonic()
    for detector in names:
        tables = {}
        for profile in nab.PROFILES:
            path = args.nab / "results" / detector / f"{detector}_{profile}_scores.csv"
            if path.exists():
                tables[profile] = pd.read_csv(path, dtype=str)
        if not tables:
            continue
        files = tables["standard"]["File"].dropna()
        for relative in files[files != ""].tolist():
            folder, name = relative.rsplit("/", 1)
            results = args.nab / "results" / detector / folder / f"{detector}_{name}"
            truth, key = truth_from_files(windows, args.nab / "data" / relative)
            alerts = read_alerts(results, nab_device=key, detector=detector)
            for profile, table in tables.items():
                row = table[table["File"] == relative].iloc[0]
                settings = Settings(threshold=float(row["Threshold"]))
                got = evaluate(truth, alerts, settings).nab[profile]
                ok = (
                    printed_match(got["score"], row["Score"])
                    and all(int(got[k]) == int(row[c]) for k, c in
                            (("tp", "TP"), ("tn", "TN"), ("fp", "FP"), ("fn", "FN")))
                    # NAB's older results count every row, its current code the scored ones
                    and int(row["Total_Count"]) in (got["total"], got["scored"])
                )
                checked += 1
                tally = per_detector.setdefault(detector, [0, 0])
                tally[0] += 1
                tally[1] += not ok
                if not ok:
                    mismatched += 1
                    failures.append(f"{detector} {profile} {relative}: ours {got}, NAB {dict(row)}")
        done, bad = per_detector.get(detector, [0, 0])
        print(f"{detector}: {done} results checked, {bad} differ", flush=True)
    detectors = {d: {"checked": c, "differ": b} for d, (c, b) in per_detector.items()}
    summary = {"checked": checked, "mismatched": mismatched, "detectors": detectors,
               "seconds": round(time.monotonic() - started, 1), "failures": failures[:50]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{checked} per-file results compared with NAB's published ones; {mismatched} differ")
    for line in failures[:20]:
        print(line)
    return 1 if mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
