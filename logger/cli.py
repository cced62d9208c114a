"""`python -m logger`: the command line, which only builds a config and runs it."""

from __future__ import annotations

from pathlib import Path

import click

from common.cli import (
    catchup_from,
    duration,
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
    zmq_pub_option,
)
from common.logs import setup_logging
from common.shards import Shard
from logger import service
from logger.config import LoggerConfig


def _fsync(value: str) -> float | None:
    """always -> 0 (every write), never -> None, else seconds between fsyncs."""
    text = str(value).strip().lower()
    if text == "always":
        return 0.0
    if text == "never":
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1
    if seconds < 0:
        raise click.BadParameter(f"{value!r}: expected always, never or a number of seconds >= 0")
    return seconds


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@zmq_pub_option
@zmq_catchup_option
@producers_option
@shard_option("logger", "STREAM_LOGGER_SHARD")
@security_options
@option(
    "--csv",
    "STREAM_CSV",
    default="data/stream_log.csv",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV file to append to (created with its header if missing); logger I of N>1 "
    "writes NAME.I-of-N.csv beside it.",
)
@option(
    "--flush-interval",
    "STREAM_FLUSH_INTERVAL",
    default=0.5,
    type=click.FloatRange(0.01, 60),
    help="Longest time, in seconds, a received sample waits before it is written.",
)
@option(
    "--fsync",
    "STREAM_FSYNC",
    default="1",
    callback=lambda ctx, param, value: _fsync(value),
    help="When to make writes durable: always (every write), never, or every N seconds.",
)
@option(
    "--rotate-mb",
    "STREAM_ROTATE_MB",
    default=0.0,
    type=click.FloatRange(0, 1_000_000),
    help="Start a new file when the CSV would pass this size (0: never).",
)
@option(
    "--rotate-every",
    "STREAM_ROTATE_EVERY",
    default="0",
    callback=duration,
    help="Start a new file this often, e.g. 1h or 1d (0: never).",
)
@metrics_port_option("STREAM_LOGGER_METRICS_PORT")
@ready_file_option
@log_level_option
@click.pass_context
def main(
    ctx: click.Context,
    zmq_pub: str,
    zmq_catchup: str,
    producers: str,
    shard: Shard,
    curve_dir: Path | None,
    allow_insecure: bool,
    csv: Path,
    flush_interval: float,
    fsync: float | None,
    rotate_mb: float,
    rotate_every: float,
    metrics_port: int,
    ready_file: str | None,
    log_level: str,
) -> None:
    """Subscribe to the samples and append every one of them to a CSV file."""
    if ctx.invoked_subcommand is not None:
        return
    setup_logging(log_level)
    config = LoggerConfig(
        zmq_pub=",".join(producer_endpoints(zmq_pub, producers)),
        zmq_catchup=",".join(producer_endpoints(catchup_from(ctx, zmq_catchup), producers)),
        shard=shard,
        security=security_from(curve_dir, allow_insecure),
        csv=csv,
        flush_interval=flush_interval,
        fsync_seconds=fsync,
        rotate_bytes=int(rotate_mb * 1024 * 1024),
        rotate_seconds=rotate_every,
        metrics_port=metrics_port,
        ready_file=ready_file,
    )
    serve(service.run, config)


@main.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def windows(files: tuple[Path, ...]) -> None:
    """Print the anomaly windows of the logs in NAB's combined_windows.json format.

    Give one CSV, or every part of a log written by several loggers (stream_log*.csv):
    their windows are joined, keyed by the log's name without the shards."""
    from common.windows import to_nab, windows_path
    from logger.files import base_name, families

    logs = list(families(list(files)))
    paths = [windows_path(live) for live in logs]
    missing = [str(p) for p in paths if not p.exists()]
    if not logs or missing:
        shown = ", ".join(missing) or "any"
        raise click.BadParameter(f"no windows file {shown} beside the CSV", param_hint="FILES")
    names = {base_name(live) for live in logs}
    if len(names) > 1:
        raise click.BadParameter(
            f"these are several logs ({', '.join(sorted(names))}), not parts of one",
            param_hint="FILES",
        )
    click.echo(to_nab(paths, names.pop()))


@main.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@option(
    "--csv",
    "STREAM_CSV",
    default="data/stream_log.csv",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With no FILES: the log to check, every file of it (rotated parts, loggers' shards).",
)
def verify(files: tuple[Path, ...], csv: Path) -> None:
    """Check CSV logs for gaps, duplicates, torn and out-of-order rows: FILES in any order,
    or every file of the log --csv names. Files of different series (another seed, fleet
    or run) are checked each series on its own.

    Exit status 0 when all is well, 1 when a problem was found.
    """
    from common.logseries import describe
    from logger.verify import log_files, verify_by_series

    paths = list(files) or log_files(csv)
    if not paths:
        raise click.BadParameter(f"no log {csv} (nor parts of it) to check", param_hint="--csv")
    ok = True
    for series, group, report in verify_by_series(paths):
        click.echo(f"series: {describe(series)} ({', '.join(map(str, group))})")
        for line in report.lines():
            click.echo(line)
        ok = ok and report.ok
    if not ok:
        raise click.exceptions.Exit(1)
