"""SIGTERM/SIGINT (the pipeline was stopped) recorded by a handler, acted on at safe points.

The handler never raises: an exception thrown from inside an HTTP call could leave the AWS client
in a broken state, or cut SendCommand off after AWS accepted it, losing the command id. The
deploy asks ``raise_if_requested`` between steps and between polls, and then cancels the command.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from pipe.errors import PipeError


class Interrupted(PipeError):
    """The pipe received SIGTERM or SIGINT."""


class StopRequests:
    def __init__(self) -> None:
        self.signal_name: str | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name

    def raise_if_requested(self) -> None:
        if self.signal_name:
            raise Interrupted(f"Received {self.signal_name}: the pipeline was stopped")


@contextmanager
def stop_requests() -> Iterator[StopRequests]:
    requests = StopRequests()
    previous = {sig: signal.signal(sig, requests.handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield requests
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
