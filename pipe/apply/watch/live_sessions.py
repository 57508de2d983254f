"""The Live Tail sessions following one phase, and which of its commands they cover.

A command is covered while an open session's prefixes name it, and caught up once FilterLogEvents has
read what it printed before that session started (``LogTail`` does the read). A command no session
could be started for is read once when the phase ends. Each open session holds one of the account's
concurrent sessions, and is billed while open: a session closes as soon as all its commands ended."""

from __future__ import annotations

from collections.abc import Iterable

from pipe.apply.watch.live_starts import SessionStarts
from pipe.apply.watch.live_tail import LiveTailSession
from pipe.apply.watch.streams import ReadCounts


def _commands(session: LiveTailSession) -> list[str]:
    return [prefix.rstrip("/") for prefix in session.prefixes]


class LiveSessions:
    def __init__(self, starts: SessionStarts, counts: ReadCounts) -> None:
        self._starts = starts
        self._counts = counts
        self.open: list[LiveTailSession] = []
        self.not_live: set[str] = set()  # commands no session could be started for: read at the end
        self.caught_up: set[str] = set()  # commands read once with FilterLogEvents since their session started

    def uncovered(self, command_ids: Iterable[str], ended: set[str]) -> list[str]:
        """The commands still running that no session follows: not started yet, sent while the others
        ran, or whose session timed out."""
        covered = {command_id for session in self.open for command_id in _commands(session)}
        skip = covered | ended | self.not_live
        return [command_id for command_id in command_ids if command_id not in skip]

    def start(self, command_ids: list[str]) -> str | None:
        """Start sessions for ``command_ids`` when a start is due; why Live Tail cannot be used at all
        (None: it can, or no start was due)."""
        if not command_ids or not self._starts.due:
            return None
        started = self._starts.start(command_ids, others_run=bool(self.open))
        self.open += started.sessions
        self._counts.live_sessions += len(started.sessions)
        self.not_live.update(started.read_at_end)
        return started.unusable

    def uncaught(self, session: LiveTailSession) -> list[str]:
        """The session's commands not caught up yet, marked caught up now (the caller reads them)."""
        fresh = [command_id for command_id in _commands(session) if command_id not in self.caught_up]
        self.caught_up.update(fresh)
        return fresh

    def finished(self, ended: set[str]) -> list[LiveTailSession]:
        """The open sessions whose commands all ended."""
        return [session for session in self.open if all(c in ended for c in _commands(session))]

    def drop(self, session: LiveTailSession) -> None:
        """Close a session; its commands are uncovered again (a command that has not ended gets a new one)."""
        session.close()
        self.open.remove(session)
        self.caught_up.difference_update(_commands(session))

    def close_all(self) -> None:
        for session in self.open:
            session.close()
        self.open = []
