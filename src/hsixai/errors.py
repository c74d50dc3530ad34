"""The one exception type for expected failures (bad input, bad params).

The CLI prints these as a single line and exits non-zero without a traceback;
anything else is a bug and keeps its traceback.
"""


class HsixaiError(Exception):
    """An expected, user-facing error. The message names the file or parameter,
    what was expected and what was found."""


class Interrupted(HsixaiError):
    """A run stopped on purpose by a signal (SIGINT, SIGTERM) after cleaning up; exits 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum
