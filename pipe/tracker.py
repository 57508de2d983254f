"""Wait for every invocation of a command to finish, one ListCommandInvocations page per 50 instances."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pipe.agent_watch import AgentWatch
from pipe.errors import PipeError
from pipe.invocations import Invocation

FIRST_POLL_SECONDS = 0.25
MAX_POLL_SECONDS = 1.0
log = logging.getLogger("ssm-deploy")


class WaitTimedOut(PipeError):
    """The pipe's own bound on the wait ran out before every invocation finished."""


class InvocationTracker:
    def __init__(
        self,
        ssm: Any,
        command_id: str,
        instance_ids: list[str],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        agent_watch: AgentWatch | None = None,
    ) -> None:
        self._agent_watch = agent_watch
        self._ssm = ssm
        self._command_id = command_id
        self._clock = clock
        self._sleep = sleep
        self.invocations = {i: Invocation(i) for i in instance_ids}

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
            if all(inv.finished for inv in self.invocations.values()):
                return self.invocations
            if self._clock() >= deadline:
                pending = [i for i, inv in self.invocations.items() if not inv.finished]
                raise WaitTimedOut(
                    f"Command {self._command_id} did not finish within {int(limit_seconds)} s "
                    f"(delivery + execution timeout + margin); still running on {', '.join(pending)}."
                )
            self._sleep(interval)
            interval = min(interval * 1.5, MAX_POLL_SECONDS)

    def _give_up_lost_agents(self) -> None:
        if self._agent_watch is None:
            return
        active = [i for i, inv in self.invocations.items() if not inv.finished]
        for instance_id, reason in self._agent_watch.lost(active).items():
            self.invocations[instance_id].lost = reason
            log.error(f"{instance_id}: giving up, {reason}")

    def poll(self) -> list[str]:
        """One round of status reads; returns the changes. Unlisted invocations stay Pending."""
        changes = []
        paginator = self._ssm.get_paginator("list_command_invocations")
        for page in paginator.paginate(CommandId=self._command_id, PaginationConfig={"PageSize": 50}):
            for item in page.get("CommandInvocations", []):
                invocation = self.invocations.get(item["InstanceId"])
                if invocation is None:
                    continue
                status, details = item.get("Status", "Pending"), item.get("StatusDetails", "")
                if (status, details) != (invocation.status, invocation.status_details):
                    invocation.status, invocation.status_details = status, details
                    changes.append(f"{invocation.instance_id}: {invocation.describe()}")
        return changes
