"""Follow a phase's CloudWatch Logs output while it runs, reading each event about once.

SSM writes ``<CommandId>/<InstanceId>/<plugin>/stdout|stderr`` streams as the command runs. The
output comes from one Live Tail session per phase (``live_tail.py``, started by ``live_starts.py``)
whose stream-name prefixes are the phase's command ids: CloudWatch pushes each event once, as it is
ingested, at no per-call quota. Live Tail only sees events ingested after the session started, so
once it has, one FilterLogEvents pass per command (pages of 10,000) reads what came before; an
event is printed once whichever way it came (``streams.py``).

FilterLogEvents takes over when Live Tail cannot be used: the deploy role may not call
logs:StartLiveTail, the account's concurrent sessions are all in use, or the stream broke. It is
polled at most once a second per command. Event timestamps come from the instances' clocks, which
may be minutes off the runner's: no time of ours is compared with them. Once output from more than
one instance has been seen, reads start a look-back window before the newest event, so an instance
whose upload lags behind another's is not skipped.

When the command has ended, ``drain`` decides on content whether each stream is complete
(``streams.py``), and says what the build log lacks of the others and how long it waited. It does
not wait for Live Tail's next update: what a stream lacks of SSM's whole copy is printed from that
copy, and a stream of which nothing came is read once with FilterLogEvents.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pipe.apply.watch.filter_reads import FilterReads
from pipe.apply.watch.live_sessions import LiveSessions
from pipe.apply.watch.live_starts import SessionStarts
from pipe.apply.watch.live_tail import LiveTailSession, StreamEnd
from pipe.apply.watch.streams import Captured, Gap, ReadCounts, StreamBook, StreamKey, Verdict
from pipe.report.console import OutputPrinter

DRAIN_POLL_SECONDS = 0.25
FILTER_POLL_SECONDS = 1.0  # FilterLogEvents at most once a second per command, however often polled
log = logging.getLogger("ssm-deploy")


@dataclass(frozen=True)
class Drained:
    """The end of a phase's live output: what the build log lacks of each stream that is not complete,
    and how long the drain waited for CloudWatch."""

    gaps: dict[StreamKey, Gap]
    waited: float


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
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``group_arn``: the log group's ARN, for Live Tail; None reads with FilterLogEvents only.
        ``live_logs``: the client for StartLiveTail (default ``logs``), best one that does not retry.
        ``jitter``: a random number between its two arguments (the wait after a throttled start).
        ``clock`` and ``sleep``: the drain's time, which waits on ``clock`` by ``sleep``."""
        self._group = group
        self._command_ids = command_ids
        self._clock = clock
        self._sleep = sleep
        self._book = StreamBook(command_ids, printer)
        self._reads = FilterReads(logs, group, self._book, clock)
        live = live_logs if live_logs is not None else logs
        starts = SessionStarts(live, group, group_arn, clock, jitter) if group_arn else None
        self._live = LiveSessions(starts, self._book.counts) if starts else None
        self._mode = _Mode.LIVE if group_arn else _Mode.FILTER
        self._next_read: dict[str, float] = {}
        self._sampled = False  # Live Tail dropped events: no stream can be taken as complete
        self._ended: set[str] = set()  # commands that ended while others still run (command_ended)

    @property
    def counts(self) -> ReadCounts:
        return self._book.counts

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

    def streamed_any(self, instance_id: str) -> bool:
        """Whether anything of the instance's output arrived through CloudWatch."""
        return self._book.streamed_any(instance_id)

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
                printed += self._read(command_id, self._book.window_start(command_id))
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
        for session in self._live.finished(self._ended) if self._live else []:
            if session.ready.is_set():
                self._book.print_pushed(session.take(), self._clock())
            self._drop(session)

    def close(self) -> None:
        """End the Live Tail sessions (they are billed while open) and log what live output cost."""
        if self._live:
            self._live.close_all()
        log.debug(f"Live output from {self._group}: {self.counts.describe()}")

    def drain(
        self, captured: Mapping[StreamKey, Captured], limit_seconds: float, sleep: Callable[[float], None] | None = None
    ) -> Drained:
        """After the command ended: make sure each stream is complete, and say what the build log
        lacks of the others.

        A stream is complete when it holds SSM's copy. When SSM's copy is whole nothing is waited
        for: Live Tail sends each second's events a second later, so a stream it streamed the start
        of may lack the end, which SSM's copy has (``Verdict.BEHIND``: printed from there); a stream
        of which nothing came is read once with FilterLogEvents (``_read_silent``), and what it still
        lacks is missing. A stream whose copy SSM cut at its field limit is waited for, at most
        ``limit_seconds``: only CloudWatch has its rest."""
        began = self._clock()
        self._ended.update(self._command_ids)  # no session is started for a command that ended
        read = self._read_unread()
        self._next_read.clear()  # FilterLogEvents: read each command once now it ended, however recent the last read
        self.poll()  # what Live Tail delivered by now
        self._read_silent(captured, skip=read)
        while True:
            self.poll()
            now = self._clock()
            verdicts = {
                key: self._book.verdict(key, copy, now, self.live, self._sampled) for key, copy in captured.items()
            }
            if Verdict.WAITING not in verdicts.values() or not self.available or now >= began + limit_seconds:
                gaps = {key: self._book.gap(key, v) for key, v in verdicts.items() if v is not Verdict.COMPLETE}
                return Drained(gaps, now - began)
            (sleep or self._sleep)(DRAIN_POLL_SECONDS)

    def _read_silent(self, captured: Mapping[StreamKey, Captured], skip: set[str]) -> None:
        """With Live Tail, read once each command (not in ``skip``, read already) with a stream the
        instance printed to and nothing of which came: its output may all be in the last update
        Live Tail had not sent yet, or the instance role may not write to the log group (what
        ``summary`` then says)."""
        silent = {copy.command_id for key, copy in captured.items() if self._book.silent(key, copy)}
        for command_id in sorted(silent - skip - {""}):
            if self.live:
                self._read(command_id, self._book.window_start(command_id))

    # --- Live Tail ------------------------------------------------------------------------------------
    def _poll_live(self) -> int:
        assert self._live is not None  # LIVE mode: a log group ARN was given
        unusable = self._live.start(self._live.uncovered(self._command_ids, self._ended))
        if unusable is not None:
            self._fall_back(unusable)
        printed = 0
        for session in list(self._live.open):
            if not session.ready.is_set():
                continue
            for command_id in self._live.uncaught(session) if self._mode is _Mode.LIVE else []:
                printed += self._read(command_id, self._book.restart_window(command_id))
            printed += self._book.print_pushed(session.take(), self._clock())
            if session.sampled and not self._sampled:
                self._sampled = True
                log.warning(
                    "Live output is incomplete: the instances printed more than CloudWatch Live Tail delivers "
                    "(500 events a second), so it sent a sample. The lines it left out are shown when each "
                    "instance's command ends."
                )
            if session.end is not None:
                self._session_ended(session, session.end)
        return printed

    def _session_ended(self, session: LiveTailSession, end: StreamEnd) -> None:
        """A session stopped: after three hours, start a new one (and read what fell between them);
        after a failure, read with FilterLogEvents from now on."""
        self._drop(session)
        if not end.timed_out:
            self._fall_back(f"the Live Tail stream broke ({end.code}: {end.message})")

    def _drop(self, session: LiveTailSession) -> None:
        assert self._live is not None
        self._live.drop(session)

    def _fall_back(self, why: str) -> None:
        if self._live:
            self._live.close_all()
        if self._mode is not _Mode.LIVE:
            return
        self._mode = _Mode.FILTER
        log.warning(f"Live output falls back to FilterLogEvents polls: {why}.")

    # --- FilterLogEvents --------------------------------------------------------------------------------
    def _read(self, command_id: str, start: int | None) -> int:
        printed, refused = self._reads.read(command_id, start)
        if refused is not None:
            log.warning(self._reads.refused(refused, live=self.live))
            if not self.live:
                self._mode = _Mode.OFF
        return printed

    def _read_unread(self) -> set[str]:
        """At the end of a phase, read each command that no Live Tail session covered yet (its log
        group did not exist when the phase began, or StartLiveTail was throttled: the command may have
        ended before a session could start; or no session could be started for it); return them."""
        read = set()
        for command_id in self._command_ids:
            if self._live and command_id not in self._live.caught_up and self._mode is _Mode.LIVE:
                self._live.caught_up.add(command_id)
                self._read(command_id, None)
                read.add(command_id)
        return read
