"""Errors shared by the processes."""


class StartupError(Exception):
    """The process cannot start with the given settings; the message says why, in one line."""
