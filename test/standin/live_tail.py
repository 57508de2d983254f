"""CloudWatch Logs' read side: Live Tail sessions and the FilterLogEvents quota, as AWS documents them.

StartLiveTail (API Reference) answers with an event stream: ``initial-response``, one
``sessionStart``, then every second a ``sessionUpdate`` with the events *ingested* in that second
that match the session's log groups and stream-name prefixes (at most 500: above that the update is
a sample and says ``sampled``), until the client closes the stream or the session times out after
three hours (``SessionTimeoutException``); ``SessionStreamingException`` reports a server-side
failure. Events come from PutLogEvents as moto stores them (``moto_bridge`` publishes them here).

Quotas (CloudWatch Logs User Guide, "CloudWatch Logs quotas"), each a token bucket or a counter that
tests may change (``configure``): 15 concurrent Live Tail sessions per account
(LimitExceededException beyond), StartLiveTail 5 TPS, FilterLogEvents 5 TPS in the smallest Regions
(10 in most, 25 in us-east-1), shared by every caller of the account (ThrottlingException). AWS
documents no burst for them: each bucket holds one second's worth. ``throttle_starts`` stands for
the other callers of the account (pipelines started at the same moment) taking StartLiveTail's tokens.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from standin import eventstream
from standin.quotas import TokenBucket


@dataclass(frozen=True)
class LogsQuotas:
    concurrent_sessions: int = 15  # "Live Tail concurrent sessions limit: 15"
    start_live_tail_tps: float = 5  # "StartLiveTail throttle limit in transactions per second: 5"
    filter_log_events_tps: float = 5  # "FilterLogEvents throttle limit ...: 5 per second" (eu-central-1 and others)
    update_seconds: float = 1.0  # "Every second, a LiveTailSessionUpdate object is sent"
    events_per_update: int = 500  # "can include as many as 500 log events"; above that, sampled
    session_seconds: float = 3 * 3600  # "Live Tail sessions time out after three hours"
    max_groups: int = 10  # logGroupIdentifiers: "You can include up to 10 log groups"
    max_prefixes: int = 100  # logStreamNamePrefixes / logStreamNames: at most 100 items (service model)


@dataclass(frozen=True)
class StartAttempt:
    """One StartLiveTail call: when it arrived (the stand-in's clock), its stream-name prefixes, and
    the answer ("ok" or the error code)."""

    at: float
    prefixes: tuple[str, ...]
    answer: str


@dataclass
class ReadCounters:
    """What readers were served: events and message bytes, calls and refusals."""

    filter_calls: int = 0
    filter_throttled: int = 0
    filter_events: int = 0
    filter_bytes: int = 0
    sessions_started: int = 0
    sessions_refused: int = 0  # LimitExceededException: every session slot in use
    start_throttled: int = 0
    sessions_active: int = 0
    sessions_peak: int = 0
    tail_events: int = 0
    tail_bytes: int = 0
    sampled_updates: int = 0
    tail_prefixes: list[list[str]] = field(default_factory=list)  # each started session's prefixes
    start_attempts: list[StartAttempt] = field(default_factory=list)  # every StartLiveTail call, in order


class LiveTailRefused(Exception):
    """An error answer to StartLiveTail (code, message), before any stream is opened."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _message_bytes(events: list[dict[str, Any]]) -> int:
    return sum(len(str(item.get("message", "")).encode()) for item in events)


class LogsReads:
    def __init__(self, quotas: LogsQuotas | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: set[_Session] = set()
        self._throttle_starts = 0
        self.counters = ReadCounters()
        self.configure(**dataclasses.asdict(quotas or LogsQuotas()))

    def configure(self, **changes: Any) -> None:
        """Change quotas (``LogsQuotas`` fields); the token buckets start full again."""
        current = getattr(self, "quotas", LogsQuotas())
        self.quotas = dataclasses.replace(current, **changes)
        self._filter_bucket = TokenBucket(self.quotas.filter_log_events_tps, clock=self._clock)
        self._start_bucket = TokenBucket(self.quotas.start_live_tail_tps, clock=self._clock)

    def reset(self) -> None:
        """Default quotas and zero counters (sessions still open keep running)."""
        self.configure(**dataclasses.asdict(LogsQuotas()))
        with self._lock:
            self._throttle_starts = 0
            active = self.counters.sessions_active
            self.counters = ReadCounters(sessions_active=active, sessions_peak=active)

    # --- FilterLogEvents ----------------------------------------------------------------------------
    def admit_filter(self) -> bool:
        """Take a FilterLogEvents token; False: answer ThrottlingException."""
        admitted = self._filter_bucket.take()
        with self._lock:
            self.counters.filter_calls += 1
            if not admitted:
                self.counters.filter_throttled += 1
        return admitted

    def served_filter(self, events: list[dict[str, Any]]) -> None:
        with self._lock:
            self.counters.filter_events += len(events)
            self.counters.filter_bytes += _message_bytes(events)

    # --- StartLiveTail ------------------------------------------------------------------------------
    def throttle_starts(self, count: int) -> None:
        """The next ``count`` StartLiveTail calls find the account's tokens taken (by other callers,
        as when pipelines start together) and are answered ThrottlingException."""
        with self._lock:
            self._throttle_starts = count

    def start(self, request: dict[str, Any], existing_groups: set[str]) -> _Session:
        """Open a session for a StartLiveTail request; LiveTailRefused as AWS would answer."""
        at = self._clock()
        prefixes = tuple(request.get("logStreamNamePrefixes") or ())
        try:
            session = self._start(request, existing_groups)
        except LiveTailRefused as refused:
            with self._lock:
                self.counters.start_attempts.append(StartAttempt(at, prefixes, refused.code))
            raise
        with self._lock:
            self.counters.start_attempts.append(StartAttempt(at, prefixes, "ok"))
        return session

    def _start(self, request: dict[str, Any], existing_groups: set[str]) -> _Session:
        with self._lock:
            forced = self._throttle_starts > 0
            self._throttle_starts -= int(forced)
        if forced or not self._start_bucket.take():
            with self._lock:
                self.counters.start_throttled += 1
            raise LiveTailRefused("ThrottlingException", "Rate exceeded")
        groups = list(request.get("logGroupIdentifiers") or [])
        prefixes = request.get("logStreamNamePrefixes")
        names = request.get("logStreamNames")
        self._validate(groups, prefixes, names, existing_groups)
        with self._lock:
            if len(self._sessions) >= self.quotas.concurrent_sessions:
                self.counters.sessions_refused += 1
                raise LiveTailRefused(
                    "LimitExceededException",
                    f"Exceeded the maximum number of concurrent Live Tail sessions ({self.quotas.concurrent_sessions})",
                )
            session = _Session(self, groups, list(prefixes or []), list(names or []))
            self._sessions.add(session)
            self.counters.sessions_started += 1
            self.counters.sessions_active = len(self._sessions)
            self.counters.sessions_peak = max(self.counters.sessions_peak, len(self._sessions))
            self.counters.tail_prefixes.append(list(prefixes or []))
        return session

    def _validate(
        self, groups: list[str], prefixes: list[str] | None, names: list[str] | None, existing: set[str]
    ) -> None:
        if not 1 <= len(groups) <= self.quotas.max_groups:
            raise LiveTailRefused(
                "InvalidParameterException",
                f"logGroupIdentifiers must have between 1 and {self.quotas.max_groups} items",
            )
        if prefixes is not None and names is not None:
            raise LiveTailRefused(
                "InvalidParameterException", "Only one of logStreamNames or logStreamNamePrefixes can be provided."
            )
        filters = prefixes if prefixes is not None else names
        if filters is not None:
            if len(groups) != 1:
                raise LiveTailRefused(
                    "InvalidParameterException",
                    "logStreamNames and logStreamNamePrefixes can only be used with a single log group.",
                )
            if not 1 <= len(filters) <= self.quotas.max_prefixes:
                raise LiveTailRefused(
                    "InvalidParameterException",
                    f"Stream filters must have between 1 and {self.quotas.max_prefixes} items",
                )
        for group in groups:
            if not group.startswith("arn:") or group.endswith("*"):
                raise LiveTailRefused(
                    "InvalidParameterException", f"Specify each log group by its ARN, not ending in '*': {group}"
                )
            if group not in existing:
                raise LiveTailRefused("ResourceNotFoundException", f"The specified log group does not exist: {group}")

    def publish(self, events: list[dict[str, Any]]) -> None:
        """Events just ingested (LiveTailSessionLogEvent fields): offered to every matching session."""
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.offer(events)

    def break_sessions(self) -> None:
        """Every open session fails with SessionStreamingException at its next update."""
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.fail()

    @property
    def active_sessions(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _ended(self, session: _Session) -> None:
        with self._lock:
            self._sessions.discard(session)
            self.counters.sessions_active = len(self._sessions)

    def _sent(self, events: list[dict[str, Any]], sampled: bool) -> None:
        with self._lock:
            self.counters.tail_events += len(events)
            self.counters.tail_bytes += _message_bytes(events)
            self.counters.sampled_updates += int(sampled)


class _Session:
    def __init__(self, owner: LogsReads, groups: list[str], prefixes: list[str], names: list[str]) -> None:
        self._owner = owner
        self.groups = groups
        self.prefixes = prefixes
        self.names = names
        self.session_id = str(uuid.uuid4())
        self._pending: list[dict[str, Any]] = []
        self._failed = False
        self._wake = threading.Condition()

    def matches(self, item: dict[str, Any]) -> bool:
        if item.get("logGroupIdentifier") not in self.groups:
            return False
        stream = str(item.get("logStreamName", ""))
        if self.prefixes:
            return any(stream.startswith(prefix) for prefix in self.prefixes)
        return not self.names or stream in self.names

    def offer(self, events: list[dict[str, Any]]) -> None:
        wanted = [item for item in events if self.matches(item)]
        if wanted:
            with self._wake:
                self._pending.extend(wanted)

    def fail(self) -> None:
        with self._wake:
            self._failed = True
            self._wake.notify_all()

    def frames(self) -> Iterator[bytes]:
        """The response body: the stream's messages as they become due. Closing it (the client went
        away: the server closes the generator) ends the session and frees its slot."""
        quotas = self._owner.quotas
        clock = self._owner._clock
        try:
            yield eventstream.event("initial-response", {})
            start: dict[str, Any] = {
                "requestId": str(uuid.uuid4()),
                "sessionId": self.session_id,
                "logGroupIdentifiers": self.groups,
                "logEventFilterPattern": "",
            }
            if self.prefixes:
                start["logStreamNamePrefixes"] = self.prefixes
            if self.names:
                start["logStreamNames"] = self.names
            yield eventstream.event("sessionStart", start)
            ends_at = clock() + quotas.session_seconds
            next_update = clock() + quotas.update_seconds
            while True:
                with self._wake:
                    self._wake.wait_for(lambda: self._failed, timeout=max(0.0, min(next_update, ends_at) - clock()))
                    failed = self._failed
                if failed:
                    yield eventstream.exception("SessionStreamingException", "Live Tail session failed")
                    return
                if clock() >= ends_at:
                    yield eventstream.exception("SessionTimeoutException", "Live Tail session timed out after 3 hours")
                    return
                if clock() < next_update:
                    continue
                next_update += quotas.update_seconds
                yield eventstream.event("sessionUpdate", self._update(quotas.events_per_update))
        finally:
            self._owner._ended(self)

    def _update(self, most: int) -> dict[str, Any]:
        with self._wake:
            results, self._pending = self._pending, []
        sampled = len(results) > most
        if sampled:  # evenly spread over the second, in order
            step = len(results) / most
            results = [results[int(index * step)] for index in range(most)]
        self._owner._sent(results, sampled)
        return {"sessionMetadata": {"sampled": sampled}, "sessionResults": results}
