"""`python -m producer`: the command line, which only builds a config and runs it.

`python -m producer` publishes live; `python -m producer generate` backfills a CSV or Parquet file.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from common.cli import (
    catchup_from,
    duration,
    given_as,
    log_level_option,
    metrics_port_option,
    option,
    producer_endpoints,
    producers_option,
    ready_file_option,
    security_from,
    security_options,
    serve,
    shard_option,
    zmq_catchup_option,
    zmq_control_option,
    zmq_pub_option,
)
from common.logs import setup_logging
from common.schema import METRICS, device_problem
from producer import service
from producer.config import ON_BAD_ROW, SOURCES, ProducerConfig
from producer.model import anomalies
from producer.model.roles import ROLES, RoleMix
from producer.model.scenario import Scenario, ScenarioError, load
from producer.outputs import FORMATS

# A rate change sent to several producers takes effect this long after it is sent, at the
# same tick on each (common.control, at_ms).
RATE_CHANGE_LEAD_MS = 500


def _start(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """An ISO date or date-time (UTC unless it says otherwise) as epoch milliseconds."""
    if value is None or value == "":
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date or time like 2025-08-03 or 2025-08-03T14:00:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def _positive_duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    seconds = duration(ctx, param, value)
    if seconds <= 0:
        raise click.BadParameter(f"{value!r} is not a positive duration like 90s, 30m or 7d")
    return seconds


def _device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    problem = device_problem(value)
    if problem:
        raise click.BadParameter(problem)
    return value


def _parsed(parse: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, str], Any]:
    """A click callback that turns a parser's ValueError into a one-line usage error."""

    def callback(ctx: click.Context, param: click.Parameter, value: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


def _scenario(ctx: click.Context, param: click.Parameter, value: str | None) -> Scenario | None:
    """The scenario file, read and checked; a bad one is a one-line usage error."""
    if not value:
        return None
    try:
        return load(value)
    except ScenarioError as exc:
        raise click.UsageError(str(exc)) from None


def _fleet(ctx: click.Context, scenario: Scenario | None, devices: int) -> int:
    """The number of devices: the scenario's fleet, which --devices and --roles must not
    contradict."""
    if scenario is None:
        return devices
    for name in ("devices", "roles"):
        how = given_as(ctx, name)
        if how is not None:
            raise click.UsageError(
                f"{how} conflicts with --scenario {scenario.file}: its [[group]] tables make "
                "the fleet; leave it out"
            )
    return len(scenario.devices)


def _source(ctx: click.Context, source: str, replay_file: Path | None) -> str:
    """The source: a replay file alone means replay; with another source it is refused,
    never silently ignored."""
    if replay_file is None or source == "replay":
        return source
    how = given_as(ctx, "source")
    if how is None:
        return "replay"
    file_how = given_as(ctx, "replay_file")
    raise click.UsageError(
        f"{file_how} needs --source replay, not {how} {source}: leave one of them out"
    )


def _simulation_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options that shape the simulated data, shared by live publishing and backfill."""
    for decorator in reversed(
        [
            option(
                "--rate",
                "STREAM_RATE",
                default=1.0,
                type=click.FloatRange(0, 1000, min_open=True),
                help="Samples per second, per device (per simulated second with --speed).",
            ),
            option(
                "--devices",
                "STREAM_DEVICES",
                default=1,
                type=click.IntRange(1, 100_000),
                help="Number of simulated devices (host-01, host-02, ...).",
            ),
            option(
                "--seed",
                "STREAM_SEED",
                default=None,
                type=click.IntRange(0, 2**63 - 1),
                help="Random seed; the same seed gives the same data. [default: random]",
            ),
            option(
                "--anomaly-rate",
                "STREAM_ANOMALY_RATE",
                default=anomalies.DEFAULT_RATE_PER_HOUR,
                type=click.FloatRange(0, anomalies.MAX_RATE_PER_HOUR),
                help="Anomalies per device per hour, all kinds together (0 turns them off).",
            ),
            option(
                "--anomaly-kinds",
                "STREAM_ANOMALY_KINDS",
                default="all",
                callback=_parsed(anomalies.parse_kinds),
                help="Comma list of kinds, each KIND or KIND=WEIGHT (all,spike=3,drift=0): "
                + ", ".join(anomalies.CATALOGUE)
                + ".",
            ),
            option(
                "--anomaly-duration",
                "STREAM_ANOMALY_DURATION",
                "anomaly_durations",
                default="",
                callback=_parsed(anomalies.parse_durations),
                help="Durations instead of the catalogue's, KIND=MIN-MAX "
                "(spike=1s-10s,drift=5m-20m).",
            ),
            option(
                "--roles",
                "STREAM_ROLES",
                default="mix",
                callback=_parsed(RoleMix.parse),
                help="Device roles: mix (the default fleet), one role, or counts per block "
                "(web=3,db=1): " + ", ".join(ROLES) + ".",
            ),
            option(
                "--scenario",
                "STREAM_SCENARIO",
                callback=_scenario,
                type=click.Path(dir_okay=False),
                help="TOML file of a fleet (instead of --devices and --roles) and a timeline of "
                "incidents, maintenance, deploys and load tests (see scenarios/).",
            ),
        ]
    ):
        func = decorator(func)
    return func


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@option(
    "--source",
    "STREAM_SOURCE",
    default="sim",
    type=click.Choice(SOURCES),
    help="sim: the simulation; replay: a CSV file; live: this machine's real metrics.",
)
@_simulation_options
@shard_option("producer", "STREAM_PRODUCER_SHARD")
@zmq_pub_option
@zmq_catchup_option
@zmq_control_option
@security_options
@option(
    "--history",
    "STREAM_HISTORY",
    "history_s",
    default=600.0,
    type=click.FloatRange(0, 86_400),
    help="Seconds of published samples kept for subscribers that missed them.",
)
@option(
    "--history-mb",
    "STREAM_HISTORY_MB",
    default=256,
    type=click.IntRange(1, 65_536),
    help="Memory bound of that history, in MiB.",
)
@option(
    "--state",
    "STREAM_STATE",
    default="data/producer_state.json",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the series (seed, tick grid, seq numbers) is kept across restarts.",
)
@option(
    "--start",
    "STREAM_START",
    callback=_start,
    help="Simulated time of the first sample, e.g. 2025-08-03T14:00:00 (UTC). [default: now]",
)
@option(
    "--speed",
    "STREAM_SPEED",
    default=1.0,
    type=click.FloatRange(0, 1_000_000, min_open=True),
    help="Simulated seconds per wall second (3600: an hour per second); replay pace too.",
)
@option(
    "--replay-file",
    "STREAM_REPLAY_FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV to replay: our own log, or timestamp,value (NAB).",
)
@option(
    "--replay-loop/--no-replay-loop",
    "STREAM_REPLAY_LOOP",
    default=False,
    help="Start the replay over when it ends.",
)
@option(
    "--replay-metric",
    "STREAM_REPLAY_METRIC",
    default="cpu",
    type=click.Choice(METRICS),
    help="Metric that the value column of a timestamp,value file becomes.",
)
@option(
    "--replay-labels",
    "STREAM_REPLAY_LABELS",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="NAB combined_windows.json: samples inside the replay file's windows are labelled.",
)
@option(
    "--on-bad-row",
    "STREAM_ON_BAD_ROW",
    default="error",
    type=click.Choice(ON_BAD_ROW),
    help="A replay row that is not a valid sample: error (refuse to start) or skip it "
    "(recorded as a gap, reason invalid_input).",
)
@metrics_port_option("STREAM_PRODUCER_METRICS_PORT")
@ready_file_option
@log_level_option
@click.pass_context
def main(ctx: click.Context, log_level: str, **options: Any) -> None:
    """Simulate machine metrics and publish them on a ZeroMQ PUB socket."""
    if ctx.invoked_subcommand is not None:
        return
    setup_logging(log_level)
    options["start_ms"] = options.pop("start")
    options["history_bytes"] = options.pop("history_mb") * 1024 * 1024
    options["security"] = security_from(options.pop("curve_dir"), options.pop("allow_insecure"))
    options["zmq_catchup"] = catchup_from(ctx, options["zmq_catchup"])
    options["source"] = _source(ctx, options["source"], options["replay_file"])
    if options["scenario"] is not None and options["source"] != "sim":
        raise click.UsageError(f"--scenario needs the sim source, not --source {options['source']}")
    options["devices"] = _fleet(ctx, options["scenario"], options["devices"])
    config = ProducerConfig(**options)
    serve(service.run, config)


@main.command(context_settings={"help_option_names": ["-h", "--help"]})
@_simulation_options
@click.option(
    "--duration",
    required=True,
    callback=_positive_duration,
    help="Simulated time to cover: 90s, 30m, 12h, 7d, 2w.",
)
@click.option(
    "--start",
    callback=_start,
    help="Simulated time of the first sample (UTC). [default: the duration before now]",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write (replaced); the anomaly windows go beside it (*.windows.csv). "
    "[default: data/train.csv, or data/train.parquet with --format parquet]",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    help="File format. [default: parquet if --out ends in .parquet or .pq, else csv]",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.pass_context
def generate(
    ctx: click.Context,
    rate: float,
    devices: int,
    seed: int | None,
    anomaly_rate: float,
    anomaly_kinds: dict[str, float],
    anomaly_durations: dict[str, tuple[float, float]],
    roles: RoleMix,
    scenario: Scenario | None,
    duration: float,
    start: int | None,
    out: Path | None,
    fmt: str | None,
    progress: bool,
) -> None:
    """Write the simulation for a span of time straight to CSV or Parquet, with labels and
    windows."""
    from common.windows import windows_path
    from producer.backfill import generate as backfill
    from producer.backfill import plan
    from producer.outputs import format_for

    devices = _fleet(ctx, scenario, devices)
    if out is None:
        out = Path(f"data/train.{fmt or 'csv'}")
    fmt = format_for(out, fmt)
    series, ticks = plan(devices, rate, duration, seed, start)
    with _ProgressBar(ticks * devices, shown=progress) as bar:
        rows, seconds = backfill(
            out,
            series,
            ticks,
            anomaly_rate,
            anomaly_kinds,
            progress=bar.advance,
            fmt=fmt,
            anomaly_durations=anomaly_durations,
            roles=roles,
            scenario=scenario,
        )
    if fmt == "csv":  # which series the file holds, as a logger records it (common.logseries)
        from common import logseries
        from common.schema import precision_for_rate
        from producer.sources.series import identity

        logseries.write(out, identity(series), precision_for_rate(rate))
    click.echo(
        f"wrote {rows:,} samples to {out} and anomaly windows to {windows_path(out)} "
        f"in {seconds:.2f} s ({rows / seconds:,.0f} samples/s); seed {series.seed}",
        err=True,
    )


class _ProgressBar:
    """A backfill's progress on stderr, begun with the first samples written, so that a file
    that cannot be created is one line of error with no bar before it. Not `shown`: the
    label alone."""

    def __init__(self, total: int, shown: bool) -> None:
        self._bar = click.progressbar(
            length=total, label=f"{total:,} samples", file=sys.stderr, show_eta=True
        )
        self._shown = shown
        self._begun = False

    def advance(self, samples: int) -> None:
        if not self._begun:
            self._bar.__enter__()
            self._begun = True
        if self._shown:
            self._bar.update(samples)

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._begun:
            self._bar.__exit__(*exc)


@main.command(context_settings={"help_option_names": ["-h", "--help"]})
@option("--roles", "STREAM_ROLES", default="mix", callback=_parsed(RoleMix.parse))
@option("--devices", "STREAM_DEVICES", default=None, type=click.IntRange(1, 100_000))
@option("--seed", "STREAM_SEED", default=None, type=click.IntRange(0, 2**63 - 1))
def roles(roles: RoleMix, devices: int | None, seed: int | None) -> None:
    """List the device roles; with --seed and --devices, which role each device has."""
    from producer.model.roles import describe
    from producer.sources.sim import device_name

    click.echo(describe(roles))
    if seed is not None and devices is not None:
        names = roles.names(seed, list(range(devices)))
        click.echo("")
        click.echo("\n".join(f"{device_name(i)}  {name}" for i, name in enumerate(names)))


@main.command("scenario", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", type=click.Path(dir_okay=False), callback=_scenario)
@click.option(
    "--start",
    callback=_start,
    help="Simulated time of the series' first sample (UTC). [default: now]",
)
def scenario_command(file: Scenario, start: int | None) -> None:
    """Check a scenario file; list its fleet and its episodes with their times and ids."""
    from producer.model.timeline import describe

    origin = start if start is not None else math.ceil(time.time()) * 1000
    click.echo(describe(file, origin))


@main.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--dir",
    "directory",
    default="keys",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write public/ and private/ key files.",
)
def keys(directory: Path) -> None:
    """Create CURVE key pairs for ZeroMQ across machines (then use --curve-dir DIR).

    Give every process the same directory; the producer needs private/server.key_secret,
    the others private/client.key_secret, all need public/.
    """
    from common.bus import make_keys

    make_keys(directory)
    click.echo(f"wrote CURVE keys to {directory}/public and {directory}/private", err=True)


@main.group(context_settings={"help_option_names": ["-h", "--help"]})
@zmq_control_option
@producers_option
@security_options
@click.option("--timeout", default=3.0, show_default=True, help="Seconds to wait for an answer.")
@click.pass_context
def ctl(
    ctx: click.Context,
    zmq_control: str,
    producers: str,
    curve_dir: Path | None,
    allow_insecure: bool,
    timeout: float,
) -> None:
    """Steer running producers: status, inject, rate, pause, resume.

    With several producers, inject goes to the one that owns the device, the others to
    all of them, and the answer is a list with one entry per producer. Without
    --producers, the producers are found from their ready files (STREAM_READY_FILE) or
    from producer 1, which knows how many there are. Which pipeline answered (directory,
    pids, seed) is said on stderr."""
    import os

    from common.shards import honcho_concurrency
    from producer.control.client import formation

    security = security_from(curve_dir, allow_insecure)
    endpoints = producer_endpoints(zmq_control, producers)
    counted = producers.strip().lower() != "auto" or honcho_concurrency("producer") is not None
    if not counted and len(endpoints) == 1:
        endpoints = formation(zmq_control, security, timeout, os.environ.get("STREAM_READY_FILE"))
    ctx.obj = (endpoints, security, timeout)


def _send(ctx: click.Context, request: dict[str, Any], device: str | None = None) -> None:
    """Ask every producer (or the owner of `device`); print the answers; fail if one did.
    Which pipeline answered goes to stderr when all went well (an error stays one line)."""
    from common.shards import Shard
    from producer.control.client import ask_all, describe

    endpoints, security, timeout = ctx.obj
    targets = list(enumerate(endpoints, 1))
    if device is not None and len(endpoints) > 1:
        targets = [(i, e) for i, e in targets if Shard(i, len(endpoints)).owns(device)]
    if request["cmd"] == "rate" and len(endpoints) > 1:
        # Every producer re-anchors on the same tick: the formation stays one series.
        request = {**request, "at_ms": round(time.time() * 1000) + RATE_CHANGE_LEAD_MS}
    statuses = ask_all(endpoints, {"cmd": "status"}, timeout, security)
    about = describe(endpoints, statuses)
    if request["cmd"] == "status":
        replies = [statuses[i - 1] for i, _ in targets]
    else:
        replies = ask_all([e for _, e in targets], request, timeout, security)
    failed = [(i, r) for (i, _), r in zip(targets, replies, strict=True) if not r.get("ok")]
    for reply in replies:
        reply.pop("ok", None)
    for line in [] if failed else about:
        click.echo(line, err=True)
    if len(endpoints) == 1:
        if failed:
            raise click.ClickException(str(failed[0][1].get("error", "the producer refused")))
        click.echo(json.dumps(replies[0], indent=2))
        return
    answers = [
        {"producer": i, "endpoint": e, **r} for (i, e), r in zip(targets, replies, strict=True)
    ]
    click.echo(json.dumps(answers, indent=2))
    if failed:
        raise click.ClickException(
            "; ".join(f"producer {i}: {r.get('error', 'refused')}" for i, r in failed)
        )


@ctl.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Print the producer's state."""
    _send(ctx, {"cmd": "status"})


@ctl.command()
@click.pass_context
def pause(ctx: click.Context) -> None:
    """Stop publishing; the ticks skipped are recorded as not produced."""
    _send(ctx, {"cmd": "pause"})


@ctl.command()
@click.pass_context
def resume(ctx: click.Context) -> None:
    """Publish again, from the current tick (no catch-up burst)."""
    _send(ctx, {"cmd": "resume"})


@ctl.command()
@click.argument("rate", type=click.FloatRange(0, 1000, min_open=True))
@click.pass_context
def rate(ctx: click.Context, rate: float) -> None:
    """Change the rate (samples per second per device); the schedule is re-anchored."""
    _send(ctx, {"cmd": "rate", "rate": rate})


@ctl.command()
@click.argument("kind", type=click.Choice(list(anomalies.CATALOGUE)))
@click.option("--device", default="host-01", show_default=True, callback=_device)
@click.option("--metric", type=click.Choice(METRICS), help="For one-metric kinds.")
@click.option("--duration", default="30s", show_default=True, callback=_positive_duration)
@click.option("--size", default=0.8, show_default=True, type=click.FloatRange(0, 1))
@click.pass_context
def inject(
    ctx: click.Context, kind: str, device: str, metric: str | None, duration: float, size: float
) -> None:
    """Start an anomaly now, labelled like the random ones."""
    request = {
        "cmd": "inject",
        "kind": kind,
        "device": device,
        "duration_s": duration,
        "size": size,
    }
    if metric:
        request["metric"] = metric
    _send(ctx, request, device=device)
