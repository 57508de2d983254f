"""Turn SIGTERM/SIGINT (the pipeline was stopped) into an exception the deploy can clean up after."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from pipe.errors import PipeError


class Interrupted(PipeError):
    """The pipe received SIGTERM or SIGINT."""


@contextmanager
def interrupts_raise() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(f"Received {signal.Signals(signum).name}: the pipeline was stopped")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
