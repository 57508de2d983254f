"""SIGTERM/SIGINT (the pipeline was stopped) recorded by a handler, acted on at safe points; the
pipe may ask for the same stop itself (``StopRequests.stop``: the deploy lock was lost).

The handler never raises: an exception thrown from inside an HTTP call could leave the AWS client
in a broken state, or cut SendCommand off after AWS accepted it, losing the command id. The
deploy asks ``raise_if_requested`` between steps and between polls, and then cancels the command.
``stop_between_attempts`` adds one more safe point before anything is sent: between the attempts
of a retried AWS call.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

from pipe.errors import DeployStopped, PipeError

if TYPE_CHECKING:
    from botocore.client import BaseClient


class Interrupted(PipeError):
    """The pipe received SIGTERM or SIGINT."""


class StopRequests:
    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.reason: str | None = None  # a stop the pipe asked for itself, in words
        # Set once SendCommand is attempted: from then on a command may exist, and only the follow
        # loop may act on a stop, because it cancels the command (and the user is told it was sent).
        self.sending_started = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name

    def stop(self, reason: str) -> None:
        """Stop at the next safe point as for a signal; ``reason`` (a clause, no full stop) says why.
        Safe to call from another thread."""
        self.reason = reason

    @property
    def requested(self) -> bool:
        return bool(self.signal_name or self.reason)

    def raise_if_requested(self) -> None:
        if self.requested:
            raise Interrupted(self._stopped())

    def raise_stopped_if_requested(self, then: str) -> None:
        """A stop once the deploy has begun to act: DeployStopped, its message ending with ``then``
        (what was going on, and what the pipe did or left)."""
        if self.requested:
            raise DeployStopped(f"{self._stopped()} {then}")

    def _stopped(self) -> str:
        if self.signal_name:
            return f"Received {self.signal_name}: the pipeline was stopped"
        return str(self.reason)


@contextmanager
def stop_requests() -> Iterator[StopRequests]:
    requests = StopRequests()
    previous = {sig: signal.signal(sig, requests.handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield requests
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# the first calls that change something outside the pipe: from them on, a stop is handled by the
# stage that made them (the follow loop cancels a command; the load balancer hook registers back; the
# scaling hold resumes what it suspended, which a stop cut short between attempts would leave held)
CHANGES = (".SendCommand", ".DeregisterTargets", ".SuspendProcesses")


def stop_between_attempts(client: BaseClient, stops: StopRequests) -> None:
    """Act on a stop before each attempt of ``client``'s calls, retries included, until SendCommand.

    Without it a stop during a throttled call waits for the whole retry budget (10 attempts with
    back-off: 35-53 s measured). botocore emits ``before-send`` before every attempt, after the
    back-off and the adaptive rate limiter's wait (botocore/endpoint.py ``_do_get_response``); an
    exception raised there is not retried, so the call ends with it and nothing more is sent.

    SendCommand itself is never cut short (its command id must not be lost), and neither is any call
    after it: the stop then reaches the follow loop, which cancels what was sent. DeregisterTargets
    starts the same way: from it on, registering the instances back must not be cut short; so does
    SuspendProcesses (resuming must not be). So an ``Interrupted`` raised here always means that nothing
    was sent to the instances, taken out of a load balancer or held in an Auto Scaling group.
    """

    def before_attempt(event_name: str, **_: object) -> None:
        if event_name.endswith(CHANGES):
            stops.sending_started = True
        if not stops.sending_started:
            stops.raise_if_requested()

    client.meta.events.register("before-send", before_attempt)
