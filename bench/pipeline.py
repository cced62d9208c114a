"""End-to-end throughput: producer -> ZeroMQ -> logger -> CSV, with the broadcaster serving
a client subscribed to one device, against the naive design and the raw ZeroMQ ceiling.

    python bench/pipeline.py [--devices 1000 --rate 1000 --duration 60] [--quick | --smoke]
    python bench/pipeline.py --producers 2 --loggers 2     # scaled out: shards of the devices
    python bench/pipeline.py --compare [--producers N --loggers M]

Throughput is the loggers' rows written per second (read from their /metrics, summed);
each process's CPU and peak RSS are sampled. Baselines, same run: pandas one-row appends
(the spec's design) and plain pyzmq PUB/SUB moving batched numpy records. Floors, same
run: the CPU the model alone takes to generate the producer's blocks, and the CSV
rendering alone takes for them (what no design of the producer or the logger can skip).

With --producers N, producer I of N (`--shard I/N`) simulates its share of the devices on
its own endpoints; with --loggers M, logger J of M (`--shard J/M`) connects to all the
producers and logs its share to `stream_log.J-of-M.csv`; the broadcaster connects to all
the producers. --compare runs 1 producer / 1 logger and then N / M (2 / 2 unless given)
with the same load, one after the other, and prints them side by side (it skips the naive
and raw-pyzmq baselines). Results: bench/results/pipeline.json (1 / 1), pipeline-NpMl.json,
pipeline-compare.json.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import click
import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import Usage, ready, start, stop, table, write  # noqa: E402
from bench.backfill import naive  # noqa: E402
from common.shards import GROUPS  # noqa: E402


def scrape(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(match[1]) if match else 0.0


def floors(devices: int, rate: float, seconds: float = 3.0) -> dict[str, float]:
    """CPU us per sample of the work no design can skip, measured here in this process:
    the model generating the producer's blocks (as its prefetch does) and the CSV
    rendering of them (the logger's one unavoidable step besides the write)."""
    from common import render
    from producer.model.anomalies import SIMULATED_KINDS
    from producer.sources.series import Series
    from producer.sources.sim import SimSource

    series = Series(seed=1, devices=devices, rate=rate, origin_ms=0, wall_origin_ms=0, seq_base=0)
    source = SimSource(series, 1.0, SIMULATED_KINDS)
    block = source.prefetch_ticks
    render.csv_rows(source.batch(0, block - 1))  # compiled code loaded, caches warm
    model = rendering = 0.0
    samples, first = 0, block
    while model + rendering < seconds:
        began = time.process_time()
        batch = source.batch(first, first + block - 1)
        middle = time.process_time()
        render.csv_rows(batch)
        model += middle - began
        rendering += time.process_time() - middle
        samples += len(batch)
        first += block
    return {
        "model_us_per_sample": model / samples * 1e6,
        "csv_us_per_row": rendering / samples * 1e6,
    }


def zmq_ceiling(seconds: float, rows_per_message: int = 1000) -> float:
    """Samples/s plain pyzmq moves when a message carries a batch of 88-byte records."""
    context = zmq.Context()
    pub, sub = context.socket(zmq.PUB), context.socket(zmq.SUB)
    pub.sndhwm = sub.rcvhwm = 100_000
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    time.sleep(0.3)
    payload = np.zeros(rows_per_message, dtype=[("a", "<i8"), ("b", "S72"), ("c", "<f8")]).tobytes()
    done = threading.Event()
    received = [0]

    def receive() -> None:
        while not done.is_set():
            if sub.poll(100):
                sub.recv(copy=False)
                received[0] += rows_per_message

    thread = threading.Thread(target=receive)
    thread.start()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pub.send(payload, copy=False)
    time.sleep(0.2)
    done.set()
    thread.join()
    pub.close(0)
    sub.close(0)
    context.term()
    return received[0] / seconds


def label(kind: str, index: int, count: int) -> str:
    """A process's name in the tables: `producer`, or `producer 2/3` when there are several."""
    return kind if count == 1 else f"{kind} {index}/{count}"


def describe(producers: int, loggers: int) -> str:
    p, lg = "producer" + "s" * (producers > 1), "logger" + "s" * (loggers > 1)
    return f"{producers} {p} / {loggers} {lg}"


def launch(
    work: Path, devices: int, rate: float, producers: int, loggers: int
) -> tuple[list[subprocess.Popen], list[subprocess.Popen], subprocess.Popen]:
    """Start N producers, M loggers and a broadcaster in `work`; every endpoint is an ipc
    socket there, the later producers' derived from the first's (pub-2.sock, ...)."""
    zmq_pub, catchup, control = (f"ipc://{work}/{n}.sock" for n in ("pub", "catchup", "control"))
    fan_in = ["--producers", str(producers)] if producers > 1 else []
    producer_procs = [
        start(
            "producer",
            "--zmq-pub",
            zmq_pub,
            "--zmq-catchup",
            catchup,
            "--zmq-control",
            control,
            *(["--shard", f"{i}/{producers}"] if producers > 1 else []),
            "--devices",
            str(devices),
            "--rate",
            str(rate),
            "--anomaly-rate",
            "0",
            "--metrics-port",
            "any",
            cwd=work,
        )
        for i in range(1, producers + 1)
    ]
    logger_procs = [
        start(
            "logger",
            "--zmq-pub",
            zmq_pub,
            "--zmq-catchup",
            catchup,
            *fan_in,
            *(["--shard", f"{j}/{loggers}"] if loggers > 1 else []),
            "--metrics-port",
            "any",
            "--flush-interval",
            "0.5",
            cwd=work,
        )
        for j in range(1, loggers + 1)
    ]
    broadcaster = start("broadcaster", "--zmq-pub", zmq_pub, *fan_in, "--ws-port", "0", cwd=work)
    return producer_procs, logger_procs, broadcaster


def drain(ports: list[int], limit: float = 60.0) -> float:
    """Once the producers have stopped: wait until the loggers write nothing more (they may
    be behind), at most `limit` s; how long it took."""
    began = time.monotonic()
    last = None
    while time.monotonic() - began < limit:
        try:
            written = sum(scrape(port, "stream_rows_written_total") for port in ports)
        except OSError:  # a logger is gone
            break
        if written == last:
            break
        last = written
        time.sleep(1)
    return time.monotonic() - began


def log_problems(work: Path) -> dict[str, dict]:
    """Warnings, errors and tracebacks in the processes' logs: count and the first few."""
    found = {}
    for module in ("producer", "logger", "broadcaster"):
        path = work / f"{module}.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        bad = [s for s in lines if re.search(r" (WARNING|ERROR|CRITICAL) |^Traceback", s)]
        if bad:
            found[module] = {"count": len(bad), "first": bad[:3]}
    return found


def stopped_total(work: Path, module: str, pattern: str, count: int) -> int | None:
    """A figure summed over the `count` processes' last log lines ("stopped after writing
    N rows"); None unless each of them wrote one."""
    path = work / f"{module}.log"
    found = re.findall(pattern, path.read_text(errors="replace") if path.exists() else "")
    return sum(int(n) for n in found) if len(found) == count else None


def audit(csvs: list[Path], loggers: int) -> dict:
    """`python -m logger verify` over every logger's files at once, and which logger holds
    which devices: each must hold only its own share (`--shard J/M`)."""
    from common.shards import Shard
    from logger.sink import rotated_files
    from logger.verify import verify as check

    parts = [[*rotated_files(csv), csv] for csv in csvs]
    report = check([p for files in parts for p in files])
    result = {
        "ok": report.ok,
        "rows": report.rows,
        "devices": report.devices,
        "recorded_gaps": report.recorded,
        "report": report.lines(),
    }
    if loggers > 1:
        import pandas as pd

        foreign = {}
        for j, files in enumerate(parts, 1):
            shard = Shard(j, loggers)
            seen: set[str] = set()
            for path in files:
                if path.exists():
                    frame = pd.read_csv(path, usecols=["device"], dtype=str)
                    seen.update(frame["device"].unique())
            wrong = sorted(d for d in seen if not shard.owns(d))
            if wrong:
                foreign[f"logger {j}/{loggers}"] = {"count": len(wrong), "first": wrong[:5]}
        result["foreign_devices"] = foreign
    return result


def run(
    work: Path,
    devices: int,
    rate: float,
    duration: float,
    producers: int,
    loggers: int,
    verify: bool,
    settle: float = 3.0,
) -> dict:
    """One configuration: start it, let it settle for `settle` s, measure for `duration`,
    stop it, and audit its logs."""
    work.mkdir(parents=True, exist_ok=True)
    producer_procs, logger_procs, broadcaster = launch(work, devices, rate, producers, loggers)
    named = {label("producer", i, producers): p for i, p in enumerate(producer_procs, 1)}
    named |= {label("logger", j, loggers): p for j, p in enumerate(logger_procs, 1)}
    named["broadcaster"] = broadcaster
    frames = [0]
    done = threading.Event()
    measured = False
    try:
        producer_ports = [ready(p)["metrics_port"] for p in producer_procs]
        logger_info = [ready(p) for p in logger_procs]
        logger_ports = [info["metrics_port"] for info in logger_info]
        ws_port = ready(broadcaster)["ws_port"]

        def client() -> None:
            from websockets.exceptions import ConnectionClosed
            from websockets.sync.client import connect

            with connect(f"ws://127.0.0.1:{ws_port}/?devices=host-01", open_timeout=10) as ws:
                while not done.is_set():
                    try:
                        ws.recv(timeout=0.5)
                        frames[0] += 1
                    except TimeoutError:
                        pass
                    except ConnectionClosed:  # the broadcaster stopped first
                        return

        reader = threading.Thread(target=client, daemon=True)
        reader.start()
        time.sleep(settle)

        def total(ports: list[int], name: str) -> float:
            return sum(scrape(port, name) for port in ports)

        usage = {n: Usage(p.pid) for n, p in named.items()}
        rows0 = total(logger_ports, "stream_rows_written_total")
        published0 = total(producer_ports, "stream_samples_published_total")
        began = time.monotonic()
        while time.monotonic() - began < duration:
            time.sleep(0.5)
            for u in usage.values():
                u.sample()
        elapsed = time.monotonic() - began
        rows = total(logger_ports, "stream_rows_written_total") - rows0
        published = total(producer_ports, "stream_samples_published_total") - published0
        usages = {n: u.report() for n, u in usage.items()}
        gaps = total(logger_ports, "stream_gaps_total")
        early = sorted(n for n, p in named.items() if p.poll() is not None)
        measured = True
    finally:
        done.set()
        stop(*producer_procs, broadcaster)
        time.sleep(1)
        drain_s = drain(logger_ports) if measured else None
        stop(*logger_procs)
    for u in usages.values():
        u["cpu_s"] = u["cpu_percent"] * u["wall_s"] / 100

    def cpu_s(kind: str) -> float:
        return sum(u["cpu_s"] for n, u in usages.items() if n.startswith(kind))

    def cpu_percent(kind: str) -> float:
        return sum(u["cpu_percent"] for n, u in usages.items() if n.startswith(kind))

    published_all = stopped_total(
        work, "producer", r"stopped after publishing (\d+) samples", producers
    )
    written_all = stopped_total(work, "logger", r"stopped after writing (\d+) rows", loggers)
    result = {
        "producers": producers,
        "loggers": loggers,
        "duration_s": elapsed,
        "logger_rows_per_s": rows / elapsed,
        "published_per_s": published / elapsed,
        "producer_cpu_us_per_sample": 1e6 * cpu_s("producer") / published if published else None,
        "logger_cpu_us_per_row": 1e6 * cpu_s("logger") / rows if rows else None,
        "cpu_percent": {
            "producers": cpu_percent("producer"),
            "loggers": cpu_percent("logger"),
            "broadcaster": cpu_percent("broadcaster"),
            "all": cpu_percent(""),
        },
        "processes": usages,
        "client_frames": frames[0],
        "gaps_recorded": gaps,
        # over the whole run: what the producers published and the loggers never wrote
        "unwritten_at_stop": (
            published_all - written_all
            if published_all is not None and written_all is not None
            else None
        ),
        "logger_drain_s": drain_s,
        "exit_status": {n: p.returncode for n, p in named.items()},
        "exited_early": early,
        "log_problems": log_problems(work),
        "verify": None,
        "workdir": str(work),
    }
    if verify:  # the figure counts only if the log is complete (gaps recorded are explained)
        csvs = [work / info["csv"] for info in logger_info]
        result["verify"] = audit(csvs, loggers)
    return result


def verified(result: dict, devices: int) -> str:
    """One word or so on the audit of a run's logs."""
    audit = result["verify"]
    if audit is None:
        return "not checked (--no-verify)"
    wrong = []
    if not audit["ok"]:
        wrong.append("verify failed")
    if audit["devices"] != devices:
        wrong.append(f"{audit['devices']} of {devices} devices")
    if audit.get("foreign_devices"):
        wrong.append("a logger holds another's devices")
    if wrong:
        return "NO: " + "; ".join(wrong)
    return f"yes: {audit['rows']:,} rows, {audit['devices']} devices"


def print_verify(result: dict, prefix: str = "verify") -> None:
    audit = result["verify"]
    if audit is None:
        return
    print("\n".join(f"{prefix}: {line}" for line in audit["report"]))
    for name, wrong in audit.get("foreign_devices", {}).items():
        print(f"{prefix}: {name} holds {wrong['count']} device(s) not its own: {wrong['first']}")


def print_problems(result: dict, prefix: str = "") -> None:
    for name in result["exited_early"]:
        print(f"{prefix}{name} exited before the measurement ended")
    for name, status in result["exit_status"].items():
        if status not in (0, None):
            print(f"{prefix}{name} exit status {status} (-9: killed after 5 s)")
    for module, found in result["log_problems"].items():
        print(f"{prefix}{module}.log: {found['count']} warning/error line(s), first:")
        print("\n".join(f"{prefix}  {line}" for line in found["first"]))


def ratio(new: float | None, old: float | None) -> str:
    return f"{new / old:.2f}x" if new is not None and old else ""


def compare_runs(
    devices: int,
    rate: float,
    duration: float,
    producers: int,
    loggers: int,
    verify: bool,
    work: Path,
    settle: float = 3.0,
) -> None:
    target = devices * rate
    configs = [(1, 1), (producers, loggers)]
    results = []
    for n, m in configs:
        print(f"running {describe(n, m)}: {devices} devices x {rate:g} Hz, {duration:g} s")
        result = run(work / f"{n}p{m}l", devices, rate, duration, n, m, verify, settle)
        print_verify(result, f"verify {n}p{m}l")
        print_problems(result, f"{n}p{m}l: ")
        results.append(result)
    base, scaled = results
    cores = os.cpu_count() or 0

    def row(what: str, key, fmt: str = ",.0f", with_ratio: bool = True) -> list[str]:
        values = [key(r) for r in results]
        cells = ["" if v is None else format(v, fmt) for v in values]
        return [what, *cells, ratio(values[1], values[0]) if with_ratio else ""]

    print(
        f"\n{devices} devices x {rate:g} Hz = {target:,.0f} samples/s offered, {duration:g} s "
        f"measured per configuration, one after the other on {cores} cores; the naive and "
        "raw-pyzmq baselines are skipped with --compare"
    )
    print(
        table(
            [
                ["what", describe(*configs[0]), describe(*configs[1]), "ratio"],
                row("samples published/s (sum)", lambda r: r["published_per_s"]),
                row("rows written/s (sum)", lambda r: r["logger_rows_per_s"]),
                row("rows written / offered", lambda r: r["logger_rows_per_s"] / target, ".2f"),
                row("producer CPU us/sample", lambda r: r["producer_cpu_us_per_sample"], ".2f"),
                row("logger CPU us/row", lambda r: r["logger_cpu_us_per_row"], ".2f"),
                row("CPU % producers (sum)", lambda r: r["cpu_percent"]["producers"]),
                row("CPU % loggers (sum)", lambda r: r["cpu_percent"]["loggers"]),
                row("CPU % broadcaster", lambda r: r["cpu_percent"]["broadcaster"]),
                row(f"CPU % all (of {100 * cores})", lambda r: r["cpu_percent"]["all"]),
                row("gaps recorded", lambda r: r["gaps_recorded"], ",.0f", False),
                row("unwritten at stop", lambda r: r["unwritten_at_stop"], ",", False),
                row("logger drain after stop, s", lambda r: r["logger_drain_s"], ".1f", False),
                row("client frames (host-01)", lambda r: r["client_frames"], ",", False),
                ["log verified", *(verified(r, devices) for r in results), ""],
            ]
        )
    )
    print(
        table(
            [["configuration", "process", "CPU %", "CPU s", "peak RSS MB"]]
            + [
                [
                    describe(r["producers"], r["loggers"]),
                    n,
                    f"{u['cpu_percent']:.0f}",
                    f"{u['cpu_s']:.1f}",
                    f"{u['peak_rss_mb']:.0f}",
                ]
                for r in results
                for n, u in r["processes"].items()
            ]
        )
    )
    keys = (
        "published_per_s",
        "logger_rows_per_s",
        "producer_cpu_us_per_sample",
        "logger_cpu_us_per_row",
    )
    path = write(
        "pipeline-compare",
        {
            "devices": devices,
            "rate": rate,
            "duration_s": duration,
            "target": target,
            "baseline": base,
            "scaled": scaled,
            "ratios": {
                k: scaled[k] / base[k] if base[k] and scaled[k] is not None else None for k in keys
            },
            "skipped": ["naive", "zmq_ceiling"],
            "workdir": str(work),
        },
    )
    print(f"wrote {path}")


@click.command()
@click.option("--devices", default=1000, show_default=True)
@click.option("--rate", default=1000.0, show_default=True, help="Hz per device.")
@click.option("--duration", default=60.0, show_default=True, help="Seconds measured.")
@click.option(
    "--producers",
    type=click.IntRange(1, GROUPS),
    help="Producers, each simulating its share of the devices.  [default: 1; 2 with --compare]",
)
@click.option(
    "--loggers",
    type=click.IntRange(1, GROUPS),
    help="Loggers, each logging its share of the devices.  [default: 1; 2 with --compare]",
)
@click.option(
    "--compare",
    is_flag=True,
    help="Run 1 producer / 1 logger, then --producers / --loggers, and compare them.",
)
@click.option(
    "--verify/--no-verify", default=True, show_default=True, help="Audit the CSV afterwards."
)
@click.option("--quick", is_flag=True, help="100 devices x 100 Hz for 5 s (per configuration).")
@click.option(
    "--smoke",
    is_flag=True,
    help="A check that it runs: 100 devices x 100 Hz for 1.5 s after 1 s (per configuration), "
    "baselines for 0.5 s.",
)
def main(
    devices: int,
    rate: float,
    duration: float,
    producers: int | None,
    loggers: int | None,
    compare: bool,
    verify: bool,
    quick: bool,
    smoke: bool,
) -> None:
    settle, baseline_s = (1.0, 0.5) if smoke else (3.0, None)
    if quick or smoke:
        devices, rate, duration = 100, 100.0, (1.5 if smoke else 5.0)
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    if compare:
        compare_runs(devices, rate, duration, producers or 2, loggers or 2, verify, work, settle)
        return
    producers, loggers = producers or 1, loggers or 1
    result = run(work, devices, rate, duration, producers, loggers, verify, settle)
    print_verify(result)
    print_problems(result)
    naive_rate = naive(work / "naive.csv", baseline_s or 2.0)
    ceiling = zmq_ceiling(baseline_s or 3.0)
    floor = floors(devices, rate, baseline_s or (1.0 if quick else 3.0))
    elapsed = result["duration_s"]
    ours = result["logger_rows_per_s"]
    published = result["published_per_s"]
    target = devices * rate
    scaled = producers > 1 or loggers > 1
    print(
        table(
            [
                ["what", "samples/s", "vs target", "vs naive", "vs zmq ceiling"],
                [
                    "pipeline (logger rows written)"
                    if not scaled
                    else f"pipeline, {describe(producers, loggers)} (rows written)",
                    f"{ours:,.0f}",
                    f"{ours / target:.2f}",
                    f"{ours / naive_rate:,.0f}x",
                    f"{ours / ceiling:.3f}",
                ],
                [
                    "producer published",
                    f"{published:,.0f}",
                    f"{published / target:.2f}",
                    "",
                    "",
                ],
                ["naive (pandas per row)", f"{naive_rate:,.0f}", "", "1x", ""],
                ["raw pyzmq, 1000 rows/msg", f"{ceiling:,.0f}", "", "", "1"],
            ]
        )
    )
    usages = result["processes"]
    print(
        table(
            [["process", "CPU %", "peak RSS MB"]]
            + [[n, f"{u['cpu_percent']:.0f}", f"{u['peak_rss_mb']:.0f}"] for n, u in usages.items()]
        )
    )
    us_sample, us_row = result["producer_cpu_us_per_sample"], result["logger_cpu_us_per_row"]
    print(
        "CPU per item: producer "
        + ("n/a" if us_sample is None else f"{us_sample:.2f} us/sample")
        + f" (the model alone: {floor['model_us_per_sample']:.2f})"
        + ", logger "
        + ("n/a" if us_row is None else f"{us_row:.2f} us/row")
        + f" (rendering alone: {floor['csv_us_per_row']:.2f})"
    )
    print(f"client subscribed to host-01 received {result['client_frames']} frames")
    unwritten = result["unwritten_at_stop"]
    print(
        f"after the producers stopped the loggers wrote for {result['logger_drain_s']:.1f} s; "
        f"samples published but never written: {'?' if unwritten is None else f'{unwritten:,}'}"
    )
    audit = result["verify"]
    path = write(
        "pipeline" if not scaled else f"pipeline-{producers}p{loggers}l",
        {
            **result,
            "devices": devices,
            "rate": rate,
            "duration_s": elapsed,
            "target": target,
            "naive_rows_per_s": naive_rate,
            "zmq_ceiling_per_s": ceiling,
            "floors": floor,
            "ratio_to_naive": ours / naive_rate,
            "verify": audit and {k: v for k, v in audit.items() if k != "report"},
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
