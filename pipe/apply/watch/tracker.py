"""Wait for every invocation of a deploy's commands, with O(1) calls per poll whatever the fleet.

Each poll reads every command's counts in one call (``command_counts``): Status, TargetCount,
CompletedCount, ErrorCount and DeliveryTimedOutCount from ListCommands. Invocations are listed
only when a listing tells something the counts do not:

- a small fleet (at most PER_INSTANCE_LINES instances, so one command): every poll, for each
  instance's status line (Pending, InProgress, Success); one call;
- a command whose ErrorCount or DeliveryTimedOutCount grew: its failures, to name them as they
  happen (one page for a command of up to 50 instances; for a larger TARGETS command only the rows
  with Status Failed and TimedOut);
- a command that ended: once, with Details, its results (``results.py``): 50 instances a call;
- the agent check, when it is due and the instances to check are not known yet (TARGETS), and
  before an instance is given up (it may have finished since).

With more than 50 INSTANCE_IDS the rollout is paced here too (``send.ChunkPlan``): a command held
back by MAX_CONCURRENCY is sent when another ends, and once the ErrorCount over all commands
passes MAX_ERRORS nothing more starts.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from pipe.apply.send import ChunkQueue
from pipe.apply.watch.agent_watch import AgentWatch, give_up_lost_agents
from pipe.apply.watch.pacing import ChunkPacer
from pipe.apply.watch.progress import progress_line
from pipe.apply.watch.results import apply_result, apply_status, list_invocations
from pipe.aws.errors import error_code
from pipe.errors import PipeError
from pipe.limits import LIST_COMMANDS_PAGE, LIST_INVOCATIONS_PAGE
from pipe.model import ACTIVE_STATUSES, Invocation, SentCommand

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

FIRST_POLL_SECONDS = 0.25
# The steady poll period. The end of a phase is seen at the next poll, half a period later on
# average: every phase of every batch pays it. At 0.5 s a phase ends about as soon as a plain 1 s
# GetCommandInvocation poller sees it, results listing and summary included (README, Performance);
# each poll is one ListCommands call, and one ListCommandInvocations for a fleet of up to 20.
MAX_POLL_SECONDS = 0.5
PER_INSTANCE_LINES = 20  # above this many instances, status changes are summed up in progress lines
SPARE_PAGES = 1  # ListCommands pages read beyond the deploy's own before asking by CommandId
log = logging.getLogger("ssm-deploy")


class WaitTimedOut(PipeError):
    """The pipe's own bound on the wait ran out before every invocation finished."""


@dataclass(frozen=True)
class CommandCounts:
    """A command's row in ListCommands."""

    status: str
    target: int
    completed: int
    errors: int  # Failed or Execution Timed Out: what counts against MaxErrors
    delivery_timed_out: int

    @classmethod
    def of(cls, row: dict[str, Any]) -> CommandCounts:
        return cls(
            str(row.get("Status", "Pending")),
            int(row.get("TargetCount", 0) or 0),
            int(row.get("CompletedCount", 0) or 0),
            int(row.get("ErrorCount", 0) or 0),
            int(row.get("DeliveryTimedOutCount", 0) or 0),
        )

    @property
    def finished(self) -> bool:
        return self.status not in ACTIVE_STATUSES


