"""What the live output printed of each instance's stdout and stderr, and whether that is all of it.

Each event is printed once, whichever way it came (pushed by Live Tail or read with
FilterLogEvents), by its stream and ingestion time (each stream is ingested in order, a PutLogEvents
batch at one time), plus its eventId within a FilterLogEvents batch.

When the command has ended, a stream is compared with SSM's copy on content, never on counts or
clocks: CloudWatch keeps no empty event (PutLogEvents takes at least one character), an agent may
put several lines in one event or split a long line over two, and turns CRLF into LF. So the two
are compared without their line breaks (``visible``). SSM's listing cuts its copy at 2,400 bytes
(the SSM Agent's TruncateOutput slices bytes), which may cut a character in two: its last
characters are then U+FFFD, which the stream does not hold, and they are not compared.

What the build log then lacks of a stream is a ``Gap``: the rest after what was streamed, or, when
the stream is not SSM's copy (Live Tail sampled it), the lines of the copy it did not print. When
SSM's copy is whole and Live Tail has streamed its start, the rest is what Live Tail had not
delivered yet (it sends each second's events a second later): SSM's copy has it, so it is printed
from there as the stream's continuation rather than waited for.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pipe.limits import AGENT_EVENT_BYTES, LOG_LOOKBACK_SECONDS, STDERR_FIELD_LIMIT, STDOUT_FIELD_LIMIT
from pipe.report.console import OutputPrinter
from pipe.runtime.redaction import CUT_CHARACTER

LOOKBACK_MS = LOG_LOOKBACK_SECONDS * 1000  # the SSM Agent uploads at least every 30 s
# The agent waits for its CloudWatch upload to finish (up to a minute) before it reports a command's
# end (amazon-ssm-agent, iomodule/fileS3.go), so what may still come then mostly lags by CloudWatch's
# ingestion: a stream that covers SSM's cut copy and got nothing new for this long is taken as complete.
QUIET_SECONDS = 3.0
FIELD_LIMITS = {"stdout": STDOUT_FIELD_LIMIT, "stderr": STDERR_FIELD_LIMIT}

StreamKey = tuple[str, str]  # (instance id, "stdout" or "stderr")


def visible(text: str) -> str:
    """``text`` without line breaks: what SSM's copy and a CloudWatch stream must agree on."""
    return text.replace("\r", "").replace("\n", "")


def cut_by_agent(message: str) -> bool:
    """Whether the event may end inside a line the SSM Agent cut at AGENT_EVENT_BYTES: it is one piece of a
    line (no line break in it) that long, or longer (CloudWatch turns the bytes of a character the cut split
    into U+FFFD). An event of whole lines has a line break in it, or is one line shorter than that: the agent
    packs lines in an event up to that size and drops its last line break once the command ended."""
    return "\n" not in message and len(message.encode()) >= AGENT_EVENT_BYTES


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


def _line_keys(text: str) -> Iterator[int]:
    """A key for each non-empty line of ``text``, as printed lines are told apart."""
    for line in text.replace("\r\n", "\n").split("\n"):
        if line:
            yield hash(line)


def unprinted(chunks: Iterable[str], printed: array[int]) -> Iterator[str]:
    """The non-empty lines of ``chunks`` (SSM's or S3's copy) that are not among the ``printed`` lines
    (their keys, in order): a stream Live Tail sampled printed some of the copy's lines, in order."""
    at = 0
    for chunk in chunks:
        for line in chunk.replace("\r\n", "\n").split("\n"):
            if not line:
                continue
            if at < len(printed) and hash(line) == printed[at]:
                at += 1
                continue
            yield line


@dataclass(frozen=True)
class Captured:
    """What SSM kept of one stream (GetCommandInvocation), whether it cut it at its field limit, and
    the command it is the output of."""

    text: str
    cut: bool
    command_id: str = ""

    def expected(self) -> str:
        """The visible characters the stream must start with: a cut copy's cut last character aside."""
        text = visible(self.text)
        return text.rstrip(CUT_CHARACTER) if self.cut else text


class Verdict(Enum):
    COMPLETE = "complete"  # the stream holds SSM's copy
    MISSING = "missing"  # SSM's copy is whole and the stream lacks some of it: waiting adds nothing
    BEHIND = "behind"  # SSM's copy is whole, Live Tail streamed its start: the rest is SSM's copy's
    DIFFERS = "differs"  # the stream is not SSM's copy: print the copy's lines it did not print
    WAITING = "waiting"  # SSM cut its copy: the stream may still bring the rest


@dataclass(frozen=True)
class Gap:
    """What the build log lacks of one stream once its command ended: the copy after the ``streamed``
    visible characters, or (``printed`` set: the stream differs) the copy's lines it did not print.
    ``late``: SSM cut its copy and CloudWatch had not brought the rest when the drain gave up.
    ``behind``: Live Tail had not delivered the rest yet; it is printed as the stream goes on."""

    streamed: int = 0
    printed: array[int] | None = None
    late: bool = False
    behind: bool = False

    @property
    def whole(self) -> bool:
        """Nothing of the stream is in the build log: the copy is printed whole."""
        return not self.streamed and not self.printed

    def rest(self, chunks: Iterable[str]) -> Iterator[str]:
        if self.printed is not None:
            return unprinted(chunks, self.printed)
        return after_streamed(chunks, self.streamed)


