"""The batch hook behind a load balancer: take the batch out of every target group it is in (named in
TARGET_GROUPS or found registered there when the rollout was planned), as the groups' targets are when
the batch starts (read again then: an operator may have registered or deregistered one since, or an Auto
Scaling group launched an instance), and wait until it is drained;
after the deploy, put it back in each of them, on the ports it was registered with, and wait until
every group reports it healthy. The time from its deregistration until then is the batch's time out
of service (``BatchRecord.out_of_service``).

Whatever ends the batch (a failure, a stop, an AWS error, the pipe's own wait bound), every target
the pipe deregistered is registered again before the hook is left; when that is impossible the
message names the instances and the command that registers them. Once a registration failed (the
deploy role lost RegisterTargets mid-deploy, a throttle past the SDK's retries), no more targets are
taken out in that deploy: the rollback of a batch deployed before would leave it out of service too,
so that batch is not drained, stays in service on the release it runs and is named.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence, Set
from contextlib import contextmanager

from botocore.exceptions import BotoCoreError, ClientError

from pipe.aws.errors import explain
from pipe.errors import DeployFailed, PipeError, sentence
from pipe.execution import Execution
from pipe.model import Batch, BatchRecord
from pipe.traffic.left_out import Target
from pipe.traffic.target_groups.capacity import largest_batch, shortfall
from pipe.traffic.target_groups.groups import HEALTHY, UNHEALTHY, TargetGroup, TargetState
from pipe.traffic.target_groups.waits import (
    LoadBalancerError,
    NotDeregistered,
    Registrations,
    deregister,
    drained,
    healthy,
    poll_seconds,
    read_states,
    register,
    wait_for,
)

log = logging.getLogger("ssm-deploy")
LISTED = 10
GroupTarget = tuple[str, tuple[str, int | None]]  # a target group's ARN and a target's key in it
REGISTERED_AGAIN = "it is registered again (see above)."
# why a target not healthy at the end of HEALTHY_TIMEOUT may not be the release's fault: it was unhealthy as its
# batch left, before this deploy touched it, or after this deploy had put it back healthy (a switch back)
ILL_BEFORE = " (already unhealthy in it before this deploy took it out)"
ILL_SINCE_BACK = " (already unhealthy in it when taken out again: it fell ill after this deploy put it back healthy)"
ILL_SINCE_LEFT = (
    " (unhealthy in it since this deploy's release ran there: it was healthy when this deploy first took it out)"
)


class NotBackInService(DeployFailed):
    """A batch registered again did not become healthy in time (or could not be registered)."""


class LoadBalancer:
    """The target groups of the rollout, and the bounds of each batch's way out and back."""

    def __init__(self, groups: Sequence[TargetGroup], drain_timeout: int, healthy_timeout: int, min_healthy: str):
        self.groups = list(groups)
        self.drain_timeout = drain_timeout
        self.healthy_timeout = healthy_timeout
        self.min_healthy = min_healthy
        # the targets found unhealthy, before anything of this deploy, in groups TARGET_GROUPS does not name:
        # once registered again they are 'initial' until their checks fail again, and are still not waited for
        self.ill_before: set[GroupTarget] = set()
        # the first batch this deploy could not register again: nothing more is taken out after it
        self.not_registered: str | None = None
        # the targets this deploy put back and saw healthy: one unhealthy when its batch leaves again (the switch
        # back of a batch deployed before a failed one) fell ill during this deploy, not before it
        self.back_healthy: set[GroupTarget] = set()
        # the targets healthy when this deploy took them out: one unhealthy later fell ill during this deploy
        self.left_healthy: set[GroupTarget] = set()

    def registrations(self, instance_ids: Sequence[str]) -> Registrations:
        ours = set(instance_ids)
        found = {group.arn: (group, group.registrations(ours)) for group in self.groups}
        return {arn: (group, targets) for arn, (group, targets) in found.items() if targets}

    @contextmanager
    def around(self, run: Execution, batch: Batch) -> Iterator[None]:
        """The BatchHook: out of the load balancer before the deploy, back in after it."""
        # the targets as they are now, not as the plan or the batch before read them: an operator (or a group's
        # scale-out) may have registered or deregistered one since, and the batch leaves and rejoins what it is in
        _learn_addresses(run, batch, self.groups)
        self._read(run, batch, self.groups)
        records = run.outcome.records_of(batch)
        leaving = [group for group, _ in self.registrations(batch.instance_ids).values()]
        if leaving and self.not_registered is not None:
            raise DeployFailed(
                f"{batch} was not taken out of the load balancer: {self.not_registered} could not be registered "
                "again earlier in this deploy, and it would stay out of service too; it is still in service"
            )
        if leaving:
            self._wait_for_capacity(run, batch, leaving)  # reads them again while it waits
        registrations = self.registrations(batch.instance_ids)
        if not registrations:
            log.info(f"{batch}: in none of the target groups, deployed without draining")
            yield
            return
        leaving = [group for group, _ in registrations.values()]
        ill_at_start, ill_before = _ill_as_it_leaves(
            batch, registrations, self.back_healthy, self.left_healthy, self.ill_before
        )
        self.left_healthy |= _in_state(registrations, HEALTHY)
        self.ill_before |= {(group.arn, state.target_key) for group, state in ill_before}
        # the last moment a stop leaves the batch in service (after SuspendProcesses no call above ends on a stop)
        run.stops.raise_stopped_if_requested(f"before {batch} was taken out of the load balancer.")
        names = ", ".join(group.name for group in leaving)
        delay = max(group.deregistration_delay for group in leaving)
        log.info(f"{batch}: draining from {names} (deregistration delay {delay} s)...")
        left = time.monotonic()
        if run.left_out is not None:  # recorded first: a build killed from here on leaves a record to put back
            run.left_out.taking_out(_targets(registrations))
        try:
            deregister(run.clients.elbv2, registrations)
        except NotDeregistered as error:
            left_out = self._put_back(run, batch, error.done, wait=False) if error.done else []
            raise DeployFailed(
                " ".join([f"{batch} could not be taken out of the load balancer: {error}.", *left_out])
            ) from None
        try:
            try:
                self._wait_drained(run, batch, registrations, records)
            except LoadBalancerError as error:
                raise DeployFailed(
                    f"{batch}: its drain could not be followed: {error}. Nothing was deployed on it."
                ) from None
            yield
        except BaseException as ending:
            left_out = self._put_back(run, batch, registrations, wait=False)
            if left_out and isinstance(ending, PipeError):  # the verdict names what is left out, not the log alone
                ending.args = (" ".join([sentence(str(ending)), *(f"{batch}: {p}" for p in left_out)]),)
            raise
        try:
            self._put_back(
                run, batch, registrations, wait=True, records=records, left=left, unawaited=ill_before, ill=ill_at_start
            )
        except LoadBalancerError as error:
            raise NotBackInService(f"{batch}: its health in the load balancer could not be read: {error}.") from None

    def room(self, run: Execution, instance_ids: Sequence[str]) -> int | None:
        """How many instances may be out of service at once now, in the groups ``instance_ids`` are in:
        the fewest healthy targets above MIN_HEALTHY's floor (read now; None when they are in none)."""
        leaving = [group for group, _ in self.registrations(instance_ids).values()]
        if not leaving:
            return None
        for group in leaving:
            try:
                group.targets = read_states(run.clients.elbv2, group, [])
            except LoadBalancerError:
                return 0  # unreadable: no room known, so one batch at a time (the hook reads it again)
        return largest_batch(leaving, self.min_healthy, instance_ids)

    def _read(self, run: Execution, batch: Batch, groups: Sequence[TargetGroup]) -> None:
        """Every target of ``groups`` as ELBv2 reports it now; DeployFailed, before anything of the batch is
        deregistered, when one cannot be read."""
        for group in groups:
            try:
                group.targets = read_states(run.clients.elbv2, group, [])
            except LoadBalancerError as error:
                raise DeployFailed(f"{batch} was not started: {group.name}: {error}.") from None

    def _wait_for_capacity(self, run: Execution, batch: Batch, leaving: Sequence[TargetGroup]) -> None:
        """Never start a batch that would leave one of the groups it leaves below MIN_HEALTHY: wait
        (up to HEALTHY_TIMEOUT) for targets to recover, then fail before anything of this batch is
        deregistered."""
        started = time.monotonic()
        while (problem := shortfall(leaving, batch.instance_ids, self.min_healthy)) is not None:
            if time.monotonic() - started >= self.healthy_timeout:
                raise DeployFailed(f"{batch} was not started: {problem} (waited {self.healthy_timeout} s).")
            run.stops.raise_stopped_if_requested(f"before {batch} was taken out of the load balancer.")
            time.sleep(poll_seconds(len(leaving)))
            self._read(run, batch, leaving)

    def _wait_drained(
        self, run: Execution, batch: Batch, registrations: Registrations, records: Sequence[BatchRecord]
    ) -> None:
        waited, pending = wait_for(
            run.clients.elbv2,
            registrations,
            drained,
            self.drain_timeout,
            lambda: run.stops.raise_stopped_if_requested(f"while {batch} was draining; {REGISTERED_AGAIN}"),
        )
        if pending:
            raise DeployFailed(
                f"{batch} was still draining after DRAIN_TIMEOUT {self.drain_timeout} s: "
                f"{_states(pending)}. Nothing was deployed on it. Fix: raise "
                "DRAIN_TIMEOUT above the target group's deregistration_delay.timeout_seconds, or lower that delay."
            )
        for record in records:
            record.drain = record.drain if record.drain is not None else round(waited, 1)
        log.info(f"{batch}: drained after {waited:.0f} s")

    def _put_back(
        self,
        run: Execution,
        batch: Batch,
        registrations: Registrations,
        wait: bool,
        records: Sequence[BatchRecord] = (),
        left: float | None = None,
        unawaited: Sequence[tuple[TargetGroup, TargetState]] = (),
        ill: Mapping[GroupTarget, str] | None = None,
    ) -> list[str]:
        """Register the batch again (and with ``wait``, wait until it is healthy: NotBackInService when it
        cannot be registered or is not); without ``wait``, the registrations that failed, each with its command."""
        taken_out = registrations
        registrations = _without(registrations, run.outcome.departed)  # gone: nothing to register again
        if not registrations:
            if run.left_out is not None:
                run.left_out.put_back(_targets(taken_out))
            log.info(f"{batch}: every instance of it left the fleet: nothing to register again")
            return []
        problems = register(run.clients.elbv2, registrations)
        for problem in problems:
            log.error(f"{batch}: {problem}")
        if problems and self.not_registered is None:
            self.not_registered = str(batch)
        if problems and wait:
            raise NotBackInService(f"{batch} could not be registered again: {' '.join(problems)}")
        if not problems:
            log.info(f"{batch}: registered again in {', '.join(g.name for g, _ in registrations.values())}")
            if run.left_out is not None:
                run.left_out.put_back(_targets(taken_out))
        if not wait:
            return problems
        waited, pending = wait_for(
            run.clients.elbv2,
            _without_targets(registrations, unawaited),
            healthy,
            self.healthy_timeout,
            lambda: run.stops.raise_stopped_if_requested(
                f"while {batch} was coming back into service; {REGISTERED_AGAIN}"
            ),
            run.left_the_fleet,  # a scale-in while it comes back: gone, not unhealthy
        )
        if pending:
            raise NotBackInService(
                f"{batch} was not healthy in the load balancer after HEALTHY_TIMEOUT {self.healthy_timeout} s: "
                f"{_states(pending, ill)}. Check the target group's health check (path, port, matcher) against the "
                "app, or raise HEALTHY_TIMEOUT."
            )
        self.back_healthy |= {(arn, t.target_key) for arn, (_, targets) in registrations.items() for t in targets}
        _note_healthy(records, waited, left)
        back = [i for i in batch.instance_ids if i not in run.outcome.departed]
        if not back:
            log.info(f"{batch}: every instance of it left the fleet while it came back into service")
            return []
        log.info(f"{batch}: healthy in the load balancer after {waited:.0f} s")
        return []


