"""Follow a phase's CloudWatch Logs output while it runs, reading each event about once.

SSM writes ``<CommandId>/<InstanceId>/<plugin>/stdout|stderr`` streams as the command runs. The
output comes from one Live Tail session per phase (``live_tail.py``) whose stream-name prefixes are
the phase's command ids: CloudWatch pushes each event once, as it is ingested, at no per-call
quota. Live Tail only sees events ingested after the session started, so once it has, one
FilterLogEvents pass per command (pages of 10,000) reads what came before; an event is printed
once whichever way it came, by its stream and ingestion time (each stream is ingested in order, a
PutLogEvents batch at one time), plus its eventId within a FilterLogEvents batch.

StartLiveTail's 5 calls a second are the account's, shared with every pipeline that starts at the
same moment (parallel steps) and with the console: a throttled start is tried again after a random
wait whose bound doubles with each throttle in a row, so pipelines that collided do not collide again
in step; a session that starts late loses nothing (what came before is read once, as above).

FilterLogEvents takes over when Live Tail cannot be used: the deploy role may not call
logs:StartLiveTail, the account's concurrent sessions are all in use, or the stream broke. It is
polled at most once a second per command. Event timestamps come from the instances' clocks, which
may be minutes off the runner's: no time of ours is compared with them. Once output from more than
one instance has been seen, reads start a look-back window before the newest event, so an instance
whose upload lags behind another's is not skipped.

When the command has ended, ``drain`` decides on content whether a stream is complete, never on
counts or clocks: CloudWatch keeps no empty event (PutLogEvents takes at least one character), an
agent may put several lines in one event or split a long line over two, and turns CRLF into LF.
So SSM's copy and the stream are compared without their line breaks (``visible``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipe.aws.errors import error_code, error_message, is_access_denied
from pipe.limits import (
    FILTER_PAGE_MAX_EVENTS,
    LIVE_TAIL_MAX_PREFIXES,
    LIVE_TAIL_UPDATE_SECONDS,
    LOG_LOOKBACK_SECONDS,
    STDERR_FIELD_LIMIT,
    STDOUT_FIELD_LIMIT,
)
from pipe.report.console import OutputPrinter
from pipe.stages.watch.live_tail import LiveTailSession, StreamEnd

LOOKBACK_MS = LOG_LOOKBACK_SECONDS * 1000  # the SSM Agent uploads at least every 30 s
PAGE_EVENTS = FILTER_PAGE_MAX_EVENTS  # as few calls as AWS allows: the quota counts calls, not events
DRAIN_POLL_SECONDS = 0.25
FILTER_POLL_SECONDS = 1.0  # FilterLogEvents at most once a second per command, however often polled
LIVE_TAIL_RETRY_SECONDS = 2.0  # StartLiveTail again while the log group does not exist yet
# After the n-th throttled StartLiveTail in a row, try again after a random 1 to min(8, 2**n) s: never
# sooner than the second in which the account's 5 calls were used up, and spread so the pipelines
# that collided take the tokens as they come back rather than all at once again.
THROTTLED_RETRY_SECONDS = 1.0
THROTTLED_RETRY_MAX_SECONDS = 8.0
# Live Tail delivers what was ingested in the past second with each update: at the end of a phase,
# a stream that lacks part of SSM's copy may still be on its way for about two updates.
LIVE_DELIVERY_SECONDS = 2 * LIVE_TAIL_UPDATE_SECONDS + 0.5
# The agent waits for its CloudWatch upload to finish (up to a minute) before it reports a command's
# end (amazon-ssm-agent, iomodule/fileS3.go), so what may still come then mostly lags by CloudWatch's
# ingestion: a stream that covers SSM's cut copy and got nothing new for this long is taken as complete.
QUIET_SECONDS = 3.0
FIELD_LIMITS = {"stdout": STDOUT_FIELD_LIMIT, "stderr": STDERR_FIELD_LIMIT}
log = logging.getLogger("ssm-deploy")

StreamKey = tuple[str, str]  # (instance id, "stdout" or "stderr")


def visible(text: str) -> str:
    """``text`` without line breaks: what SSM's copy and a CloudWatch stream must agree on."""
    return text.replace("\r", "").replace("\n", "")


