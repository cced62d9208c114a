"""The scorer under load: CPU per sample at 1000 devices x 1 kHz plus 10,000 alerts/s,
against the logger's CPU per row in the same run.

    python bench/scorer.py                  # 1000 devices x 1 kHz, 10 k alerts/s, 20 s
    python bench/scorer.py --smoke          # 100 devices x 100 Hz, 1 k alerts/s, 3 s

Producer, logger and scorer run as processes on ipc endpoints in a temp dir; this script
plays the broadcasters, sending alerts over ZeroMQ as they do (batches every 10 ms). It
reports each process's CPU, the scorer's and the logger's CPU microseconds per sample and
their ratio, whether the scorer kept up (samples missed, with the ticks the producer skipped
apart; alerts lost) and how long one refresh of the scores took at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import zmq  # noqa: E402

from bench._util import Usage, ready, start, stop, table, write  # noqa: E402
from common import alerts  # noqa: E402


def figures(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    pairs = (line.rsplit(" ", 1) for line in text.splitlines() if line and line[0] != "#")
    return {name: float(value) for name, value in pairs}


def send_alerts(endpoint: str, rate: int, devices: int, stop_at: threading.Event,
                sent: list[int]) -> None:
    """Alerts as broadcasters send them: numbered batches, every 10 ms."""
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.linger = 0
    sock.connect(endpoint)
    rng = np.random.default_rng(1)
    per_batch = max(1, rate // 100)
    number = 0
    next_at = time.monotonic()
    while not stop_at.is_set():
        records = np.zeros(per_batch, alerts.RECORD)
        ids = rng.integers(1, devices + 1, per_batch)
        records["device"] = [f"host-{i:02d}".encode() if devices < 100 else
                             f"host-{i:0{len(str(devices))}d}".encode() for i in ids]
        records["detector"] = b"bench"
        records["seq"] = rng.integers(0, 1000, per_batch)
        records["ts_ms"] = alerts.NO_TIME
        records["score"] = rng.random(per_batch)
        records["received_ms"] = int(time.time() * 1000)
        sock.send_multipart(alerts.encode(records, 7, number))
        number += per_batch
        next_at += 0.01
        time.sleep(max(0.0, next_at - time.monotonic()))
    sent.append(number)
    sock.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--alerts", type=int, default=10_000, help="alerts per second")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--keep", help="run in this folder and keep the processes' logs there")
    args = parser.parse_args()
    if args.smoke:
        args.devices, args.rate, args.alerts, args.duration = 100, 100, 1000, 3.0
    parser_keep = args.keep
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(parser_keep) if parser_keep else Path(tmp)
        cwd.mkdir(parents=True, exist_ok=True)
        pub, catchup = f"ipc://{cwd}/samples.sock", f"ipc://{cwd}/catchup.sock"
        alert_end = f"ipc://{cwd}/alerts.sock"
        bus = ["--zmq-pub", pub, "--zmq-catchup", catchup]
        scorer = start("scorer", *bus, "--zmq-alerts", alert_end, "--report", "report.json",
                       "--picture", "", "--table", "off", "--every", "5", "--metrics-port", "any",
                       cwd=cwd)
        logger = start("logger", *bus, "--csv", "log.csv", "--metrics-port", "any", cwd=cwd)
        procs = [scorer, logger]
        try:
            scorer_port = ready(scorer)["metrics_port"]
            logger_port = ready(logger)["metrics_port"]
            producer = start("producer", *bus, "--zmq-control", f"ipc://{cwd}/control.sock",
                             "--devices", str(args.devices), "--rate", str(args.rate),
                             "--seed", "1", cwd=cwd)
            procs.append(producer)
            ready(producer)
            halt, sent = threading.Event(), []
            sender = threading.Thread(target=send_alerts,
                                      args=(alert_end, args.alerts, args.devices, halt, sent))
            time.sleep(min(2.0, args.duration / 2))  # past start-up
            usage = {name: Usage(p.pid) for name, p in
                     (("producer", producer), ("logger", logger), ("scorer", scorer))}
            before = figures(scorer_port), figures(logger_port)
            sender.start()
            deadline = time.monotonic() + args.duration
            while time.monotonic() < deadline:
                for u in usage.values():
                    u.sample()
                time.sleep(0.2)
            cpu = {name: u.report() for name, u in usage.items()}
            after = figures(scorer_port), figures(logger_port)
            halt.set()
            sender.join()
            time.sleep(1.0)
            final = figures(scorer_port)
        finally:
            stop(*procs)
    samples = after[0]["stream_samples_received_total"] - before[0]["stream_samples_received_total"]
    rows = after[1]["stream_rows_written_total"] - before[1]["stream_rows_written_total"]
    wall = cpu["scorer"]["wall_s"]
    us_sample = cpu["scorer"]["cpu_percent"] / 100 * wall / max(samples, 1) * 1e6
    us_row = cpu["logger"]["cpu_percent"] / 100 * wall / max(rows, 1) * 1e6
    result = {
        "devices": args.devices, "rate": args.rate, "alerts_per_s": args.alerts,
        "duration_s": args.duration,
        "samples_per_s": samples / wall, "rows_per_s": rows / wall,
        "alerts_sent": sent[0] if sent else 0,
        "alerts_received": final["stream_alerts_received_total"],
        "alerts_lost": final["stream_alerts_lost_total"],
        "samples_missed": final["stream_samples_missed_total"],
        "samples_not_produced": final.get('stream_gap_samples_total{reason="not_produced"}', 0.0),
        "refresh_s": final["stream_scorer_refresh_seconds"],
        "cpu": cpu,
        "scorer_us_per_sample": us_sample, "logger_us_per_row": us_row,
        "ratio": us_sample / us_row if us_row else None,
    }
    print(table([
        ["process", "CPU %", "per sample (us)", "rate (/s)"],
        ["scorer", f"{cpu['scorer']['cpu_percent']:.0f}", f"{us_sample:.2f}",
         f"{samples / wall:,.0f} samples + {args.alerts:,} alerts"],
        ["logger", f"{cpu['logger']['cpu_percent']:.0f}", f"{us_row:.2f}",
         f"{rows / wall:,.0f} rows"],
        ["producer", f"{cpu['producer']['cpu_percent']:.0f}", "", ""],
    ]))
    print(f"scorer / logger per sample: {result['ratio']:.2f}x; samples missed "
          f"{result['samples_missed']:.0f} (not produced: {result['samples_not_produced']:.0f}); "
          f"alerts sent {result['alerts_sent']}, received "
          f"{result['alerts_received']:.0f}, lost {result['alerts_lost']:.0f}; one refresh of "
          f"the scores {result['refresh_s']:.2f} s")
    print(f"written to {write('scorer', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
