"""Exceptions that end the pipe with a clear, user-facing message (never a traceback).

The standard wordings live here, in the types, so every site says them the same way:
``<VARIABLE>: nothing was sent. <problem>`` before SendCommand, and ``... The command may still be
running on the instances: see <links>`` when following ends early.
"""

from __future__ import annotations

from collections.abc import Sequence


class PipeError(Exception):
    """A failure the user can act on; the message says what went wrong and how to fix it."""


class ValidationFailed(PipeError):
    """One or more pipe variables are invalid; ``problems`` maps each variable to its reasons."""

    def __init__(self, problems: dict[str, list[str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{name}: {', '.join(reasons)}" for name, reasons in problems.items()))


class NothingSent(PipeError):
    """Refused before SendCommand: names what to fix (a variable, or the deploy role)."""

    def __init__(self, subject: str, problem: str, fix: str = "") -> None:
        self.subject = subject
        text = f"{subject}: nothing was sent. {sentence(problem)}"
        super().__init__(text + (f" Fix: {sentence(fix)}" if fix else ""))


class SendOutcomeUnknown(PipeError):
    """SendCommand's answer was lost and ListCommands could not tell whether AWS accepted it: a
    command may be running, so the deploy counts as sent (and failed), never as "not sent"."""


class DeployFailed(PipeError):
    """The command ran but did not succeed on every instance."""


class DeployStopped(DeployFailed):
    """Following the command ended early (pipeline stopped, wait bound, AWS unreachable): no health
    check or rollback is attempted after it."""


class StillRunning(DeployStopped):
    """Following stopped after SendCommand while the command may still run: names it and its links.
    ``aws_answered``: SSM still answers (a cancellation it did not confirm in time), so the instances
    can be asked where ``current`` points; False when AWS is out of reach or refused a call."""

    def __init__(self, problem: str, command_ids: Sequence[str], where: str, *, aws_answered: bool = False) -> None:
        self.command_ids = tuple(command_ids)
        self.aws_answered = aws_answered
        super().__init__(f"{sentence(problem)} The command may still be running on the instances: see {where}")


def sentence(text: str) -> str:
    """End ``text`` with a full stop unless it ends a sentence already."""
    text = text.strip()
    return text if not text or text[-1] in ".!?" else text + "."