def after_streamed(chunks: Iterable[str], streamed: int) -> Iterator[str]:
    """``chunks`` (one text, or its lines) without their first ``streamed`` visible characters,
    which are already in the build log: the rest of SSM's or S3's copy."""
    left = streamed
    for chunk in chunks:
        if left <= 0:
            yield chunk
            continue
        count = len(visible(chunk))
        if count <= left:
            left -= count
            continue
        offset = 0
        while left > 0:  # walk to just after the last streamed character
            if chunk[offset] not in "\r\n":
                left -= 1
            offset += 1
        rest = chunk[offset:].lstrip("\r\n")  # the line break that ended the streamed part
        if rest:
            yield rest


def throttled_retry_seconds(throttles: int, jitter: Callable[[float, float], float] = random.uniform) -> float:
    """How long to wait before StartLiveTail's next try after ``throttles`` (1 or more) in a row."""
    bound = min(THROTTLED_RETRY_MAX_SECONDS, THROTTLED_RETRY_SECONDS * 2 ** min(throttles, 8))
    return jitter(THROTTLED_RETRY_SECONDS, bound)


@dataclass(frozen=True)
class Captured:
    """What SSM kept of one stream (GetCommandInvocation), and whether it cut it at its field limit."""

    text: str
    cut: bool


class _Verdict(Enum):
    COMPLETE = "complete"  # the stream holds SSM's copy
    MISSING = "missing"  # SSM's copy is whole and the stream lacks some of it: waiting adds nothing
    DIFFERS = "differs"  # the stream is not SSM's copy: show SSM's
    WAITING = "waiting"  # SSM cut its copy: the stream may still bring the rest


@dataclass
class _Stream:
    command_id: str
    head_limit: int
    newest: int = -1  # newest event timestamp (the instance's clock): where FilterLogEvents windows start
    ingested: int = -1  # newest ingestion time printed (CloudWatch's clock)
    ids_at_ingested: set[str] = field(default_factory=set)  # FilterLogEvents eventIds printed at ``ingested``
    read_through: int = -1  # newest ingestion time printed from a FilterLogEvents read
    chars: int = 0  # visible characters streamed
    head: str = ""  # the first of them, as many as SSM's copy can hold
    last_new: float = 0.0

    def is_new_read(self, ingested: int, event_id: str) -> bool:
        """A FilterLogEvents event: new unless its batch was printed (a batch ingested at the same time
        as the newest printed is the same PutLogEvents batch; only Live Tail printed it if no eventId)."""
        if ingested != self.ingested:
            return ingested > self.ingested
        return bool(self.ids_at_ingested) and event_id not in self.ids_at_ingested

    def is_new_pushed(self, ingested: int) -> bool:
        """A Live Tail event: pushed once, so new unless a FilterLogEvents read already printed it."""
        return ingested > self.read_through

    def advance(self, ingested: int, timestamp: int, event_id: str | None, message: str, now: float) -> None:
        if ingested > self.ingested:
            self.ingested, self.ids_at_ingested = ingested, set()
        if event_id is not None:
            self.ids_at_ingested.add(event_id)
            self.read_through = max(self.read_through, ingested)
        self.newest = max(self.newest, timestamp)
        text = visible(message)
        self.chars += len(text)
        if len(self.head) < self.head_limit:
            self.head += text[: self.head_limit - len(self.head)]
        self.last_new = now

    def verdict(self, copy: Captured, now: float) -> _Verdict:
        expected = visible(copy.text)
        overlap = min(len(expected), len(self.head))
        if self.head[:overlap] != expected[:overlap]:
            return _Verdict.DIFFERS
        if self.chars < len(expected):
            return _Verdict.WAITING if copy.cut else _Verdict.MISSING
        if copy.cut and now - self.last_new < QUIET_SECONDS:
            return _Verdict.WAITING
        return _Verdict.COMPLETE