def _learn_addresses(run: Execution, batch: Batch, groups: Sequence[TargetGroup]) -> None:
    """The addresses of the batch's instances the plan did not know (launched by their Auto Scaling group
    during the rollout), by which an ip group may hold them; DeployFailed, before anything of the batch is
    deregistered, when EC2 refuses."""
    addresses = next((group.addresses for group in groups if group.addresses is not None), None)
    if addresses is None:
        return
    try:
        addresses.learn(run.clients.ec2, batch.instance_ids)
    except ClientError as error:
        raise DeployFailed(
            f"{batch} was not started: its addresses, by which a target group of type 'ip' may hold it, could "
            f"not be read: {explain(error)}"
        ) from None
    except BotoCoreError as error:
        raise DeployFailed(f"{batch} was not started: its addresses could not be read ({error}).") from None


def _targets(registrations: Registrations) -> list[Target]:
    """What the record keeps of each registration: an address's instance too, to check before it is put back."""
    return [
        Target(arn, group.name, t.target_id, t.port, t.zone, None if t.address is None else t.instance_id)
        for arn, (group, targets) in registrations.items()
        for t in targets
    ]


def _ill_as_it_leaves(
    batch: Batch,
    registrations: Registrations,
    back_healthy: Set[GroupTarget],
    left_healthy: Set[GroupTarget],
    ill_before: Set[GroupTarget],
) -> tuple[dict[GroupTarget, str], list[tuple[TargetGroup, TargetState]]]:
    """The batch's targets unhealthy as it leaves (a wait that ends with them still so does not blame the
    release alone), and those unhealthy from before this deploy in groups not named (not waited for: warned)."""
    ill_at_start = {t: _ill_note(t, back_healthy, left_healthy) for t in _in_state(registrations, UNHEALTHY)}
    not_waited_for = _unhealthy_in_groups_not_named(registrations, ill_before, left_healthy)
    _warn_not_waited_for(batch, not_waited_for)
    return ill_at_start, not_waited_for


