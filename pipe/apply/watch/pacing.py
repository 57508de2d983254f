"""Rate control across the 50-instance commands of one deploy (more than 50 INSTANCE_IDS): a chunk
MAX_CONCURRENCY holds back is sent when another command ends, and once the failures over every
command pass MAX_ERRORS nothing more starts, as SSM does within one command."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipe.apply.send import ChunkQueue, cancel_command
from pipe.model import SentCommand

if TYPE_CHECKING:
    from pipe.apply.watch.tracker import InvocationTracker

log = logging.getLogger("ssm-deploy")


class ChunkPacer:
    """Paces ``rest`` (the chunks held back) after each poll of a tracker; ``on_sent`` gets each chunk
    sent, ``on_ended`` each command id once its command ended."""

    def __init__(
        self, rest: ChunkQueue, on_sent: Callable[[SentCommand], object], on_ended: Callable[[str], object]
    ) -> None:
        self._rest = rest
        self._on_sent = on_sent
        self._on_ended = on_ended
        self._ended: set[str] = set()
        self._stopped = False

    def pace(self, tracker: InvocationTracker) -> None:
        rest = self._rest
        limit = rest.plan.error_limit
        errors = tracker.errors()
        if limit is not None and errors > limit and not self._stopped:
            self._stop(tracker, errors, limit)
        commands = tracker.commands
        ended = [c.command_id for c in commands if tracker.done(c)]
        for command_id in ended:
            if command_id not in self._ended:
                self._ended.add(command_id)
                self._on_ended(command_id)
        running = len(commands) - len(ended)
        while rest.waiting and running < rest.plan.first_wave:
            command = rest.send_next()
            tracker.add_command(command)
            running += 1
            self._on_sent(command)

    def _stop(self, tracker: InvocationTracker, errors: int, limit: int) -> None:
        """What SSM does within one command once MaxErrors is passed, over all of them: nothing more
        starts (CancelCommand of the invocations not started yet); the running ones finish."""
        self._stopped = True
        held = self._rest.drop()
        for instance_id in held:
            invocation = tracker.invocations[instance_id]
            invocation.status, invocation.status_details = "Cancelled", "Terminated"
            invocation.stopped_at_max_errors = True
        cancelled = []
        for command in tracker.open_commands():
            tracker.list_statuses(command)
            pending = [inv for inv in tracker.of(command) if inv.status == "Pending"]
            if pending and cancel_command(tracker.ssm, command.command_id, [inv.instance_id for inv in pending]):
                for invocation in pending:
                    invocation.stopped_at_max_errors = True
                cancelled += pending
        log.error(
            f"MAX_ERRORS: {errors} instance(s) failed, more than the {limit} allowed over the whole deploy: "
            f"nothing more starts ({len(cancelled) + len(held)} instance(s) skipped); the running ones finish."
        )
