"""Exceptions that end the pipe with a clear, user-facing message (never a traceback)."""

from __future__ import annotations


class PipeError(Exception):
    """A failure the user can act on; the message says what went wrong and how to fix it."""


class ValidationFailed(PipeError):
    """One or more pipe variables are invalid; ``problems`` maps each variable to its reasons."""

    def __init__(self, problems: dict[str, list[str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{name}: {', '.join(reasons)}" for name, reasons in problems.items()))


class DeployFailed(PipeError):
    """The command ran but did not succeed on every instance."""


class DeployStopped(DeployFailed):
    """Following the command ended early (pipeline stopped, wait bound, AWS unreachable): no health
    check or rollback is attempted after it."""