def _in_state(registrations: Registrations, wanted: str) -> set[GroupTarget]:
    """The targets in state ``wanted`` as last read (unhealthy before the batch leaves: what it did not cause)."""
    return {
        (arn, state.target_key)
        for arn, (_, targets) in registrations.items()
        for state in targets
        if state.state == wanted
    }


def _ill_note(target: GroupTarget, back_healthy: Set[GroupTarget], left_healthy: Set[GroupTarget]) -> str:
    """Why a target unhealthy as its batch leaves may not be the fault of the release going in."""
    if target in back_healthy:
        return ILL_SINCE_BACK
    return ILL_SINCE_LEFT if target in left_healthy else ILL_BEFORE


def _warn_not_waited_for(batch: Batch, unawaited: Sequence[tuple[TargetGroup, TargetState]]) -> None:
    for group, state in unawaited:
        when = "before anything of this deploy" if state.state == UNHEALTHY else "as it was before this deploy"
        log.warning(
            f"{batch}: {state.label} is {state.describe()} in {group.name}, which TARGET_GROUPS does not "
            f"name, {when}: drained from it and registered again, but not waited for there"
        )


def _unhealthy_in_groups_not_named(
    registrations: Registrations,
    ill_before: Set[GroupTarget] = frozenset(),
    left_healthy: Set[GroupTarget] = frozenset(),
) -> list[tuple[TargetGroup, TargetState]]:
    """The batch's targets already unhealthy, as last read, in groups TARGET_GROUPS does not name (with ``auto``:
    any group), whose instance has another registration that is waited for: what a release did not cause and a
    wait after its switch would blame it for. So are the targets of ``ill_before`` (found so earlier in this
    deploy) that are not healthy now: registered again by the pipe, they are ``initial`` until their checks fail
    again (the switch back of a batch deployed before a failed one). Never one of ``left_healthy`` (healthy when
    this deploy took it out: this deploy's release made it ill, and the switch back must cure it). A target in a
    named group is always waited for, and so is an instance's every target when none of them is waited for
    otherwise: each instance proves itself somewhere."""
    ill = [
        (group, state)
        for arn, (group, targets) in registrations.items()
        if not group.named
        for state in targets
        if (arn, state.target_key) not in left_healthy
        and (state.state == UNHEALTHY or (state.state != HEALTHY and (arn, state.target_key) in ill_before))
    ]
    skipped = {(group.arn, state.target_key) for group, state in ill}
    proven = {
        state.instance_id
        for arn, (_, targets) in registrations.items()
        for state in targets
        if (arn, state.target_key) not in skipped
    }
    return [(group, state) for group, state in ill if state.instance_id in proven]


