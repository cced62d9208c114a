"""Print every sample the broadcaster sends: `python clients/test_client.py`.

Self-contained on purpose (only `websockets` and `click`, and honcho's `.env` parser when
it is installed), so it can be copied anywhere. It keeps trying while the server is not
up yet, and reconnects when it restarts; then it resumes: it asks for every sample after
the last seq it printed of each device (`since`), so across a restart it prints each seq
once and none is skipped unless the server says so (a `gap` message).

Without --url it reads the broadcaster's own settings (STREAM_WS_HOST, STREAM_WS_PORT,
STREAM_WS_TLS_CERT, STREAM_WS_TOKEN) from the environment or `./.env`, as the broadcaster
does. Exit status: 0 after --count frames, 2 for a bad option, 3 when no server could be
reached within --timeout (10 s by default with --count; no limit otherwise), 130 on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import click
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 2.0
PATIENT_S = 3.0  # retry at the first delay this long, so a starting pipeline is met at once
COUNT_TIMEOUT_S = 10.0  # with --count, an unreachable server is an error after this long
UNREACHABLE = 3  # exit status: no server within --timeout
REDRAW_S = 0.25  # a table on a terminal is redrawn at most four times a second
METRICS = ("cpu", "mem", "disk_io", "net")
MAX_SINCE_CHARS = 6000  # the query must fit in the HTTP request line (8 KiB at the server)


class Unreachable(Exception):
    """No server answered within --timeout."""


def read_env_file(path: Path = Path(".env")) -> None:
    """Take settings from `./.env` where the environment has none, as every process of the
    pipeline does (honcho's parser, so the file means the same to all); not under honcho,
    which has applied it already."""
    if "HONCHO_PROCESS_NAME" in os.environ or not path.is_file():
        return
    try:
        from honcho.environ import parse
    except ImportError:
        print(f"test_client: warning: honcho is not installed: {path} not read", file=sys.stderr)
        return
    try:
        settings = parse(path.read_text())
    except ValueError as exc:  # shlex: an unbalanced quote
        raise click.UsageError(f"cannot read {path}: {str(exc).lower()}") from None
    for name, value in settings.items():
        os.environ.setdefault(name, value)


def broadcaster_url(environ: dict[str, str] | os._Environ) -> str:
    """The URL of the broadcaster the settings describe: its host and port (a wildcard host
    is reached on loopback; port 0 is read from its ready file), wss with a certificate."""
    host = environ.get("STREAM_WS_HOST", "localhost").strip() or "localhost"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = environ.get("STREAM_WS_PORT", "8765").strip()
    if port == "0":
        url = _ready_url(environ.get("STREAM_READY_FILE", ""))
        if url is None:
            raise click.UsageError(
                "STREAM_WS_PORT is 0 (any free port) and no broadcaster's ready file names "
                "its port: give --url"
            )
        return url
    scheme = "wss" if environ.get("STREAM_WS_TLS_CERT") else "ws"
    return f"{scheme}://{host}:{port}"


def _ready_url(template: str) -> str | None:
    """The URL in a running broadcaster's ready file (STREAM_READY_FILE), if there is one."""
    if not template:
        return None
    for instance in ("broadcaster.1", "broadcaster"):
        try:
            info = json.loads(Path(template.replace("{instance}", instance)).read_text())
            os.kill(int(info["pid"]), 0)
            return str(info["url"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


class Output:
    """How samples are shown: the spec's lines, CSV, or a table (redrawn in place on a
    terminal, at most every REDRAW_S; one line per sample under a header otherwise)."""

    def __init__(self, form: str, stats: bool, max_rate: float | None = None) -> None:
        self.form = form
        self.stats = Stats(max_rate) if stats else None
        self.header_done = False
        self.latest: dict[str, dict] = {}
        self.columns: list[str] = []
        self.redraw = form == "table" and sys.stdout.isatty()
        self._drawn_at = 0.0
        self._dirty = False
        self._timer: asyncio.TimerHandle | None = None

    def connected(self) -> None:
        if self.stats:
            self.stats.connected()
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

    def close(self) -> None:
        """Draw what the last redraw did not show yet."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._dirty:
            self._draw()

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
        if not self.columns:
            self.columns = [k for k in ("timestamp", *METRICS, "seq", "anomaly") if k in sample]
        if self.redraw:
            self._dirty = True
            self._draw_soon()
            return
        if not self.header_done:
            print(self._header(), flush=True)
            self.header_done = True
        print(self._row(sample), flush=True)

    def _header(self) -> str:
        return f"{'device':<10}" + "  ".join(
            f"{k:>23}" if k == "timestamp" else f"{k:>9}" for k in self.columns
        )

    def _row(self, sample: dict) -> str:
        """One line; a missing value or label is a blank cell."""
        cells = [
            f"{'' if sample.get(k) is None else sample[k]!s:>{23 if k == 'timestamp' else 9}}"
            for k in self.columns
        ]
        return f"{sample['device']:<10}" + "  ".join(cells)

    def _draw_soon(self) -> None:
        wait = self._drawn_at + REDRAW_S - time.monotonic()
        if wait <= 0:
            self._draw()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait, self._draw)

    def _draw(self) -> None:
        # A sample can come after a timer's due time but before a busy loop ran it: drawing
        # then must take the timer with it, or it draws a second picture right after.
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._dirty = False
        self._drawn_at = time.monotonic()
        lines = [self._header(), *(self._row(self.latest[d]) for d in sorted(self.latest))]
        # Home, each line over the old one (erasing its tail), then erase what is below.
        sys.stdout.write("\x1b[H" + "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J")
        sys.stdout.flush()


def _epoch_s(timestamp: str) -> float:
    """A sample's UTC timestamp as epoch seconds."""
    return datetime.fromisoformat(timestamp).replace(tzinfo=UTC).timestamp()


class Stats:
    """Rate, latency (now minus sample timestamp) and gaps by seq, once a second.

    Samples stamped before the current connection began (the latest one of each device
    sent on connecting, or what a resume refills) are counted as history: they say nothing
    of latency. With --max-rate, the seqs the server leaves out on purpose (at least
    1/max_rate apart) are counted as thinned, not missing; seqs a gap message named are
    counted as named by the server."""

    def __init__(self, max_rate: float | None = None) -> None:
        self.max_rate = max_rate
        self.count = 0
        self.history = 0
        self.latency_ms: list[float] = []
        self.last: dict[str, tuple[int, float]] = {}  # device -> (seq, epoch s)
        self.gaps = 0  # missing by seq, in all
        self.thinned = 0
        self.named = 0  # in the server's gap messages
        self.connected_at = time.time()
        self.next_report = time.monotonic() + 1.0

    def connected(self) -> None:
        self.connected_at = time.time()

    def add(self, message: str) -> None:
        parsed = json.loads(message)
        now = time.time()
        if isinstance(parsed, dict) and isinstance(parsed.get("gap"), dict):
            self._named(parsed["gap"].get("ranges") or [])
        for sample in parsed if isinstance(parsed, list) else [parsed]:
            if not isinstance(sample, dict) or "seq" not in sample or "timestamp" not in sample:
                continue
            stamp = _epoch_s(sample["timestamp"])
            # Whole-second timestamps are floored: one may show a second before it happened.
            slack = 0.0 if "." in sample["timestamp"] else 1.0
            if stamp + slack < self.connected_at:
                self.history += 1
            else:
                self.count += 1
                self.latency_ms.append((now - stamp) * 1000)
            self._follow(sample["device"], sample["seq"], stamp)
        clock = time.monotonic()
        if clock >= self.next_report:
            # After a silence (an outage), one report for it, not one per second it lasted.
            self.next_report = max(self.next_report + 1.0, clock + 0.5)
            print(self.line(), file=sys.stderr, flush=True)
            self.count, self.history, self.latency_ms = 0, 0, []

    def line(self) -> str:
        if self.latency_ms:
            ordered = sorted(self.latency_ms)
            p50, p99 = ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]
            latency = f"latency p50 {p50:.1f} ms p99 {p99:.1f} ms"
        else:
            latency = "latency n/a"
        text = f"stats: {self.count} samples/s, {latency}, {self.gaps} missing by seq"
        if self.max_rate is not None:
            text += f", {self.thinned} thinned by --max-rate"
        if self.named:
            text += f", {self.named} named by the server"
        if self.history:
            text += f", {self.history} from history (no latency)"
        return text

    def _follow(self, device: str, seq: int, stamp: float) -> None:
        previous = self.last.get(device)
        self.last[device] = (seq, stamp)
        if previous is None or seq <= previous[0] + 1:
            return
        jump = seq - previous[0] - 1
        if self.max_rate is None:
            self.gaps += jump
            return
        # The server keeps a sample once 1/max_rate has passed since the last one it sent:
        # with the source's period p = span / (jump + 1), a jump of thinning alone spans less
        # than 1/max_rate + p. A longer span lost samples the server meant to send.
        span = stamp - previous[1]
        if span * jump / (jump + 1) < 1 / self.max_rate + 1e-6:
            self.thinned += jump
            return
        lost = max(1, int(span * self.max_rate + 1e-6) - 1)
        self.gaps += min(lost, jump)
        self.thinned += jump - min(lost, jump)

    def _named(self, ranges: list) -> None:
        """Skip past what a gap message names, so the jump is not counted as missing."""
        for item in ranges:
            device, first, last = item.get("device"), item.get("from_seq"), item.get("to_seq")
            if isinstance(device, str) and isinstance(first, int) and isinstance(last, int):
                self.named += last - first + 1
                seq, stamp = self.last.get(device, (first - 1, 0.0))
                self.last[device] = (max(seq, last), stamp)


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


async def listen(
    url: str,
    count: int | None,
    output: Output,
    resume: bool = True,
    timeout: float | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Show samples until `count` of them (or forever), reconnecting when needed, and
    resuming after the last seq shown of each device if `resume`. Raises Unreachable when
    no server answered for `timeout` seconds (at start, or after losing it)."""
    received = 0
    delay = BACKOFF_FIRST_S
    waiting = False  # a "reconnecting" line was printed for this outage
    outage_began: float | None = time.monotonic()
    seqs = Seqs()
    while True:
        target = with_params(url, seqs.since()) if resume else url
        try:
            async with connect(
                target,
                open_timeout=5 if timeout is None else min(5.0, max(timeout, 0.1)),
                max_size=None,
                compression=None,
                additional_headers=headers,
            ) as ws:
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
        if outage_began is None:
            outage_began = time.monotonic()
        if timeout is not None and time.monotonic() - outage_began >= timeout:
            raise Unreachable(f"no server at {url} within {timeout:g} s ({reason})")
        if not waiting:
            print(f"{reason}; reconnecting to {url} ...", file=sys.stderr, flush=True)
            waiting = True
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
    show_envvar=True,
    help="WebSocket URL of the broadcaster, or a broker the bridge writes to: "
    "kafka://HOST:PORT[/TOPIC], nats://HOST:PORT[/PREFIX], mqtt://HOST:PORT[/PREFIX]. "
    "[default: the broadcaster's settings, STREAM_WS_HOST and STREAM_WS_PORT, from the "
    "environment or .env: ws://localhost:8765]",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    help="Exit (status 0) after this many frames. [default: run until Ctrl-C]",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Give up (exit status 3) when no server answered for this many seconds, at start "
    f"or after losing it. [default: {COUNT_TIMEOUT_S:g} with --count, else keep trying]",
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
    help="json: the spec's 'Received: {...}' lines; table: redrawn in place on a terminal "
    "(a few times a second), one line per sample under a header otherwise; csv.",
)
@click.option("--stats", is_flag=True, help="Print rate, latency and gaps (by seq) every second.")
@click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="On reconnecting, first get every sample missed meanwhile (not with --max-rate).",
)
def main(
    url: str | None,
    count: int | None,
    timeout: float | None,
    devices: str | None,
    fields: str | None,
    max_rate: float | None,
    form: str,
    stats: bool,
    resume: bool,
) -> None:
    """Connect to the broadcaster and print each sample as it arrives."""
    headers = {}
    if url is None:
        url = broadcaster_url(os.environ)
        token = os.environ.get("STREAM_WS_TOKEN")
        if token and "token" not in dict(parse_qsl(urlsplit(url).query)):
            headers["Authorization"] = f"Bearer {token}"  # never shown in the URL it prints
    if timeout is None and count is not None:
        timeout = COUNT_TIMEOUT_S
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
    output = Output(form, stats, max_rate)

    async def run() -> None:
        try:
            # A downsampled stream has gaps by design: the server refuses to resume it.
            await listen(url, count, output, resume and max_rate is None, timeout, headers)
        finally:
            output.close()

    try:
        asyncio.run(run())
    except InvalidURI as exc:
        raise click.BadParameter(str(exc), param_hint="'--url'") from None
    except Unreachable as exc:
        print(f"test_client: error: {exc}", file=sys.stderr)
        sys.exit(UNREACHABLE)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    try:
        read_env_file()
        main.main(standalone_mode=False)
    except click.ClickException as exc:
        print(f"test_client: error: {' '.join(exc.format_message().split())}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
