"""AWS's per-account API quotas as token buckets: a call takes a token, tokens come back at the
quota's rate up to the bucket's size, and a call that finds the bucket empty is refused."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up (``burst`` defaults to one second's worth)."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else rate)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()
        self._lock = threading.Lock()
        self.taken = 0
        self.refused = 0

    def take(self) -> bool:
        """Take a token; False (and counted as refused) when none is left."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                self.taken += 1
                return True
            self.refused += 1
            return False