def _without_targets(
    registrations: Registrations, unawaited: Sequence[tuple[TargetGroup, TargetState]]
) -> Registrations:
    skipped = {(group.arn, state.target_key) for group, state in unawaited}
    kept = {
        arn: (group, [t for t in targets if (arn, t.target_key) not in skipped])
        for arn, (group, targets) in registrations.items()
    }
    return {arn: (group, targets) for arn, (group, targets) in kept.items() if targets}


def _without(registrations: Registrations, gone: Mapping[str, str]) -> Registrations:
    """The registrations of the instances still there."""
    kept = {
        arn: (group, [t for t in targets if t.instance_id not in gone])
        for arn, (group, targets) in registrations.items()
    }
    return {arn: (group, targets) for arn, (group, targets) in kept.items() if targets}


def _states(pending: list[tuple[TargetGroup, TargetState]], ill: Mapping[GroupTarget, str] | None = None) -> str:
    """Each target with its state; ``ill``: those unhealthy before the batch was taken out, each with its note."""
    shown = "; ".join(
        f"{state.label} in {group.name}: {state.describe()}{(ill or {}).get((group.arn, state.target_key), '')}"
        for group, state in pending[:LISTED]
    )
    return shown + (f"; and {len(pending) - LISTED} more" if len(pending) > LISTED else "")


def _note_healthy(records: Sequence[BatchRecord], waited: float, left: float | None) -> None:
    """The batch's records: healthy after ``waited`` seconds (the first time), out of service since ``left``."""
    for record in records:
        if record.healthy is None:
            record.healthy = round(waited, 1)
        if left is not None:
            record.out_of_service_for(time.monotonic() - left)
