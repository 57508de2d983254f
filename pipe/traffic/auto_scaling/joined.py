"""Instances an Auto Scaling group launched while the rollout ran (a scale-out, a replacement): once the
planned batches are done, each group is read again. An instance launched during the rollout installed the
release live at that moment (the association is updated only after a success), so it still needs this
deploy: every ``InService`` instance the plan did not cover is deployed in one more batch. One still being
launched (``Pending``, ``Pending:Wait``: its launch hook holds it while it installs) is waited for, up to
the time its launch install may take, then deployed; past that bound the deploy does not declare success
and names it. Reads only."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Sequence

from pipe.errors import DeployFailed
from pipe.execution import Execution
from pipe.report.instances import named
from pipe.traffic.auto_scaling.groups import LAUNCHING_STATES, AutoScalingError, read_groups

log = logging.getLogger("ssm-deploy")
POLL_SECONDS = 5.0  # between two reads of the groups while an instance is still being launched


def joined_in_service(run: Execution, names: Sequence[str], known: Collection[str], wait: int) -> dict[str, str]:
    """Instance id -> its group, for the ``InService`` instances of the groups ``names`` not in ``known``,
    once none of the groups' other instances is still being launched (waiting up to ``wait`` seconds).
    DeployFailed when a group cannot be read, or an instance is still being launched at the bound."""
    deadline = time.monotonic() + wait
    told = False
    while True:
        try:
            groups = read_groups(run.clients.autoscaling, names)
        except AutoScalingError as error:
            raise DeployFailed(
                f"The Auto Scaling groups could not be read again to find the instances they launched during the "
                f"rollout ({error}), so the deploy cannot tell that every instance in service runs it."
            ) from None
        launching = {
            i: f"{g.name}: {state}"
            for g in groups.values()
            for i, state in g.instances.items()
            if state in LAUNCHING_STATES and i not in known
        }
        if not launching:
            return {i: g.name for g in groups.values() for i in g.in_service if i not in known}
        shown = named([f"{i} ({how})" for i, how in launching.items()])
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeployFailed(
                f"{shown} joined the fleet during the rollout and {'is' if len(launching) == 1 else 'are'} still "
                f"being launched after {wait} s (the time a launch install may take): the deploy cannot bring "
                "them to this release, so it does not declare success. Until a deploy succeeds they install the "
                "release live before it. Deploy again once they are InService (or their launch hook abandoned them)."
            )
        if not told:
            log.info(f"Waiting up to {left:.0f} s for instances the group is still launching: {shown}")
            told = True
        run.stops.raise_stopped_if_requested(f"while waiting for {shown} to be launched; nothing more was sent.")
        time.sleep(min(POLL_SECONDS, left))
