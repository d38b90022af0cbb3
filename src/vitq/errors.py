"""The one exception type vitq raises for problems a user can fix (bad input, wrong lifecycle order)."""


class VitqError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero, without a traceback."""
