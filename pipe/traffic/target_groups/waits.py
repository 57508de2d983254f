"""Deregister and register a batch's targets, and wait until ELBv2 reports them drained or healthy.

A deregistered target stays ``draining`` for the group's whole ``deregistration_delay.timeout_seconds``
(even once its connections are closed) and is then no longer registered: DescribeTargetHealth asked
about it answers ``unused``. A registered target is ``initial`` until it passes the group's health
check HealthyThresholdCount times in a row, then ``healthy``.

Every wait reads each group the batch is in once a poll (DescribeTargetHealth), so the polls are
spaced to stay within a share of ELBv2's Describe* refill rate, whatever the number of groups.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipe.aws.errors import error_code, error_message, is_access_denied, permission_for
from pipe.traffic.target_groups.groups import DRAINING, HEALTHY, UNUSED, TargetGroup, TargetState, target_states

log = logging.getLogger("ssm-deploy")
# Between two polls of the batch's targets while it drains or comes back (at least): the state turns
# when the delay ends or a health check passes, and the pipe sees it at the next poll, so every
# wait (two a batch, each batch out of service meanwhile) ends on average half a period late.
POLL_SECONDS = 0.5
# ELBv2's Describe* calls share a bucket per account and Region that refills at 10 tokens a second
# ("Request throttling for the Elastic Load Balancing API"); the polls take at most half of it.
DESCRIBE_CALLS_PER_SECOND = 5.0
Registrations = Mapping[str, tuple[TargetGroup, list[TargetState]]]  # by group ARN: the batch's targets there


class LoadBalancerError(Exception):
    """An ELBv2 call failed: the message names the call and, for a denial, the permission."""


class NotDeregistered(LoadBalancerError):
    """DeregisterTargets failed in one group; ``done`` holds the groups the batch did leave."""

    def __init__(self, message: str, done: Registrations) -> None:
        super().__init__(message)
        self.done = done


def poll_seconds(groups: int) -> float:
    """Seconds between two polls that read ``groups`` target groups each."""
    return max(POLL_SECONDS, groups / DESCRIBE_CALLS_PER_SECOND)


def deregister(elbv2: Any, registrations: Registrations) -> None:
    """DeregisterTargets in each group, one after the other; NotDeregistered, naming the group and
    holding the groups already done, when one fails."""
    done: dict[str, tuple[TargetGroup, list[TargetState]]] = {}
    for arn, (group, targets) in registrations.items():
        try:
            _call(elbv2.deregister_targets, TargetGroupArn=arn, Targets=[t.target for t in targets])
        except LoadBalancerError as error:
            raise NotDeregistered(f"{group.name}: {error}", done) from None
        done[arn] = (group, targets)
        log.debug(f"Deregistered {len(targets)} target(s) from {group.name}")


def register(elbv2: Any, registrations: Registrations) -> list[str]:
    """RegisterTargets in every group, whatever fails in one of them; returns the problems, each with
    the AWS CLI command that registers the targets by hand."""
    problems = []
    for arn, (group, targets) in registrations.items():
        try:
            _call(elbv2.register_targets, TargetGroupArn=arn, Targets=[t.target for t in targets])
        except LoadBalancerError as error:
            problems.append(
                f"{', '.join(t.label for t in targets)} not registered again in {group.name} "
                f"({error}); register them with: {register_command(arn, targets)}"
            )
    return problems


def register_command(arn: str, targets: Sequence[TargetState]) -> str:
    def one(target: TargetState) -> str:
        return ",".join(f"{key}={value}" for key, value in target.target.items())

    return f"aws elbv2 register-targets --target-group-arn {arn} --targets {' '.join(one(t) for t in targets)}"


def wait_for(
    elbv2: Any,
    registrations: Registrations,
    done: Callable[[TargetState], bool],
    bound: float,
    check_stop: Callable[[], None],
    left_the_fleet: Callable[[Sequence[str]], Mapping[str, str]] = lambda _: {},
) -> tuple[float, list[tuple[TargetGroup, TargetState]]]:
    """Poll the batch's targets until ``done`` holds for every one, or ``bound`` seconds passed;
    returns the seconds waited and the targets not done (empty on success). A target whose instance
    left the fleet on purpose (``left_the_fleet``: its Auto Scaling group terminated it) is no longer
    waited for: asked when a pending target turns ``draining`` or ``unused`` (what ELBv2 reports for an
    instance deregistered by its group or terminated, Target.InvalidState) and once more at the bound."""
    started = time.monotonic()
    gone: set[str] = set()
    while True:
        pending = []
        for group, targets in registrations.values():
            # an instance may be registered on several ports: each registration is waited for
            asked = [t.target for t in targets if t.instance_id not in gone]
            states = {s.target_key: s for s in read_states(elbv2, group, asked)} if asked else {}
            for target in targets:
                gone_state = dataclasses.replace(target, state=UNUSED, reason="", description="")
                state = states.get(target.target_key, gone_state)
                if target.instance_id not in gone and not done(state):
                    pending.append((group, state))
        waited = time.monotonic() - started
        leaving = [s.instance_id for _, s in pending if waited >= bound or s.state in (DRAINING, UNUSED)]
        if leaving:
            gone |= set(left_the_fleet(sorted(set(leaving))))
            pending = [(group, state) for group, state in pending if state.instance_id not in gone]
        if not pending or waited >= bound:
            return waited, pending
        check_stop()
        time.sleep(min(poll_seconds(len(registrations)), max(0.0, bound - waited)))
        check_stop()


def drained(state: TargetState) -> bool:
    """No longer registered: DescribeTargetHealth asked about it answers ``unused``
    (Target.NotRegistered), never ``draining`` or a health state."""
    return state.state == UNUSED


def healthy(state: TargetState) -> bool:
    return state.state == HEALTHY


def read_states(elbv2: Any, group: TargetGroup, targets: list[dict[str, Any]]) -> list[TargetState]:
    """DescribeTargetHealth of ``targets`` (every target when empty); LoadBalancerError when refused."""
    try:
        return target_states(elbv2, group, targets)
    except ClientError as error:
        raise LoadBalancerError(_explained("DescribeTargetHealth", error)) from None
    except BotoCoreError as error:
        raise LoadBalancerError(f"DescribeTargetHealth failed: {error}") from None


def _call(method: Callable[..., Any], **request: Any) -> None:
    operation = method.__name__.title().replace("_", "")
    try:
        method(**request)
    except ClientError as error:
        raise LoadBalancerError(_explained(operation, error)) from None
    except BotoCoreError as error:
        raise LoadBalancerError(f"{operation} failed: {error}") from None


def _explained(operation: str, error: ClientError) -> str:
    if is_access_denied(error):
        return f"the deploy role may not call {operation}: allow {permission_for(operation)} ({error_message(error)})"
    return f"{operation} refused: {error_code(error)}: {error_message(error)}"
