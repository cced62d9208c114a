"""Shared command-line plumbing: options every process takes and one-line errors.

Each setting is a click option with a `STREAM_*` environment-variable fallback, and every
command reads `./.env` (common.envfile), so one `.env` configures `honcho start` and a
plain shell alike. Errors never show a traceback: a bad option
exits with status 2, a start-up failure (port in use, unwritable file) with status 3.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from common import durations, envfile, shards
from common.bus import DEFAULT_CATCHUP, DEFAULT_CONTROL, DEFAULT_PUB, Security, parse_endpoint
from common.errors import StartupError
from common.logs import LEVELS
from common.metrics import ANY_PORT
from common.shards import Shard
from common.signals import stop_on_signals

# Old environment variables that still work, with a warning, until they are removed.
DEPRECATED_ENV = {"STREAM_ZMQ_REPLAY": "STREAM_ZMQ_CATCHUP"}


def option(name: str, envvar: str | None, *decls: str, **kwargs: Any) -> Callable[..., Any]:
    """A click option with its environment variable and default shown in --help."""
    kwargs.setdefault("show_default", kwargs.get("default") is not None)
    return click.option(name, *decls, envvar=envvar, show_envvar=envvar is not None, **kwargs)


def given_as(ctx: click.Context, name: str) -> str | None:
    """How a setting was given, for an error message: `--flag`, its variable (from the
    environment or .env), or None if it was left at its default."""
    source = ctx.get_parameter_source(name)
    if source in (None, click.core.ParameterSource.DEFAULT):
        return None
    param = next(p for p in ctx.command.params if p.name == name)
    if source is click.core.ParameterSource.ENVIRONMENT and isinstance(param.envvar, str):
        return param.envvar
    return param.opts[0] if param.opts else f"--{name.replace('_', '-')}"


def _check_endpoint(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """One endpoint, or a comma list of them (one per producer instance)."""
    if value is None:
        return None
    try:
        for endpoint in value.split(","):
            parse_endpoint(endpoint.strip())
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def zmq_pub_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return option(
        "--zmq-pub",
        "STREAM_ZMQ_PUB",
        default=DEFAULT_PUB,
        callback=_check_endpoint,
        help="ZeroMQ endpoint the producer binds and the logger and broadcaster connect to.",
    )(func)


def _replay_alias(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        click.echo(
            f"{ctx.info_name}: warning: --zmq-replay is deprecated; use --zmq-catchup", err=True
        )
        ctx.meta["zmq_replay"] = _check_endpoint(ctx, param, value)


def zmq_catchup_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """--zmq-catchup, and the old --zmq-replay (hidden; it warns); read with `catchup_from`."""
    func = click.option(
        "--zmq-replay", hidden=True, expose_value=False, is_eager=True, callback=_replay_alias
    )(func)
    return option(
        "--zmq-catchup",
        "STREAM_ZMQ_CATCHUP",
        default=DEFAULT_CATCHUP,
        callback=_check_endpoint,
        help="ZeroMQ endpoint where the producer answers requests for missed samples.",
    )(func)


def catchup_from(ctx: click.Context, value: str) -> str:
    """The catch-up endpoint given, the deprecated --zmq-replay winning if it was used."""
    return ctx.meta.get("zmq_replay") or value


def zmq_control_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return option(
        "--zmq-control",
        "STREAM_ZMQ_CONTROL",
        default=DEFAULT_CONTROL,
        callback=_check_endpoint,
        help="ZeroMQ endpoint where the producer takes control commands (python -m producer ctl).",
    )(func)


def ready_file_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return option(
        "--ready-file",
        "STREAM_READY_FILE",
        help="Write this JSON file (endpoints, ports, pid) once serving; {instance} in the path "
        "becomes the instance name (honcho's producer.2, or the process name).",
    )(func)


def shard_option(process: str, envvar: str) -> Callable[..., Any]:
    """--shard I/N or auto: which instance of several this is (see common.shards)."""

    def resolve(ctx: click.Context, param: click.Parameter, value: str) -> Shard:
        try:
            return shards.resolve(value, process)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return option(
        "--shard",
        envvar,
        default="auto",
        callback=resolve,
        help=f"This {process}'s share of the devices, as I/N (instance I of N), or auto: "
        f"from honcho ({process}.I of -c {process}=N), else 1/1.",
    )


def producers_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """--producers: how many producers to connect to; read with `producer_endpoints`."""
    return option(
        "--producers",
        "STREAM_PRODUCERS",
        default="auto",
        help="How many producers there are (their endpoints follow the first one's; see "
        "Scaling out), or auto: from honcho's -c producer=N, else as many as endpoints given.",
    )(func)


def producer_endpoints(setting: str, producers: str) -> list[str]:
    """Every producer's endpoint, from an endpoint setting and the --producers setting."""
    given = [e for e in setting.split(",") if e.strip()]
    if producers.strip().lower() == "auto":
        count = shards.honcho_concurrency("producer") or len(given)
    else:
        try:
            count = int(producers)
        except ValueError:
            count = 0
        if not 1 <= count <= shards.GROUPS:
            raise click.BadParameter(
                f"{producers!r}: expected 1..{shards.GROUPS} or auto", param_hint="'--producers'"
            )
    return shards.endpoints(setting, max(count, len(given)))


class _MetricsPort(click.ParamType):
    name = "port|any"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        if str(value).strip().lower() == "any":
            return ANY_PORT
        try:
            port = int(value)
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            self.fail(f"{value!r}: expected a port 0-65535 (0: off) or 'any'", param, ctx)
        return port


def metrics_port_option(envvar: str) -> Callable[..., Any]:
    return option(
        "--metrics-port",
        envvar,
        default=0,
        type=_MetricsPort(),
        help="Serve Prometheus /metrics on 127.0.0.1:PORT (0: off; any: a free port, "
        "written to the ready file).",
    )


def security_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--curve-dir and --allow-insecure; turn them into a Security with `security_from`."""
    func = option(
        "--allow-insecure",
        "STREAM_ZMQ_ALLOW_INSECURE",
        is_flag=True,
        help="Allow binding ZeroMQ beyond this machine without CURVE encryption.",
    )(func)
    return option(
        "--curve-dir",
        "STREAM_ZMQ_CURVE_DIR",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help="Keys directory ('python -m producer keys'): encrypt and authenticate ZeroMQ.",
    )(func)


def security_from(curve_dir: Path | None, allow_insecure: bool) -> Security:
    return Security(curve_dir=curve_dir, allow_insecure=allow_insecure)


def log_level_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return option(
        "--log-level",
        "STREAM_LOG_LEVEL",
        default="INFO",
        type=click.Choice(LEVELS, case_sensitive=False),
        help="Logging threshold.",
    )(func)


def duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """A click callback: a duration (common.durations: `90s`, `30m`, `1h30m`, `7d` or plain
    seconds) as seconds."""
    try:
        return durations.seconds(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def serve(run: Callable[[Any, asyncio.Event], Awaitable[None]], config: Any) -> None:
    """Run a process's `run(config, stop)` until SIGINT or SIGTERM sets `stop`."""

    async def until_signalled() -> None:
        await run(config, stop_on_signals())

    # What is alive now (modules, config: most of the heap) never becomes garbage: out of
    # the collector's sight, a full collection no longer walks it while samples wait.
    gc.freeze()
    asyncio.run(until_signalled())


def fail(prog: str, message: str, status: int) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(status)


def _deprecated_env(prog: str) -> None:
    """Honour old variable names (with a warning) where the new one is not set."""
    for old, new in DEPRECATED_ENV.items():
        if old in os.environ:
            print(f"{prog}: warning: {old} is deprecated; use {new}", file=sys.stderr)
            os.environ.setdefault(new, os.environ[old])


def main(command: click.Command, prog: str) -> NoReturn:
    """Run a click command the way every process's `__main__` does: `./.env` read first
    (common.envfile), so it configures a plain shell's commands as it does honcho's."""
    try:
        envfile.load()
    except ValueError as exc:
        fail(prog, str(exc), 2)
    _deprecated_env(prog)
    try:
        # Without standalone mode, click returns (not raises) the status of Exit(n).
        status = command.main(prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        fail(prog, " ".join(exc.format_message().split()), exc.exit_code)
    except StartupError as exc:
        fail(prog, str(exc), exc.status)
    sys.exit(status if isinstance(status, int) else 0)
