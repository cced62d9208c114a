"""What the reference detectors share: reading the blind stream and sending alerts back,
or running the same detector over a log or backfill CSV and writing an alerts file.

A detector is any object with `update(sample) -> (score, kind) | None`, called for each
sample of one device in seq order (a dict with timestamp, the metrics, device and seq:
never a label); it returns an alert (a score, and a kind guess or None) or None.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable
from urllib.parse import urlencode

LABELS = ("anomaly", "anomaly_id", "anomaly_root", "event")
METRICS = ("cpu", "mem", "disk_io", "net")


class Fleet:
    """One detector per device, made on its first sample."""

    def __init__(self, make: Callable[[], object]) -> None:
        self.make = make
        self.detectors: dict[str, object] = {}

    def update(self, sample: dict) -> dict | None:
        device = sample["device"]
        detector = self.detectors.get(device)
        if detector is None:
            detector = self.detectors[device] = self.make()
        found = detector.update(sample)
        if found is None:
            return None
        score, kind = found
        alert = {"device": device, "seq": sample["seq"], "score": round(float(score), 6)}
        if kind is not None:
            alert["kind"] = kind
        return alert


def run_live(make: Callable[[], object], url: str, name: str, count: int | None = None) -> int:
    """Read the blind stream at `url`, send an alert message per frame that raised any;
    reconnect and resume after the last sample of each device if the server goes away.
    Prints one line of totals at the end (on stderr)."""
    import signal

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # a supervisor's stop ends it like Ctrl-C
    fleet = Fleet(make)
    last: dict[str, int] = {}
    totals = {"samples": 0, "alerts": 0, "acked": 0, "errors": 0, "labelled": 0}
    try:
        while count is None or totals["samples"] < count:
            query = [("labels", "0"), ("batch", "1"), ("detector", name), ("history", "0")]
            query += [("since", f"{d}:{s}") for d, s in last.items()]
            try:
                with connect(f"{url.rstrip('/')}/?{urlencode(query)}", max_size=None) as ws:
                    for message in ws:
                        data = json.loads(message)
                        if isinstance(data, dict):  # an acknowledgement, an error, a gap
                            totals["acked"] += data.get("alerted", 0)
                            if "error" in data:
                                totals["errors"] += 1
                                print(f"{name}: {data['error']}", file=sys.stderr)
                            continue
                        found = []
                        for sample in data:
                            if any(key in sample for key in LABELS):
                                totals["labelled"] += 1
                            if sample["seq"] <= last.get(sample["device"], -1):
                                continue
                            last[sample["device"]] = sample["seq"]
                            totals["samples"] += 1
                            alert = fleet.update(sample)
                            if alert is not None:
                                found.append(alert)
                        if found:
                            ws.send(json.dumps({"alert": found}))
                            totals["alerts"] += len(found)
                        if count is not None and totals["samples"] >= count:
                            break
            except (OSError, ConnectionClosed):
                time.sleep(0.5)  # the server restarts: resume where we were
    except KeyboardInterrupt:
        pass
    finally:
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in totals.items()), file=sys.stderr,
              flush=True)
    return 0


def run_offline(make: Callable[[], object], source: str, out: str, name: str) -> int:
    """Run the detector over a CSV log or backfill (its labels are never read) and write
    an alerts file: device, seq, score, kind, detector."""
    import pandas as pd

    fleet = Fleet(make)
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["device", "seq", "score", "kind", "detector"])
        for chunk in pd.read_csv(source, usecols=["timestamp", *METRICS, "device", "seq"],
                                 dtype={"device": str}, chunksize=200_000,
                                 float_precision="round_trip"):
            chunk = chunk.astype(object).where(chunk.notna(), None)
            for sample in chunk.to_dict("records"):
                alert = fleet.update(sample)
                if alert is not None:
                    writer.writerow([alert["device"], alert["seq"], alert["score"],
                                     alert.get("kind", ""), name])
    return 0
