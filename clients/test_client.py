"""Print every sample the broadcaster sends: `python clients/test_client.py`.

Self-contained on purpose (only `websockets` and `click`), so it can be copied anywhere.
It keeps trying while the server is not up yet, and reconnects when it restarts; then it
resumes: it asks for every sample after the last seq it printed of each device (`since`),
so across a restart it prints each seq once and none is skipped unless the server says so
(a `gap` message).
"""

from __future__ import annotations

import asyncio
import csv
import json
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from urllib.parse import urlencode, urlsplit, urlunsplit

import click
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 2.0
PATIENT_S = 3.0  # retry at the first delay this long, so a starting pipeline is met at once
METRICS = ("cpu", "mem", "disk_io", "net")
MAX_SINCE_CHARS = 6000  # the query must fit in the HTTP request line (8 KiB at the server)


class Output:
    """How samples are shown: the spec's lines, CSV, or a table redrawn in place."""

    def __init__(self, form: str, stats: bool) -> None:
        self.form = form
        self.stats = Stats() if stats else None
        self.header_done = False
        self.latest: dict[str, dict] = {}
        self.redraw = form == "table" and sys.stdout.isatty()

    def connected(self) -> None:
        if self.form == "json":
            print("Connected to server. Listening for data...", flush=True)

    def show(self, message: str) -> None:
        if self.stats:
            self.stats.add(message)
        if self.form == "json":
            print(f"Received: {message}", flush=True)
            return
        parsed = json.loads(message)
        for sample in parsed if isinstance(parsed, list) else [parsed]:
            if "timestamp" not in sample:
                print(f"server: {json.dumps(sample)}", file=sys.stderr, flush=True)
            elif self.form == "csv":
                self._csv(sample)
            else:
                self._table(sample)

    def _csv(self, sample: dict) -> None:
        """Rows like the logger's: ids holding a comma or a quote are quoted."""
        out = csv.writer(sys.stdout, lineterminator="\n")
        if not self.header_done:
            out.writerow(sample)
            self.header_done = True
        out.writerow("" if v is None else v for v in sample.values())
        sys.stdout.flush()

    def _table(self, sample: dict) -> None:
        self.latest[sample["device"]] = sample
        fields = [k for k in ("timestamp", *METRICS, "seq", "anomaly") if k in sample]
        if not self.redraw:
            print("  ".join(f"{sample[k]}" for k in ("device", *fields)), flush=True)
            return
        lines = [
            "device    " + "  ".join(f"{k:>19}" if k == "timestamp" else f"{k:>9}" for k in fields)
        ]
        for device in sorted(self.latest):
            row = self.latest[device]
            cells = [
                f"{str(row.get(k) or ''):>19}"
                if k == "timestamp"
                else f"{str(row.get(k) if row.get(k) is not None else ''):>9}"
                for k in fields
            ]
            lines.append(f"{device:<10}" + "  ".join(cells))
        sys.stdout.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
        sys.stdout.flush()


class Stats:
    """Rate, latency (now minus sample timestamp) and gaps by seq, once a second."""

    def __init__(self) -> None:
        self.count = 0
        self.latency_ms: list[float] = []
        self.last_seq: dict[str, int] = {}
        self.gaps = 0
        self.next_report = time.monotonic() + 1.0

    def add(self, message: str) -> None:
        parsed = json.loads(message)
        now = datetime.now(UTC).replace(tzinfo=None)
        for sample in parsed if isinstance(parsed, list) else [parsed]:
            if "seq" not in sample:
                continue
            self.count += 1
            stamp = datetime.fromisoformat(sample["timestamp"])
            self.latency_ms.append((now - stamp).total_seconds() * 1000)
            previous = self.last_seq.get(sample["device"])
            if previous is not None and sample["seq"] > previous + 1:
                self.gaps += sample["seq"] - previous - 1
            self.last_seq[sample["device"]] = sample["seq"]
        if time.monotonic() >= self.next_report:
            self.next_report += 1.0
            ordered = sorted(self.latency_ms) or [0.0]
            p50, p99 = ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]
            print(
                f"stats: {self.count} samples/s, latency p50 {p50:.1f} ms p99 {p99:.1f} ms, "
                f"{self.gaps} missing by seq",
                file=sys.stderr,
                flush=True,
            )
            self.count, self.latency_ms = 0, []


