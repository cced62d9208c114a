"""Stop under load: how long each process takes to exit after SIGTERM, at full rate.

    python bench/stop.py [--devices 1000 --rate 1000 --settle 10 --rounds 3] [--quick | --smoke]

Starts producer, logger and broadcaster (with a WebSocket client on one device), lets them
run for --settle seconds, sends SIGTERM to all three at once and times each exit (the
promise: 2 s; honcho kills after 5). The logger must have written what it took in: its
"stopped after writing N rows" must match the rows in its CSV, with no error logged.
Baseline, same run: a bare asyncio process with the same signal handling, to show the
interpreter's own start-to-exit floor.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import percentiles, ready, summary, table, write  # noqa: E402
from bench.pipeline import launch  # noqa: E402

_BARE = textwrap.dedent(
    """
    import asyncio, signal, sys
    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
    asyncio.run(main())
    """
)


def bare_exit() -> float:
    """Seconds from SIGTERM to exit of a bare asyncio process that only waits for it."""
    proc = subprocess.Popen([sys.executable, "-c", _BARE], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()
    began = time.monotonic()
    proc.terminate()
    proc.wait(10)
    return time.monotonic() - began


def one_round(devices: int, rate: float, settle: float) -> dict:
    """Run the pipeline for `settle` s, SIGTERM everything, time each exit, check the CSV."""
    work = Path(tempfile.mkdtemp(prefix="bench-stop-"))
    producers, loggers, broadcaster = launch(work, devices, rate, 1, 1)
    named = {"producer": producers[0], "logger": loggers[0], "broadcaster": broadcaster}
    info = {name: ready(proc) for name, proc in named.items()}
    done = threading.Event()

    def client() -> None:
        from websockets.sync.client import connect

        url = f"ws://127.0.0.1:{info['broadcaster']['ws_port']}/?devices=host-01"
        try:
            with connect(url, open_timeout=10) as ws:
                while not done.is_set():
                    try:
                        ws.recv(timeout=0.5)
                    except TimeoutError:
                        pass
        except Exception:  # the broadcaster stopped first: expected
            return

    threading.Thread(target=client, daemon=True).start()
    time.sleep(settle)
    began = time.monotonic()
    for proc in named.values():
        proc.terminate()
    exits: dict[str, float | None] = dict.fromkeys(named)
    while time.monotonic() - began < 10 and any(p.poll() is None for p in named.values()):
        for name, proc in named.items():
            if exits[name] is None and proc.poll() is not None:
                exits[name] = time.monotonic() - began
        time.sleep(0.005)
    for name, proc in named.items():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        elif exits[name] is None:
            exits[name] = time.monotonic() - began
    done.set()
    log = (work / "logger.log").read_text(errors="replace")
    said = re.findall(r"stopped after writing (\d+) rows", log)
    csv = work / info["logger"]["csv"]
    with csv.open("rb") as f:
        rows = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b"")) - 1
    return {
        "exit_s": exits,
        "exit_status": {name: proc.returncode for name, proc in named.items()},
        "logger_said_written": int(said[-1]) if said else None,
        "csv_rows": rows,
        "logger_errors": len(re.findall(r" ERROR ", log)),
        "workdir": str(work),
    }


@click.command()
@click.option("--devices", default=1000, show_default=True)
@click.option("--rate", default=1000.0, show_default=True, help="Hz per device.")
@click.option("--settle", default=10.0, show_default=True, help="Seconds run before SIGTERM.")
@click.option("--rounds", default=3, show_default=True)
@click.option("--quick", is_flag=True, help="100 devices x 100 Hz, 3 s, one round.")
@click.option("--smoke", is_flag=True, help="A check that it runs: as --quick, but 1 s.")
def main(devices: int, rate: float, settle: float, rounds: int, quick: bool, smoke: bool) -> None:
    if quick or smoke:
        devices, rate, settle, rounds = 100, 100.0, (1.0 if smoke else 3.0), 1
    results = []
    for i in range(rounds):
        print(
            f"round {i + 1}/{rounds}: {devices} devices x {rate:g} Hz, SIGTERM after {settle:g} s"
        )
        results.append(one_round(devices, rate, settle))
    bare = [bare_exit() for _ in range(5)]
    names = ("producer", "logger", "broadcaster")
    worst = {n: max((r["exit_s"][n] or float("inf")) for r in results) for n in names}
    rows = [["process", "SIGTERM to exit, s (each round)", "worst", "within 2 s"]]
    for n in names:
        each = ", ".join(
            "killed" if r["exit_s"][n] is None else f"{r['exit_s'][n]:.2f}" for r in results
        )
        rows.append([n, each, f"{worst[n]:.2f}", "yes" if worst[n] <= 2 else "NO"])
    rows.append(
        [
            "bare asyncio process (floor)",
            f"p50 {percentiles(bare)['p50']:.3f}",
            f"{max(bare):.3f}",
            "",
        ]
    )
    print(table(rows))
    complete = all(
        r["logger_said_written"] == r["csv_rows"] and not r["logger_errors"] for r in results
    )
    print(
        "logger wrote what it took in (its count = CSV rows, no error): "
        + ("yes" if complete else "NO")
        + "; rows: "
        + ", ".join(f"{r['csv_rows']:,}" for r in results)
    )
    path = write(
        "stop",
        {
            "devices": devices,
            "rate": rate,
            "settle_s": settle,
            "rounds": results,
            "worst_exit_s": worst,
            "bare_exit_s": summary(bare),
            "logger_complete": complete,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
