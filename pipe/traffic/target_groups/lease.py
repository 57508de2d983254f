"""The drain lease of a target group: one batch out of a group at a time, whatever deploy it belongs to.

MIN_HEALTHY is checked against a group's health as the pipe reads it, then the batch is deregistered:
check, then act. The deploy lock is one per SERVICE and environment, so two services whose instances
share a group (one group per port behind one ALB, a service moved between two names), or one SERVICE in
two ENVIRONMENTs registered in one group, deploy side by side. Without more, both checks may pass before
either batch leaves (both then drain: with one target each, nothing is left to serve), and a percentage is
counted of the targets registered as read, so a batch another deploy already took out shrinks the floor.

So a deploy holding its lock also takes, for each group a batch leaves, the lease
``/deploy-lock/target-group/<group name>/drain`` (names are unique per account and Region) before it
checks MIN_HEALTHY, and keeps it until the batch is registered again and healthy (or, when the batch
ends otherwise, registered again): another deploy's batch is never out of that group meanwhile, so the
check sees every target a deploy of this pipe could take out. A lease is a lock like the deploy lock
(``pipe.apply.lock``: created with ``Overwrite: false``, renewed, taken over after a killed build's
expiry, released on every exit path) and is covered by its IAM statement (``/deploy-lock/*``). Leases
are taken in the order of the groups' names, so two deploys leaving the same groups never hold one each
while waiting for the other's. A deploy that finds a lease held waits for it, as it waits for capacity,
up to HEALTHY_TIMEOUT, then fails before anything of the batch is deregistered, naming the group and
the build that holds it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipe.apply.lock import LockHeld, LockRequest, OnLost, deploy_lock
from pipe.config.build_context import BuildContext
from pipe.config.lock import LOCK_ROOT
from pipe.errors import DeployFailed, NothingSent

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

log = logging.getLogger("ssm-deploy")
# Between two attempts on a held lease: each is a PutParameter and a GetParameter, well within Parameter
# Store's default throughput (PutParameter: 3 transactions a second per account and Region).
LEASE_POLL_SECONDS = 2.0


def lease_name(group_name: str) -> str:
    """``/deploy-lock/target-group/<name>/drain``: never a deploy lock (``/deploy-lock/<service>/<env>``)
    nor its out-of-service record or takeover marker, whatever the service and environment."""
    return f"{LOCK_ROOT}/target-group/{group_name}/drain"


@dataclass(frozen=True)
class DrainLeases:
    """Who takes the leases: ``ssm`` acquires (a stop ends its retries), ``release_ssm`` renews and releases
    (it goes on after a stop, as the deploy lock's); a lease found lost calls ``on_lost``."""

    ssm: SSMClient
    release_ssm: SSMClient
    holder: str
    build: BuildContext
    on_lost: OnLost

    @contextmanager
    def held(
        self, group_names: Sequence[str], batch: str, bound: float, check_stop: Callable[[], None]
    ) -> Iterator[None]:
        """Hold the lease of each group for the ``with`` block, taken in name order (each waited for up to
        ``bound`` seconds: DeployFailed after that, or when Parameter Store refuses)."""
        with ExitStack() as stack:
            for name in sorted(set(group_names)):
                self._take(stack, name, batch, bound, check_stop)
            yield

    def _take(self, stack: ExitStack, group: str, batch: str, bound: float, check_stop: Callable[[], None]) -> None:
        request = LockRequest(lease_name(group), self.holder, self.build)
        started = time.monotonic()
        waiting = False
        while True:
            lease = deploy_lock(self.ssm, request, release_ssm=self.release_ssm, on_lost=self.on_lost, announce=False)
            try:
                stack.enter_context(lease)
            except LockHeld as held:
                waited = time.monotonic() - started
                if waited >= bound:
                    holder = held.problem.rstrip(".")
                    raise DeployFailed(
                        f"{batch} was not started: another deploy has a batch out of {group} (the drain lease of "
                        f"{group}: {holder}); waited HEALTHY_TIMEOUT {bound:g} s. Deploys that share a target "
                        "group take their batches out of it one at a time: run this step again once that deploy "
                        "ended, or raise HEALTHY_TIMEOUT"
                    ) from None
                if not waiting:
                    log.info(f"{batch}: waiting for the drain lease of {group}: {held.problem}")
                    waiting = True
                check_stop()
                time.sleep(min(LEASE_POLL_SECONDS, max(0.0, bound - waited)))
                continue
            except NothingSent as refused:
                raise DeployFailed(
                    f"{batch} was not started: the drain lease of {group} could not be taken: {refused.problem}"
                    + (f" Fix: {refused.fix}" if refused.fix else "")
                ) from None
            if waiting:
                log.info(f"{batch}: took the drain lease of {group} after {time.monotonic() - started:.0f} s")
            return