class Seqs:
    """The last seq shown of each device, to resume after it on reconnecting."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.repeats_possible = False  # the short form of `since` was sent: drop repeats

    def since(self) -> list[tuple[str, str]]:
        """Query parameters asking for every sample after those shown: one bare seq for
        most devices, DEVICE:SEQ for the others; if that is too long for a URL, the lowest
        seq for all (the server then resends some, which `fresh` drops)."""
        if not self.last:
            return []
        common = Counter(self.last.values()).most_common(1)[0][0]
        params = [("since", str(common))]
        params += [("since", f"{d}:{s}") for d, s in sorted(self.last.items()) if s != common]
        self.repeats_possible = len(urlencode(params)) > MAX_SINCE_CHARS
        if self.repeats_possible:
            params = [("since", str(min(self.last.values())))]
        return params

    def fresh(self, message: str) -> str | None:
        """The message, noting its seqs; None if every sample in it was shown already."""
        try:
            parsed = json.loads(message)
        except ValueError:
            return message
        samples = parsed if isinstance(parsed, list) else [parsed]
        samples = [s for s in samples if isinstance(s, dict)]
        keep = self.keep(samples)
        if len(keep) == len(samples):
            return message
        if not keep:
            return None
        return json.dumps(keep if isinstance(parsed, list) else keep[0], separators=(",", ":"))

    def keep(self, samples: list[dict]) -> list[dict]:
        """The parsed objects not shown already (anything that is not a sample is kept),
        noting each sample's seq."""
        keep = []
        for sample in samples:
            device, seq = sample.get("device"), sample.get("seq")
            if not isinstance(device, str) or not isinstance(seq, int):
                keep.append(sample)
                continue
            if self.repeats_possible and seq <= self.last.get(device, -2):
                continue
            self.last[device] = seq
            keep.append(sample)
        return keep


async def listen(url: str, count: int | None, output: Output, resume: bool = True) -> None:
    """Show samples until `count` of them (or forever), reconnecting when needed, and
    resuming after the last seq shown of each device if `resume`."""
    received = 0
    delay = BACKOFF_FIRST_S
    waiting = False  # a "reconnecting" line was printed for this outage
    outage_began = time.monotonic()
    seqs = Seqs()
    while True:
        target = with_params(url, seqs.since()) if resume else url
        try:
            async with connect(target, open_timeout=5, max_size=None, compression=None) as ws:
                output.connected()
                waiting, delay = False, BACKOFF_FIRST_S
                outage_began = None
                async for message in ws:
                    message = seqs.fresh(message)
                    if message is None:
                        continue
                    output.show(message)
                    received += 1
                    if count is not None and received >= count:
                        return
            reason = "server closed the connection"
        except InvalidURI:
            raise
        except ConnectionClosed as exc:
            reason = f"connection lost ({exc})"
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            reason = f"server not available ({exc.__class__.__name__}: {exc})"
        if not waiting:
            print(f"{reason}; reconnecting to {url} ...", file=sys.stderr, flush=True)
            waiting = True
        if outage_began is None:
            outage_began = time.monotonic()
        await asyncio.sleep(delay)
        if time.monotonic() - outage_began > PATIENT_S:
            delay = min(delay * 1.5, BACKOFF_MAX_S)


def with_query(url: str, **params: str | None) -> str:
    return with_params(url, [(k, v) for k, v in params.items() if v is not None])


def with_params(url: str, params: list[tuple[str, str]]) -> str:
    """The URL with these query parameters added (percent-encoded; keys may repeat)."""
    parts = urlsplit(url)
    query = urlencode(params)
    merged = "&".join(q for q in (parts.query, query) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", merged, parts.fragment))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="STREAM_CLIENT_URL",
    default="ws://localhost:8765",
    show_default=True,
    show_envvar=True,
    help="WebSocket URL of the broadcaster, or a broker the bridge writes to: "
    "kafka://HOST:PORT[/TOPIC], nats://HOST:PORT[/PREFIX], mqtt://HOST:PORT[/PREFIX].",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    help="Exit (status 0) after this many frames. [default: run until Ctrl-C]",
)
@click.option("--devices", help="Only these devices, e.g. host-01,host-02.")
@click.option("--fields", help="Only these metrics, e.g. cpu,net.")
@click.option(
    "--max-rate", type=click.FloatRange(0.001, 10_000), help="Samples/s per device, at most."
)
@click.option(
    "--format",
    "form",
    type=click.Choice(["json", "table", "csv"]),
    default="json",
    show_default=True,
    help="json: the spec's 'Received: {...}' lines; table: redrawn in place; csv.",
)
@click.option("--stats", is_flag=True, help="Print rate, latency and gaps (by seq) every second.")
@click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="On reconnecting, first get every sample missed meanwhile (not with --max-rate).",
)
def main(
    url: str,
    count: int | None,
    devices: str | None,
    fields: str | None,
    max_rate: float | None,
    form: str,
    stats: bool,
    resume: bool,
) -> None:
    """Connect to the broadcaster and print each sample as it arrives."""
    if url.partition("://")[0].lower() in ("kafka", "kafka+ssl", "nats", "tls", "mqtt", "mqtts"):
        import engines  # beside this script: the brokers' readers (clients/engines.py)

        wanted = set(devices.split(",")) if devices else None
        try:
            asyncio.run(engines.listen(url, count, Output(form, stats), wanted))
        except (OSError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="'--url'") from None
        except KeyboardInterrupt:
            sys.exit(130)
        return
    url = with_query(
        url, devices=devices, fields=fields, max_rate=None if max_rate is None else f"{max_rate:g}"
    )
    try:
        # A downsampled stream has gaps by design: the server refuses to resume it.
        asyncio.run(listen(url, count, Output(form, stats), resume and max_rate is None))
    except InvalidURI as exc:
        raise click.BadParameter(str(exc), param_hint="'--url'") from None
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    try:
        main.main(standalone_mode=False)
    except click.ClickException as exc:
        print(f"test_client: error: {' '.join(exc.format_message().split())}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
