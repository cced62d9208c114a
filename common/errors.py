"""Errors shared by the processes."""


class StartupError(Exception):
    """The process cannot start with the given settings; the message says why, in one line."""

    status = 3  # the exit status: the environment refused (port in use, unwritable file)


class InputError(StartupError):
    """A setting names input that is not usable (a replay file with a bad row): exit status
    2, like a bad option value."""

    status = 2
