"""The error type users see: one line naming the file, line or option and what is wrong."""

from __future__ import annotations


class GraphrecError(ValueError):
    """Bad input or configuration. Command-line entry points print it as one line and exit 2."""


class TrainingDiverged(GraphrecError):
    """Training met a non-finite loss or gradient and stopped; the last good state is kept.
    Command lines exit with code 1 (the run failed, the input was not necessarily bad)."""

    exit_code = 1


class TrainingInterrupted(GraphrecError):
    """Training stopped by Ctrl-C or SIGTERM after saving a resumable state.

    ``exit_code`` is the shell's convention for the signal (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code
