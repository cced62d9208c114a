"""The `.env` file: every command reads it, as honcho does, so one file configures a pipeline
whether it runs under `honcho start` or command by command in a plain shell.

Precedence: the command line, then the environment, then `.env`, then the default. The
file is parsed by honcho's own parser, so it means the same to a process as to honcho.
Under honcho (HONCHO_PROCESS_NAME is set) nothing is read: honcho has applied its env
files already, possibly others than `./.env` (`honcho -e other.env`).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

ENV_FILE = Path(".env")


def read(path: Path = ENV_FILE) -> dict[str, str]:
    """The settings in `path` (honcho's format); none if there is no such file. ValueError,
    naming the file, if it cannot be read or parsed."""
    try:
        text = path.read_text()
    except (FileNotFoundError, IsADirectoryError):
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    from honcho.environ import parse

    try:
        return parse(text)
    except ValueError as exc:  # shlex: an unbalanced quote
        raise ValueError(f"cannot read {path}: {str(exc).lower()}") from None


def load(path: Path = ENV_FILE, environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Put the file's settings into the environment where it has none of its own; return the
    names taken from the file (nothing under honcho, which has done it already)."""
    environ = os.environ if environ is None else environ
    if "HONCHO_PROCESS_NAME" in environ:
        return []
    taken = []
    for name, value in read(path).items():
        if name not in environ:
            environ[name] = value
            taken.append(name)
    return taken
