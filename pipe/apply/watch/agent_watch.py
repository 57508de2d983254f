"""Notice instances whose SSM Agent went away mid-deploy, so the pipe does not wait for them forever.

An instance that is terminated, or whose agent dies, leaves its invocation InProgress; SSM reports
the agent as ConnectionLost (or no longer lists the instance). After AGENT_LOST_TIMEOUT seconds
of that, the pipe gives the instance up and fails it by name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from pipe.aws.errors import is_access_denied
from pipe.aws.instances import ping_statuses
from pipe.model import UNDELIVERED_STATUSES

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

    from pipe.apply.watch.tracker import InvocationTracker

MAX_CHECK_INTERVAL = 30.0
log = logging.getLogger("ssm-deploy")


class AgentWatch:
    def __init__(self, ssm: SSMClient, lost_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ssm = ssm
        self._lost_after = lost_after
        self._clock = clock
        self._interval = min(MAX_CHECK_INTERVAL, max(1.0, lost_after / 2))
        self._next_check = clock() + self._interval
        self._offline_since: dict[str, float] = {}
        self._enabled = True

    def due(self) -> bool:
        """Whether the next ``lost`` call asks SSM (at most every half AGENT_LOST_TIMEOUT, 30 s)."""
        return self._enabled and self._clock() >= self._next_check

    def lost(self, active_ids: list[str]) -> dict[str, str]:
        """Instances among ``active_ids`` offline for longer than the limit, with their ping status."""
        now = self._clock()
        if not self._enabled or now < self._next_check:
            return {}
        self._next_check = now + self._interval
        if not active_ids:
            return {}
        statuses = self._ping_statuses(active_ids)
        if statuses is None:
            return {}
        found = {}
        for instance_id in active_ids:
            status = statuses.get(instance_id, "not managed")
            if status == "Online":
                self._offline_since.pop(instance_id, None)
                continue
            since = self._offline_since.setdefault(instance_id, now)
            if now - since >= self._lost_after:
                found[instance_id] = f"agent {status} for {int(now - since)} s"
        return found

    def _ping_statuses(self, instance_ids: list[str]) -> dict[str, str] | None:
        try:
            return ping_statuses(self._ssm, instance_ids)
        except ClientError as error:
            if is_access_denied(error):
                self._enabled = False  # preflight already warned about the missing permission
                return None
            raise


def give_up_lost_agents(watch: AgentWatch, tracker: InvocationTracker) -> None:
    """When the agent check is due: give up the unfinished invocations of instances whose agent is lost
    (listed once more first: an instance may have finished since), so the wait ends for them."""
    if not watch.due():
        return
    open_commands = tracker.open_commands()
    unknown = [c for c in open_commands if not c.instance_ids and not tracker.detailed()]
    tracker.refresh(unknown)  # a TARGETS fleet: its instances are known only from a listing
    candidates = [
        inv.instance_id
        for command in open_commands
        for inv in tracker.of(command)
        if not inv.finished and not tracker.command_complete(command)
    ]
    lost = watch.lost(candidates)
    if not lost:
        return
    tracker.refresh(c for c in open_commands if any(inv.instance_id in lost for inv in tracker.of(c)))
    for instance_id, reason in lost.items():
        invocation = tracker.invocations[instance_id]
        if not invocation.finished:
            invocation.lost = reason
            invocation.lost_undelivered = invocation.status in UNDELIVERED_STATUSES
            log.error(f"{instance_id}: giving up, {reason}")