def command_counts(ssm: SSMClient, commands: list[SentCommand], document_name: str = "") -> dict[str, CommandCounts]:
    """Every command's counts: one ListCommands call by CommandId for one command; for several, one
    listing filtered by InvokedAfter (the first one's RequestedDateTime, on AWS's clock, to the
    second) and DocumentName, read until each of them is found (a page holds 50: a 2,500-instance
    deploy, unless other commands of the document were sent since). One not found there, or sent
    without a known time, is asked by its CommandId. A command not listed yet is left out."""
    wanted = {command.command_id for command in commands}
    found: dict[str, CommandCounts] = {}
    times = [command.requested_at for command in commands if command.requested_at is not None]
    if len(commands) > 1 and times:
        since = min(times).astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        filters = [{"key": "InvokedAfter", "value": since}]
        if document_name:
            filters.append({"key": "DocumentName", "value": document_name})
        request: dict[str, Any] = {"Filters": filters, "MaxResults": LIST_COMMANDS_PAGE}
        pages = -(-len(commands) // LIST_COMMANDS_PAGE) + SPARE_PAGES
        for _ in range(pages):
            page = ssm.list_commands(**request)
            for row in page.get("Commands", []):
                if row.get("CommandId") in wanted:
                    found[str(row["CommandId"])] = CommandCounts.of(dict(row))
            if len(found) == len(wanted) or not page.get("NextToken"):
                break
            request["NextToken"] = page["NextToken"]
    for command_id in sorted(wanted - set(found)):
        try:
            rows = ssm.list_commands(CommandId=command_id).get("Commands", [])
        except ClientError as error:
            if error_code(error) == "InvalidCommandId":
                continue  # eventual consistency: a new command may not be listed yet
            raise
        if rows:
            found[command_id] = CommandCounts.of(dict(rows[0]))
    return found


class InvocationTracker:
    """Follows the invocations of one or more commands.

    Instances sent by id are known from the start; for a TARGETS command SSM resolves them, so its
    invocations are taken as they are listed, and the command's status says when the list is complete.
    """

    def __init__(
        self,
        ssm: SSMClient,
        commands: list[SentCommand],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        agent_watch: AgentWatch | None = None,
        instance_count: int = 0,
        document_name: str = "",
        rest: ChunkQueue | None = None,
        on_sent: Callable[[SentCommand], object] = lambda command: None,
        on_ended: Callable[[str], object] = lambda command_id: None,
    ) -> None:
        """``instance_count``: how many instances the commands target, when known before (TARGETS
        resolved by the pipe); ``rest``: chunks MAX_CONCURRENCY holds back, sent (and passed to
        ``on_sent``) as earlier commands end (whose ids go to ``on_ended``)."""
        self.agent_watch = agent_watch
        self._ssm = ssm
        self._commands = list(commands)
        self.clock = clock
        self.sleep = sleep
        self._document_name = document_name
        self._rest = rest
        self._pacer = ChunkPacer(rest, on_sent, on_ended) if rest is not None else None
        self.invocations = {i: Invocation(i, c.command_id) for c in commands for i in c.instance_ids}
        self._by_command: dict[str, list[Invocation]] = {c.command_id: [] for c in commands}
        for invocation in self.invocations.values():
            self._by_command[invocation.command_id].append(invocation)
        for instance_id in rest.waiting if rest else []:
            self.invocations[instance_id] = Invocation(instance_id)  # not sent yet
        self._instance_count = max(instance_count, len(self.invocations))
        self._counts: dict[str, CommandCounts] = {}
        self._settled: set[str] = set()  # commands whose results were read, every invocation final
        self._last_progress = ""

    @property
    def commands(self) -> list[SentCommand]:
        return list(self._commands)

    def add_command(self, command: SentCommand) -> None:
        """A command sent since (a chunk MAX_CONCURRENCY held back): its instances are followed now."""
        self._commands.append(command)
        mine = self._by_command[command.command_id] = []
        for instance_id in command.instance_ids:
            self.invocations[instance_id].command_id = command.command_id
            mine.append(self.invocations[instance_id])

    def errors(self) -> int:
        """Failed invocations over every command, from the last counts."""
        return sum(c.errors for c in self._counts.values())

    @property
    def ssm(self) -> SSMClient:
        return self._ssm

    @property
    def finished(self) -> bool:
        if self._rest is not None and self._rest.waiting:
            return False
        return all(self.done(command) for command in self._commands)

    def hold_back_rest(self) -> None:
        """Send no more chunks (a stop): their instances stay as never sent (Pending, no command)."""
        if self._rest is not None:
            self._rest.drop()

    def read_results(self) -> None:
        """Read the results of every command not read yet (after a stop or the wait bound)."""
        for command in self._commands:
            if command.command_id not in self._settled:
                self._read_results(command)

    # --- one poll -------------------------------------------------------------------------------------
    def poll(self) -> list[str]:
        """One round of status reads; returns the lines to log. Unlisted invocations stay Pending."""
        open_commands = [c for c in self._commands if c.command_id not in self._settled]
        counts = command_counts(self._ssm, open_commands, self._document_name) if open_commands else {}
        changed: list[Invocation] = []
        detailed = self.detailed()
        for command in open_commands:
            now = counts.get(command.command_id)
            if now is None:
                continue  # not listed yet
            before = self._counts.get(command.command_id)
            self._counts[command.command_id] = now
            if now.finished or now.completed + self._lost_in(command) >= now.target > 0:
                changed += self._read_results(command)
            elif detailed:
                changed += self.list_statuses(command)
            elif _more_failures(before, now):
                changed += self._list_failures(command, now)
        if self._pacer is not None:
            self._pacer.pace(self)
        if detailed:
            return [f"{inv.instance_id}: {inv.describe()}" for inv in changed]
        # a fleet: one progress line when the counts move, plus every instance that did not succeed
        lines = [f"{inv.instance_id}: {inv.describe()}" for inv in changed if inv.finished and not inv.succeeded]
        progress = self.progress()
        if progress != self._last_progress:
            self._last_progress = progress
            lines.append(progress)
        return lines

    def progress(self) -> str:
        """Per status once every command is read; before that, from the commands' counts."""
        return progress_line(self._counts, self.invocations, self._instance_count, self.finished)

    def detailed(self) -> bool:
        """A fleet small enough for a line per instance (its invocations are listed every poll)."""
        return self._instance_count <= PER_INSTANCE_LINES and all(
            c.target <= PER_INSTANCE_LINES for c in self._counts.values()
        )

    def done(self, command: SentCommand) -> bool:
        if command.command_id in self._settled:
            return True
        mine = self.of(command)
        return bool(mine) and all(inv.finished for inv in mine)  # the results of those given up come last

    def of(self, command: SentCommand) -> list[Invocation]:
        return self._by_command.get(command.command_id, [])

    def _lost_in(self, command: SentCommand) -> int:
        return sum(1 for inv in self.of(command) if inv.lost)

    def open_commands(self) -> list[SentCommand]:
        return [c for c in self._commands if c.command_id not in self._settled]

    # --- listings -------------------------------------------------------------------------------------
    def _read_results(self, command: SentCommand) -> list[Invocation]:
        """The command's results, with Details; settled once every invocation is final."""
        changed = []
        listed = 0
        for row in list_invocations(self._ssm, command.command_id, details=True):
            invocation = self._invocation(command, row)
            if invocation is None:
                continue
            listed += 1
            before = (invocation.status, invocation.status_details)
            apply_result(invocation, row)
            if (invocation.status, invocation.status_details) != before:
                changed.append(invocation)
        counts = self._counts.get(command.command_id)
        expected = len(command.instance_ids) or (counts.target if counts else 0)
        if listed >= expected and all(inv.finished for inv in self.of(command)):
            self._settled.add(command.command_id)
        return changed

    def list_statuses(self, command: SentCommand, status: str = "") -> list[Invocation]:
        changed = []
        for row in list_invocations(self._ssm, command.command_id, status=status):
            invocation = self._invocation(command, row)
            if invocation is not None and apply_status(invocation, row):
                changed.append(invocation)
        return changed

    def _list_failures(self, command: SentCommand, counts: CommandCounts) -> list[Invocation]:
        if counts.target <= LIST_INVOCATIONS_PAGE:
            return self.list_statuses(command)  # one page
        return self.list_statuses(command, "Failed") + self.list_statuses(command, "TimedOut")

    def refresh(self, commands: Iterable[SentCommand]) -> None:
        """List the statuses of ``commands``' invocations now."""
        for command in commands:
            self.list_statuses(command)

    def _invocation(self, command: SentCommand, row: Any) -> Invocation | None:
        instance_id = str(row["InstanceId"])
        invocation = self.invocations.get(instance_id)
        if invocation is None or invocation.command_id != command.command_id:
            if command.instance_ids:
                return None  # not ours
            invocation = self.invocations[instance_id] = Invocation(instance_id, command.command_id)
            self._by_command.setdefault(command.command_id, []).append(invocation)
        return invocation

    # --- lost agents ---------------------------------------------------------------------------------
    def command_complete(self, command: SentCommand) -> bool:
        """Every target of the command completed, by its counts."""
        counts = self._counts.get(command.command_id)
        return counts is not None and counts.target > 0 and counts.completed >= counts.target


def _more_failures(before: CommandCounts | None, now: CommandCounts) -> bool:
    errors, timed_out = (before.errors, before.delivery_timed_out) if before else (0, 0)
    return now.errors > errors or now.delivery_timed_out > timed_out


def wait_until_final(
    tracker: InvocationTracker,
    limit_seconds: float,
    on_poll: Callable[[], object] = lambda: None,
    check_stop: Callable[[], None] = lambda: None,
) -> dict[str, Invocation]:
    """Poll until all invocations are final; raise WaitTimedOut after ``limit_seconds``.

    ``check_stop`` runs before every poll and may raise to end the wait (a stopped pipeline).
    """
    deadline = tracker.clock() + limit_seconds
    interval = FIRST_POLL_SECONDS
    while True:
        check_stop()
        changes = tracker.poll()
        on_poll()  # print output that arrived before announcing the statuses it led to
        for change in changes:
            log.info(change)
        if tracker.agent_watch is not None:
            give_up_lost_agents(tracker.agent_watch, tracker)
        if tracker.finished:
            return tracker.invocations
        if tracker.clock() >= deadline:
            tracker.refresh(tracker.open_commands())
            pending = [i for i, inv in tracker.invocations.items() if not inv.finished]
            commands = ", ".join(c.command_id for c in tracker.commands)
            raise WaitTimedOut(
                f"Command {commands} did not finish within {int(limit_seconds)} s "
                f"(delivery + execution timeout + margin); still running on {', '.join(pending) or 'targets'}."
            )
        tracker.sleep(interval)
        interval = min(interval * 1.5, MAX_POLL_SECONDS)