@dataclass
class Stream:
    command_id: str
    head_limit: int
    newest: int = -1  # newest event timestamp (the instance's clock): where FilterLogEvents windows start
    ingested: int = -1  # newest ingestion time printed (CloudWatch's clock)
    ids_at_ingested: set[str] = field(default_factory=set)  # FilterLogEvents eventIds printed at ``ingested``
    read_through: int = -1  # newest ingestion time printed from a FilterLogEvents read
    chars: int = 0  # visible characters streamed
    head: str = ""  # the first of them, as many as SSM's copy can hold
    lines: array[int] = field(default_factory=lambda: array("q"))  # a key per line printed, in order
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
        self.lines.extend(_line_keys(message))
        self.last_new = now

    def verdict(self, copy: Captured, now: float) -> Verdict:
        expected = copy.expected()
        overlap = min(len(expected), len(self.head))
        if self.head[:overlap] != expected[:overlap]:
            return Verdict.DIFFERS
        if self.chars < len(expected):
            return Verdict.WAITING if copy.cut else Verdict.MISSING
        if copy.cut and now - self.last_new < QUIET_SECONDS:
            return Verdict.WAITING
        return Verdict.COMPLETE


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


class StreamBook:
    """The streams of a phase's commands: each event printed once, and what each stream printed."""

    def __init__(self, command_ids: list[str], printer: OutputPrinter) -> None:
        self._command_ids = command_ids  # shared with LogTail, which adds commands sent later
        self._printer = printer
        self._streams: dict[StreamKey, Stream] = {}
        self.counts = ReadCounts()

    def print_pushed(self, events: list[dict[str, Any]], now: float) -> int:
        """Print Live Tail events not printed yet; return how many."""
        return self._print_new(events, now, pushed=True)

    def print_read(self, events: list[dict[str, Any]], now: float) -> int:
        """Print FilterLogEvents events not printed yet; return how many."""
        return self._print_new(events, now, pushed=False)

    def _print_new(self, events: list[dict[str, Any]], now: float, pushed: bool) -> int:
        printed = 0
        for event in events:
            located = self._counted(event)
            if located is None:
                continue
            key, stream, message = located
            timestamp = int(event.get("timestamp", 0))
            ingested = int(event.get("ingestionTime", 0 if pushed else timestamp))
            event_id = None if pushed else str(event.get("eventId", ""))
            new = stream.is_new_pushed(ingested) if event_id is None else stream.is_new_read(ingested, event_id)
            if new:
                printed += self._print(key, stream, (ingested, timestamp, event_id), message, now)
        return printed

    def _counted(self, event: dict[str, Any]) -> tuple[StreamKey, Stream, str] | None:
        """Count ``event`` as read (pushed or polled alike); its stream and message when it is one of ours."""
        message = str(event.get("message", ""))
        self.counts.events_read += 1
        self.counts.bytes_read += len(message.encode())
        parts = str(event.get("logStreamName", "")).split("/")
        if len(parts) < 4 or parts[0] not in self._command_ids:
            return None
        key = (parts[1], parts[-1])
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = Stream(parts[0], FIELD_LIMITS.get(key[1], STDOUT_FIELD_LIMIT))
        return key, stream, message

    def _print(self, key: StreamKey, stream: Stream, at: tuple[int, int, str | None], message: str, now: float) -> int:
        """``at``: the event's ingestion time, timestamp and eventId (None when pushed)."""
        stream.advance(*at, message, now)
        self._printer.print_lines(key[0], message, is_stderr=key[1] == "stderr", continues=cut_by_agent(message))
        self.counts.events_printed += 1
        self.counts.bytes_printed += len(message.encode())
        return 1

    def streamed_any(self, instance_id: str) -> bool:
        """Whether anything of the instance's output arrived through CloudWatch."""
        return any(key[0] == instance_id and stream.chars for key, stream in self._streams.items())

    def window_start(self, command_id: str) -> int | None:
        """Where a poll reads from: the command's start, then a look-back before the newest event once
        more than one instance printed (an instance's upload may lag behind another's)."""
        seen = {key: stream for key, stream in self._streams.items() if stream.command_id == command_id}
        if not seen:
            return None
        lookback = LOOKBACK_MS if len({key[0] for key in seen}) > 1 else 0
        return max(0, max(stream.newest for stream in seen.values()) - lookback)

    def restart_window(self, command_id: str) -> int | None:
        """Where the read after a new session starts: the command's start the first time; after a
        session timed out, a look-back before the oldest stream's newest event."""
        seen = [stream.newest for stream in self._streams.values() if stream.command_id == command_id]
        return max(0, min(seen) - LOOKBACK_MS) if seen else None

    def verdict(self, key: StreamKey, copy: Captured, now: float, live: bool, sampled: bool) -> Verdict:
        """The stream against SSM's copy; ``live``: it came from Live Tail, which may still be
        delivering its end; ``sampled``: Live Tail dropped events, so no stream that printed
        something is complete."""
        stream = self._streams.get(key)
        if stream is None:
            if not copy.text:
                return Verdict.COMPLETE
            return Verdict.WAITING if copy.cut else Verdict.MISSING
        verdict = stream.verdict(copy, now)
        if sampled and verdict is Verdict.COMPLETE and copy.text:
            return Verdict.DIFFERS  # Live Tail dropped events: print the copy's lines it lacks
        if verdict is Verdict.MISSING and live:
            return Verdict.BEHIND
        return verdict

    def silent(self, key: StreamKey, copy: Captured) -> bool:
        """Whether the instance printed to this stream (SSM's copy says so) and nothing of it came."""
        return bool(copy.text) and key not in self._streams

    def gap(self, key: StreamKey, verdict: Verdict) -> Gap:
        """What the build log lacks of a stream that is not complete."""
        stream = self._streams.get(key)
        if stream is None:
            return Gap(late=verdict is Verdict.WAITING)
        if verdict is Verdict.DIFFERS:
            return Gap(printed=stream.lines)
        return Gap(streamed=stream.chars, late=verdict is Verdict.WAITING, behind=verdict is Verdict.BEHIND)