@dataclass
class ReadCounts:
    """What live output cost: events and message bytes read from CloudWatch, and printed."""

    events_read: int = 0
    bytes_read: int = 0
    events_printed: int = 0
    bytes_printed: int = 0
    filter_calls: int = 0
    live_sessions: int = 0

    def describe(self) -> str:
        ratio = self.events_read / self.events_printed if self.events_printed else 0.0
        return (
            f"read {self.events_read} events ({self.bytes_read} bytes), printed {self.events_printed} "
            f"({self.bytes_printed} bytes): {ratio:.2f} read per printed; {self.filter_calls} FilterLogEvents "
            f"calls, {self.live_sessions} Live Tail sessions"
        )


class _Mode(Enum):
    LIVE = "live"  # Live Tail, with one FilterLogEvents pass per command for what came before
    FILTER = "filter"  # FilterLogEvents polls
    OFF = "off"


class LogTail:
    def __init__(
        self,
        logs: Any,
        group: str,
        command_ids: list[str],
        printer: OutputPrinter,
        clock: Callable[[], float] = time.monotonic,
        group_arn: str | None = None,
        live_logs: Any = None,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        """``group_arn``: the log group's ARN, for Live Tail; None reads with FilterLogEvents only.
        ``live_logs``: the client for StartLiveTail (default ``logs``), best one that does not retry.
        ``jitter``: a random number between its two arguments (the wait after a throttled start)."""
        self._logs = logs
        self._live_logs = live_logs if live_logs is not None else logs
        self._group = group
        self._group_arn = group_arn
        self._command_ids = command_ids
        self._printer = printer
        self._clock = clock
        self._streams: dict[StreamKey, _Stream] = {}
        self._mode = _Mode.LIVE if group_arn else _Mode.FILTER
        self._jitter = jitter
        self._sessions: list[LiveTailSession] = []
        self._next_start = 0.0
        self._throttles = 0  # StartLiveTail throttled this many times in a row
        self._not_live: set[str] = set()  # commands no session could be started for: read at the end
        self._caught_up: set[str] = set()  # commands read once with FilterLogEvents since their session started
        self._next_read: dict[str, float] = {}
        self._sampled = False  # Live Tail dropped events: no stream can be taken as complete
        self._ended: set[str] = set()  # commands that ended while others still run (command_ended)
        self.counts = ReadCounts()

    @property
    def group(self) -> str:
        return self._group

    @property
    def available(self) -> bool:
        return self._mode is not _Mode.OFF

    @property
    def live(self) -> bool:
        """Whether the output comes from Live Tail (as opposed to FilterLogEvents polls)."""
        return self._mode is _Mode.LIVE

    def poll(self) -> int:
        """Print events that arrived since the last poll; return how many."""
        if self._mode is _Mode.LIVE:
            return self._poll_live()
        printed = 0
        for command_id in self._command_ids:
            if self._mode is not _Mode.FILTER:
                break
            if self._clock() >= self._next_read.get(command_id, 0.0):
                self._next_read[command_id] = self._clock() + FILTER_POLL_SECONDS
                printed += self._read(command_id, self._window_start(command_id))
        return printed

    def add_command(self, command_id: str) -> None:
        """Follow a command sent while the phase runs (a chunk that MAX_CONCURRENCY held back). With
        Live Tail the next poll starts a session for it, which first reads what the command printed
        before the session started; if none can be started, its output is read once when the phase ends."""
        self._command_ids.append(command_id)

    def command_ended(self, command_id: str) -> None:
        """A command of the phase ended: close a Live Tail session whose commands all ended (each
        holds one of the account's concurrent sessions), after printing what it delivered."""
        self._ended.add(command_id)
        for session in list(self._sessions):
            if all(prefix.rstrip("/") in self._ended for prefix in session.prefixes):
                if session.ready.is_set():
                    self._print_pushed(session.take())
                session.close()
                self._sessions.remove(session)
                self._caught_up.difference_update(prefix.rstrip("/") for prefix in session.prefixes)

    def close(self) -> None:
        """End the Live Tail sessions (they are billed while open) and log what live output cost."""
        for session in self._sessions:
            session.close()
        self._sessions = []
        log.debug(f"Live output from {self._group}: {self.counts.describe()}")

    # --- Live Tail ------------------------------------------------------------------------------------
    def _poll_live(self) -> int:
        waiting = self._uncovered()
        if waiting and self._clock() >= self._next_start:
            self._start_sessions(waiting)
        printed = 0
        for session in list(self._sessions):
            if not session.ready.is_set():
                continue
            commands = [prefix.rstrip("/") for prefix in session.prefixes]
            for command_id in commands:
                if command_id not in self._caught_up and self._mode is _Mode.LIVE:
                    self._caught_up.add(command_id)
                    printed += self._read(command_id, self._restart_window(command_id))
            printed += self._print_pushed(session.take())
            if session.sampled and not self._sampled:
                self._sampled = True
                log.warning(
                    "Live output is incomplete: the instances printed more than CloudWatch Live Tail delivers "
                    "(500 events a second), so it sent a sample. Each instance's full output is shown when its "
                    "command ends."
                )
            if session.end is not None:
                printed += self._session_ended(session, session.end)
        return printed

    def _uncovered(self) -> list[str]:
        """The commands still running that no session follows: not started yet, started while the
        others ran (``add_command``), or whose session timed out. Once every command ended, what is
        left is read once at the end (``_read_unread``)."""
        covered = {prefix.rstrip("/") for session in self._sessions for prefix in session.prefixes}
        skip = covered | self._ended | self._not_live
        return [command_id for command_id in self._command_ids if command_id not in skip]

    def _start_sessions(self, command_ids: list[str]) -> None:
        """Start one session per 100 commands (StartLiveTail's most prefixes). A start that cannot
        be made now is tried again later; one that cannot be made at all falls back to FilterLogEvents
        when no session runs, else leaves those commands to be read once at the end."""
        for first in range(0, len(command_ids), LIVE_TAIL_MAX_PREFIXES):
            chunk = command_ids[first : first + LIVE_TAIL_MAX_PREFIXES]
            session = LiveTailSession(self._live_logs, str(self._group_arn), [f"{command_id}/" for command_id in chunk])
            try:
                session.start()
            except (ClientError, BotoCoreError) as error:
                session.close()
                self._not_started(chunk, error)
                return
            self._sessions.append(session)
            self.counts.live_sessions += 1
            self._throttles = 0

    def _not_started(self, command_ids: list[str], error: ClientError | BotoCoreError) -> None:
        code = error_code(error) if isinstance(error, ClientError) else ""
        if code == "ResourceNotFoundException":  # the agent creates the group with the first output
            self._next_start = self._clock() + LIVE_TAIL_RETRY_SECONDS
            return
        if code == "ThrottlingException":  # StartLiveTail's 5 TPS are the account's
            self._throttles += 1
            wait = throttled_retry_seconds(self._throttles, self._jitter)
            self._next_start = self._clock() + wait
            log.debug(f"StartLiveTail was throttled ({self._throttles} in a row): trying again in {wait:.1f} s.")
            return
        if self._sessions:  # the others go on live: these are read once at the end
            self._not_live.update(command_ids)
            log.debug(f"No Live Tail session for command {', '.join(command_ids)} ({error}): read at the end.")
            return
        if isinstance(error, ClientError):
            self._fall_back(self._why_not_live(error))
        else:
            self._fall_back(f"Live Tail could not be started ({error})")

    def _why_not_live(self, error: ClientError) -> str:
        code = error_code(error)
        if is_access_denied(error):
            return (
                f"the deploy role may not start a CloudWatch Logs Live Tail session on {self._group} "
                f"({error_message(error)}); allow logs:StartLiveTail on that log group"
            )
        if code == "LimitExceededException":
            return (
                "the account's concurrent CloudWatch Logs Live Tail sessions are all in use "
                f"({error_message(error)}; the default quota is 15)"
            )
        return f"StartLiveTail failed: {code}: {error_message(error)}"

    def _session_ended(self, session: LiveTailSession, end: StreamEnd) -> int:
        """A session stopped: after three hours, start a new one (and read what fell between them);
        after a failure, read with FilterLogEvents from now on."""
        session.close()
        self._sessions.remove(session)
        if end.timed_out:  # its commands are uncovered again: the next poll starts a new session
            self._caught_up.difference_update(prefix.rstrip("/") for prefix in session.prefixes)
            return 0
        self._fall_back(f"the Live Tail stream broke ({end.code}: {end.message})")
        return 0

    def _fall_back(self, why: str) -> None:
        for session in self._sessions:
            session.close()
        self._sessions = []
        if self._mode is not _Mode.LIVE:
            return
        self._mode = _Mode.FILTER
        log.warning(f"Live output falls back to FilterLogEvents polls: {why}.")

    def _print_pushed(self, events: list[dict[str, Any]]) -> int:
        printed = 0
        for event in events:
            located = self._counted(event)
            if located is None:
                continue
            key, stream, message = located
            ingested = int(event.get("ingestionTime", 0))
            if not stream.is_new_pushed(ingested):
                continue
            printed += self._print(key, stream, ingested, int(event.get("timestamp", 0)), None, message)
        return printed

    # --- FilterLogEvents --------------------------------------------------------------------------------
    def _window_start(self, command_id: str) -> int | None:
        """Where a poll reads from: the command's start, then a look-back before the newest event once
        more than one instance printed (an instance's upload may lag behind another's)."""
        seen = [stream for stream in self._streams.values() if stream.command_id == command_id]
        if not seen:
            return None
        instances = {key[0] for key, stream in self._streams.items() if stream.command_id == command_id}
        lookback = LOOKBACK_MS if len(instances) > 1 else 0
        return max(0, max(stream.newest for stream in seen) - lookback)

    def _restart_window(self, command_id: str) -> int | None:
        """Where the read after a new session starts: the command's start the first time; after a
        session timed out, a look-back before the oldest stream's newest event."""
        seen = [stream.newest for stream in self._streams.values() if stream.command_id == command_id]
        return max(0, min(seen) - LOOKBACK_MS) if seen else None

    def _read(self, command_id: str, start: int | None) -> int:
        request: dict[str, Any] = {
            "logGroupName": self._group,
            "logStreamNamePrefix": f"{command_id}/",
            "limit": PAGE_EVENTS,
        }
        if start is not None:
            request["startTime"] = start
        printed = 0
        try:
            while True:
                self.counts.filter_calls += 1
                page = self._logs.filter_log_events(**request)
                printed += self._print_read(page.get("events", []))
                token = page.get("nextToken")
                if not token:
                    return printed
                request["nextToken"] = token
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                return printed  # the agent creates the group and streams with the first output
            if self._mode is _Mode.LIVE:  # Live Tail goes on; only what came before it is not read
                log.warning(
                    f"Live output may lack what the instances printed before it started: {error_code(error)}: "
                    f"{error_message(error)}. Allow logs:FilterLogEvents on {self._group}."
                )
                return printed
            self._mode = _Mode.OFF
            if is_access_denied(error):
                log.warning(
                    f"Live output is off: the deploy role may not read {self._group} "
                    f"({error_message(error)}). Allow logs:StartLiveTail and logs:FilterLogEvents on that log "
                    "group. Output will be shown when the command ends."
                )
            else:
                log.warning(f"Live output is off: {error_code(error)}: {error_message(error)}.")
            return printed

    def _print_read(self, events: list[dict[str, Any]]) -> int:
        printed = 0
        for event in events:
            located = self._counted(event)
            if located is None:
                continue
            key, stream, message = located
            timestamp = int(event.get("timestamp", 0))
            ingested, event_id = int(event.get("ingestionTime", timestamp)), str(event.get("eventId", ""))
            if not stream.is_new_read(ingested, event_id):
                continue
            printed += self._print(key, stream, ingested, timestamp, event_id, message)
        return printed

    # --- both ---------------------------------------------------------------------------------------------
    def _counted(self, event: dict[str, Any]) -> tuple[StreamKey, _Stream, str] | None:
        """Count ``event`` as read (pushed or polled alike); its stream and message when it is one of ours."""
        message = str(event.get("message", ""))
        self.counts.events_read += 1
        self.counts.bytes_read += len(message.encode())
        located = self._stream_of(event)
        return None if located is None else (*located, message)

    def _stream_of(self, event: dict[str, Any]) -> tuple[StreamKey, _Stream] | None:
        parts = str(event.get("logStreamName", "")).split("/")
        if len(parts) < 4 or parts[0] not in self._command_ids:
            return None
        key = (parts[1], parts[-1])
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _Stream(parts[0], FIELD_LIMITS.get(key[1], STDOUT_FIELD_LIMIT))
        return key, stream

    def _print(
        self, key: StreamKey, stream: _Stream, ingested: int, timestamp: int, event_id: str | None, message: str
    ) -> int:
        stream.advance(ingested, timestamp, event_id, message, self._clock())
        self._printer.print_lines(key[0], message, is_stderr=key[1] == "stderr")
        self.counts.events_printed += 1
        self.counts.bytes_printed += len(message.encode())
        return 1

    def streamed_any(self, instance_id: str) -> bool:
        """Whether anything of the instance's output arrived through CloudWatch."""
        return any(key[0] == instance_id and stream.chars for key, stream in self._streams.items())

    def drain(
        self,
        captured: Mapping[StreamKey, Captured],
        limit_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict[StreamKey, int]:
        """After the command ended: poll until each stream is known to be complete, and return the others.

        A stream is complete when it holds SSM's copy. When SSM's copy is whole and the stream lacks
        part of it (CloudWatch late, or never written to), waiting cannot bring anything SSM does not
        have, so it is returned at once, except that Live Tail may still be delivering the last
        second's events (``LIVE_DELIVERY_SECONDS``); a stream whose copy SSM cut at its field limit is
        waited for, at most ``limit_seconds``. Each stream returned maps to the visible characters
        of it already printed (0 when the stream is not SSM's copy): the caller prints the rest.
        """
        began = self._clock()
        deadline = began + limit_seconds
        self._ended.update(self._command_ids)  # no session is started for a command that ended
        self._read_unread()
        self._next_read.clear()  # FilterLogEvents: read each command once now it ended, however recent the last read
        while True:
            self.poll()
            now = self._clock()
            in_flight = self.live and now - began < LIVE_DELIVERY_SECONDS
            verdicts = {key: self._verdict(key, copy, now, in_flight) for key, copy in captured.items()}
            waiting = _Verdict.WAITING in verdicts.values()
            if not waiting or not self.available or now >= deadline:
                return {
                    key: 0 if verdict is _Verdict.DIFFERS else self._chars(key)
                    for key, verdict in verdicts.items()
                    if verdict is not _Verdict.COMPLETE
                }
            sleep(DRAIN_POLL_SECONDS)

    def _read_unread(self) -> None:
        """At the end of a phase, read each command that no Live Tail session covered yet (its log
        group did not exist when the phase began, or StartLiveTail was throttled: the command may have
        ended before a session could start; or no session could be started for it)."""
        if self._mode is not _Mode.LIVE:
            return
        for command_id in self._command_ids:
            if command_id not in self._caught_up and self._mode is _Mode.LIVE:
                self._caught_up.add(command_id)
                self._read(command_id, None)

    def _verdict(self, key: StreamKey, copy: Captured, now: float, in_flight: bool) -> _Verdict:
        stream = self._streams.get(key)
        if stream is None:
            if not copy.text:
                return _Verdict.COMPLETE
            return _Verdict.WAITING if copy.cut or in_flight else _Verdict.MISSING
        verdict = stream.verdict(copy, now)
        if self._sampled and verdict is _Verdict.COMPLETE and copy.text:
            return _Verdict.DIFFERS  # Live Tail dropped events: show SSM's copy (or S3's) whole
        if verdict is _Verdict.MISSING and in_flight:
            return _Verdict.WAITING
        return verdict

    def _chars(self, key: StreamKey) -> int:
        stream = self._streams.get(key)
        return stream.chars if stream else 0
