"""The errors bnbench reports to its user: one line naming what is wrong and where, and an exit code."""


class BnbenchError(Exception):
    """A user-facing error: its message is one line naming what is wrong and where.

    ``exit_code`` is what the command line exits with: 2 for bad input (the default; the command ran
    nothing), 1 for a failure while running (:class:`RunFailure`).
    """

    exit_code = 2


class RunFailure(BnbenchError):
    """The command started and could not finish: a download, a write, the device's memory."""

    exit_code = 1
