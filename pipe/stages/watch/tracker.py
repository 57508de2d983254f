"""Wait for every invocation of a command to finish, one ListCommandInvocations page per 50 instances."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipe.errors import PipeError
from pipe.model import ACTIVE_STATUSES, Invocation, SentCommand
from pipe.stages.watch.agent_watch import AgentWatch

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

FIRST_POLL_SECONDS = 0.25
MAX_POLL_SECONDS = 1.0
PER_INSTANCE_LINES = 20  # above this many instances, status changes are summed up in progress lines
log = logging.getLogger("ssm-deploy")


class WaitTimedOut(PipeError):
    """The pipe's own bound on the wait ran out before every invocation finished."""


class InvocationTracker:
    """Follows the invocations of one or more commands.

    Instances sent by id are known from the start; for a TARGETS command SSM resolves them, so its
    invocations are taken as they are listed, and the command's own status (one ListCommands call)
    says when the list is complete.
    """

    def __init__(
        self,
        ssm: SSMClient,
        commands: list[SentCommand],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        agent_watch: AgentWatch | None = None,
    ) -> None:
        self._agent_watch = agent_watch
        self._ssm = ssm
        self._commands = commands
        self._clock = clock
        self._sleep = sleep
        self.invocations = {i: Invocation(i, c.command_id) for c in commands for i in c.instance_ids}
        self._open_targets = {c.command_id for c in commands if not c.instance_ids}
        self._last_progress = ""

    def wait(
        self,
        limit_seconds: float,
        on_poll: Callable[[], object] = lambda: None,
        check_stop: Callable[[], None] = lambda: None,
    ) -> dict[str, Invocation]:
        """Poll until all invocations are final; raise WaitTimedOut after ``limit_seconds``.

        ``check_stop`` runs before every poll and may raise to end the wait (a stopped pipeline).
        """
        deadline = self._clock() + limit_seconds
        interval = FIRST_POLL_SECONDS
        while True:
            check_stop()
            changes = self.poll()
            on_poll()  # print output that arrived before announcing the statuses it led to
            for change in changes:
                log.info(change)
            self._give_up_lost_agents()
            if self.finished:
                return self.invocations
            if self._clock() >= deadline:
                pending = [i for i, inv in self.invocations.items() if not inv.finished]
                commands = ", ".join(c.command_id for c in self._commands)
                raise WaitTimedOut(
                    f"Command {commands} did not finish within {int(limit_seconds)} s "
                    f"(delivery + execution timeout + margin); still running on {', '.join(pending) or 'targets'}."
                )
            self._sleep(interval)
            interval = min(interval * 1.5, MAX_POLL_SECONDS)

    @property
    def finished(self) -> bool:
        return not self._open_targets and all(inv.finished for inv in self.invocations.values())

    def _give_up_lost_agents(self) -> None:
        if self._agent_watch is None:
            return
        active = [i for i, inv in self.invocations.items() if not inv.finished]
        for instance_id, reason in self._agent_watch.lost(active).items():
            self.invocations[instance_id].lost = reason
            log.error(f"{instance_id}: giving up, {reason}")

    def poll(self) -> list[str]:
        """One round of status reads; returns the lines to log. Unlisted invocations stay Pending."""
        changed: list[Invocation] = []
        for command in self._commands:
            complete = command.command_id in self._open_targets and self._command_finished(command.command_id)
            changed += self._poll_invocations(command.command_id)
            if complete:
                self._open_targets.discard(command.command_id)
        if len(self.invocations) <= PER_INSTANCE_LINES:
            return [f"{inv.instance_id}: {inv.describe()}" for inv in changed]
        # a fleet: one progress line when the counts move, plus every instance that did not succeed
        lines = [f"{inv.instance_id}: {inv.describe()}" for inv in changed if inv.finished and not inv.succeeded]
        progress = self.progress()
        if progress != self._last_progress:
            self._last_progress = progress
            lines.append(progress)
        return lines

    def progress(self) -> str:
        statuses = Counter(inv.status for inv in self.invocations.values())
        done = sum(count for status, count in statuses.items() if status not in ACTIVE_STATUSES)
        final = ", ".join(
            f"{count} {status}" for status, count in sorted(statuses.items()) if status not in ACTIVE_STATUSES
        )
        return (
            f"Progress: {done}/{len(self.invocations)} finished"
            + (f" ({final})" if final else "")
            + f", {statuses['InProgress']} running, {statuses['Pending'] + statuses['Delayed']} pending"
        )

    def _command_finished(self, command_id: str) -> bool:
        commands = self._ssm.list_commands(CommandId=command_id).get("Commands", [])
        return bool(commands) and commands[0].get("Status") not in ACTIVE_STATUSES

    def _poll_invocations(self, command_id: str) -> list[Invocation]:
        changed = []
        paginator = self._ssm.get_paginator("list_command_invocations")
        for page in paginator.paginate(CommandId=command_id, PaginationConfig={"PageSize": 50}):
            for item in page.get("CommandInvocations", []):
                instance_id = item["InstanceId"]
                invocation = self.invocations.get(instance_id)
                if invocation is None:
                    if command_id not in self._open_targets:
                        continue  # not ours
                    invocation = self.invocations[instance_id] = Invocation(instance_id, command_id)
                status, details = item.get("Status", "Pending"), item.get("StatusDetails", "")
                if (status, details) != (invocation.status, invocation.status_details):
                    invocation.status, invocation.status_details = status, details
                    changed.append(invocation)
        return changed
