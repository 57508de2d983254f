"""Follow a command's CloudWatch Logs output while it runs: one FilterLogEvents pass per poll.

SSM writes ``<CommandId>/<InstanceId>/<plugin>/stdout|stderr`` streams as the command runs.
Each poll asks for events of all the command's streams at once (logStreamNamePrefix): the prefix
alone scopes the read to the command, so the first read has no startTime. Event timestamps come
from the instances' clocks, which may be minutes off the runner's: no time of ours is compared
with them. Once output from more than one instance has been seen, reads start a look-back window
before the newest event, so an instance whose upload lags behind another's is not skipped; events
already printed are recognised per stream (each stream is written in order), which keeps memory
flat. With one instance there is no other upload to lag behind, so nothing is read twice.

When the command has ended, ``drain`` decides on content whether a stream is complete, never on
counts or clocks: CloudWatch keeps no empty event (PutLogEvents takes at least one character), an
agent may put several lines in one event or split a long line over two, and turns CRLF into LF.
So SSM's copy and the stream are compared without their line breaks (``visible``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from botocore.exceptions import ClientError

from pipe.aws.errors import error_code, error_message, is_access_denied
from pipe.limits import LOG_LOOKBACK_SECONDS, STDERR_FIELD_LIMIT, STDOUT_FIELD_LIMIT
from pipe.report.console import OutputPrinter

LOOKBACK_MS = LOG_LOOKBACK_SECONDS * 1000  # the SSM Agent uploads at least every 30 s
PAGE_EVENTS = 1000  # small pages keep memory flat however much the instances print
DRAIN_POLL_SECONDS = 0.25
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
    newest: int = -1
    ids_at_newest: set[str] = field(default_factory=set)
    chars: int = 0  # visible characters streamed
    head: str = ""  # the first of them, as many as SSM's copy can hold
    last_new: float = 0.0

    def is_new(self, timestamp: int, event_id: str) -> bool:
        return timestamp > self.newest or (timestamp == self.newest and event_id not in self.ids_at_newest)

    def advance(self, timestamp: int, event_id: str, message: str, now: float) -> None:
        if timestamp > self.newest:
            self.newest, self.ids_at_newest = timestamp, set()
        self.ids_at_newest.add(event_id)
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


class LogTail:
    def __init__(
        self,
        logs: Any,
        group: str,
        command_ids: list[str],
        printer: OutputPrinter,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logs = logs
        self._group = group
        self._command_ids = command_ids
        self._printer = printer
        self._clock = clock
        self._streams: dict[StreamKey, _Stream] = {}
        self.available = True

    @property
    def group(self) -> str:
        return self._group

    def poll(self) -> int:
        """Print events that arrived since the last poll; return how many."""
        printed = 0
        for command_id in self._command_ids:
            if not self.available:
                break
            printed += self._poll_command(command_id)
        return printed

    def _poll_command(self, command_id: str) -> int:
        request: dict[str, Any] = {
            "logGroupName": self._group,
            "logStreamNamePrefix": f"{command_id}/",
            "limit": PAGE_EVENTS,
        }
        seen = {key: stream for key, stream in self._streams.items() if stream.command_id == command_id}
        if seen:
            lookback = LOOKBACK_MS if len({instance for instance, _ in seen}) > 1 else 0
            request["startTime"] = max(0, max(stream.newest for stream in seen.values()) - lookback)
        printed = 0
        try:
            while True:
                page = self._logs.filter_log_events(**request)
                printed += self._print_new(command_id, page.get("events", []))
                token = page.get("nextToken")
                if not token:
                    return printed
                request["nextToken"] = token
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                return printed  # the agent creates the group and streams with the first output
            self.available = False
            if is_access_denied(error):
                log.warning(
                    f"Live output is off: the deploy role may not read {self._group} "
                    f"({error_message(error)}). Allow logs:FilterLogEvents on that log group. "
                    "Output will be shown when the command ends."
                )
            else:
                log.warning(f"Live output is off: {error_code(error)}: {error_message(error)}.")
            return printed

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
        have, so it is returned at once; only a stream whose copy SSM cut at its field limit is
        waited for, at most ``limit_seconds``. Each stream returned maps to the visible characters
        of it already printed (0 when the stream is not SSM's copy): the caller prints the rest.
        """
        deadline = self._clock() + limit_seconds
        while True:
            self.poll()
            now = self._clock()
            verdicts = {key: self._verdict(key, copy, now) for key, copy in captured.items()}
            waiting = _Verdict.WAITING in verdicts.values()
            if not waiting or not self.available or now >= deadline:
                return {
                    key: 0 if verdict is _Verdict.DIFFERS else self._chars(key)
                    for key, verdict in verdicts.items()
                    if verdict is not _Verdict.COMPLETE
                }
            sleep(DRAIN_POLL_SECONDS)

    def _verdict(self, key: StreamKey, copy: Captured, now: float) -> _Verdict:
        stream = self._streams.get(key)
        if stream is None:
            if not copy.text:
                return _Verdict.COMPLETE
            return _Verdict.WAITING if copy.cut else _Verdict.MISSING
        return stream.verdict(copy, now)

    def _chars(self, key: StreamKey) -> int:
        stream = self._streams.get(key)
        return stream.chars if stream else 0

    def _print_new(self, command_id: str, events: list[dict[str, Any]]) -> int:
        printed = 0
        for event in events:
            parts = str(event.get("logStreamName", "")).split("/")
            if len(parts) < 4:
                continue
            key = (parts[1], parts[-1])
            stream = self._streams.get(key)
            if stream is None:
                stream = self._streams[key] = _Stream(command_id, FIELD_LIMITS.get(key[1], STDOUT_FIELD_LIMIT))
            timestamp, event_id = int(event.get("timestamp", 0)), str(event.get("eventId", ""))
            if not stream.is_new(timestamp, event_id):
                continue
            message = str(event.get("message", ""))
            stream.advance(timestamp, event_id, message, self._clock())
            self._printer.print_lines(key[0], message, is_stderr=key[1] == "stderr")
            printed += 1
        return printed
