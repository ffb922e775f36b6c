"""The one user-facing error type of the command line (its own module, so `python -m deploy.cli` and the
`sidstream` script see the same class)."""


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code 1 (or `code`)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code
