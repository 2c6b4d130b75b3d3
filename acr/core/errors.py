"""The one error type a user can fix: the CLI prints its lines (no traceback) and exits with code 2."""


class UsageError(Exception):
    """Bad usage, config or environment, detected before anything is written.

    Each entry of `lines` is one complete message: what is wrong, where, and how to fix it.
    """

    def __init__(self, *lines: str):
        super().__init__("\n".join(lines))
        self.lines = list(lines)
