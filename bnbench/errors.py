"""The one exception type the CLI turns into a one-line message and exit code 2."""


class BnbenchError(Exception):
    """A user-facing error: its message is one line naming what is wrong and where."""
