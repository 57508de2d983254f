"""Planning the rollout behind ELBv2 target groups (TARGET_GROUPS): every group the instances are
registered in, named or not, with MIN_HEALTHY checked against the batches and the groups' health
now, the drain bound, and the plan's lines. Reads only; a refusal leaves nothing deregistered."""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipe.aws.clients import Clients
from pipe.config.lock import lock_name, lock_name_problem, lock_path
from pipe.config.rollout import DRAIN_MARGIN_SECONDS, LARGEST, batch_sizes
from pipe.config.settings import DeploySettings
from pipe.errors import NothingSent
from pipe.model import Batch
from pipe.plan.batches import batches_of, sized, switching_back
from pipe.plan.resolve import running_instances
from pipe.traffic import Planned
from pipe.traffic.left_out import Target, unverified, what_a_killed_deploy_left
from pipe.traffic.target_groups.capacity import (
    below_floor,
    impossible_batch,
    largest_batch,
    once_checked,
    still_checked,
)
from pipe.traffic.target_groups.groups import HEALTHY, Discovery, TargetGroup, TargetState, find_target_groups
from pipe.traffic.target_groups.hook import LoadBalancer

log = logging.getLogger("ssm-deploy")
DOMINANT_DELAY_SECONDS = 60  # a deregistration delay above this is named as what makes each batch slow


def plan_target_groups(settings: DeploySettings, clients: Clients, batches: list[Batch]) -> Planned | None:
    """The load balancer around each batch, or None without TARGET_GROUPS."""
    rollout = settings.rollout
    if rollout.target_groups is None:
        return None
    instance_ids = [i for batch in batches for i in batch.instance_ids]
    ours = set(instance_ids)
    found = find_target_groups(clients.elbv2, clients.ec2, rollout.target_groups, instance_ids)
    groups = found.groups
    if settings.dry_run and rollout.lock:
        _as_the_deploy_finds_them(clients, lock_name(settings.service, settings.environment), groups)
    elif not rollout.lock and not lock_name_problem(settings.service, settings.environment):
        _left_out_with_the_lock_off(clients, lock_path(settings.service, settings.environment))
    if not groups:  # 'auto' on instances in no target group: an environment without a load balancer
        log.info(
            f"TARGET_GROUPS 'auto': none of the {len(ours)} instance(s) is registered in an ELBv2 target group, so "
            "they are deployed without a load balancer (MIN_HEALTHY, DRAIN_TIMEOUT and HEALTHY_TIMEOUT do not apply)"
        )
        # the batches as they would be without TARGET_GROUPS: BATCH_SIZE and CANARY if given, else one
        return Planned(None, batches_of(settings, instance_ids, one_at_a_time=False))
    leaving = [group for group in groups if group.registrations(ours)]
    if switching_back(settings) == LARGEST:  # RELEASE after staging, ROLLBACK_BATCH_SIZE max
        largest = largest_batch(leaving, rollout.min_healthy, instance_ids)
        if largest > 0:
            batches = sized(instance_ids, batch_sizes(len(instance_ids), str(largest), None, one_at_a_time=False))
    _refuse_below_min_healthy(leaving, batches, rollout.min_healthy)
    delay = max(group.deregistration_delay for group in leaving or groups)
    drain_timeout = rollout.drain_timeout or delay + DRAIN_MARGIN_SECONDS
    if rollout.drain_timeout is not None and rollout.drain_timeout < delay:
        log.warning(
            f"DRAIN_TIMEOUT {rollout.drain_timeout} s is shorter than the deregistration delay ({delay} s), for "
            "which ELBv2 keeps a target draining: the first batch will fail before it is deployed."
        )
    outside = sorted(ours - {t.instance_id for g in groups for t in g.registrations(ours)})
    if outside:
        log.warning(
            f"{len(outside)} instance(s) are in none of the target groups and are deployed without draining: "
            + ", ".join(outside[:10])
            + (" ..." if len(outside) > 10 else "")
        )
    lines = _group_lines(found, ours, rollout.target_groups.auto)
    lines.append(
        f"  bounds:    drain {drain_timeout} s, healthy {rollout.healthy_timeout} s, MIN_HEALTHY {rollout.min_healthy}"
        + (f", bake {rollout.bake_time} s" if rollout.bake_time else "")
    )
    if delay > DOMINANT_DELAY_SECONDS:
        slow = [g.name for g in leaving if g.deregistration_delay == delay]
        lines.append(
            f"  note:      each batch waits {delay} s for the drain ({', '.join(slow)}: deregistration_delay."
            f"timeout_seconds); with {len(batches)} batch(es) that alone is {delay * len(batches)} s. Requests to a "
            "Node.js API rarely need that long: lower it on the target group to speed up deploys"
        )
    return Planned(LoadBalancer(groups, drain_timeout, rollout.healthy_timeout, rollout.min_healthy), batches, lines)


def _as_the_deploy_finds_them(clients: Clients, lock: str, groups: list[TargetGroup]) -> None:
    """A dry run after a killed build: the deploy that takes the lock registers again what the killed
    build took out before it reads the fleet, so the dry run's checks count those targets as back
    (healthy, as the deploy waits for them to be), and a line says so. An instance that is not running
    (terminated since) cannot be registered again (RegisterTargets: InvalidTarget), and an address whose
    instance no longer runs or holds it is not (``unverified``): it stays out, as the deploy leaves it,
    and the line names it."""
    left = what_a_killed_deploy_left(clients.ssm, lock)
    if left is None:
        return
    build, targets = left
    by_arn = {group.arn: group for group in groups}
    targets = [t for t in targets if t.arn in by_arn]
    by_id = [t.target_id for t in targets if not t.by_address]
    running = _running(clients.ec2, sorted(set(by_id)))
    not_back = unverified(clients.ec2, targets)
    back: list[str] = []
    stay_out: list[str] = []
    for target in targets:
        group = by_arn[target.arn]
        if any(t.target_key == (target.target_id, target.port) for t in group.registered):
            continue
        state = _recorded(group, target)
        if target in not_back:
            stay_out.append(f"{state.label} ({group.name}: {not_back[target]})")
            continue
        if running is not None and not target.by_address and target.target_id not in running:
            stay_out.append(f"{state.label} ({group.name}: no longer running)")
            continue
        group.targets = [t for t in group.targets if t.target_key != (target.target_id, target.port)]
        group.targets.append(state)
        back.append(f"{state.label} ({group.name})")
    if back:
        log.info(
            f"Build {build} took {', '.join(back)} out of service and never put them back ({lock}/out-of-service): "
            "the deploy registers them again before it reads the fleet, so this dry run counts them as healthy"
        )
    if stay_out:
        log.info(
            f"Build {build} also took {', '.join(stay_out)} out of service ({lock}/out-of-service): the deploy "
            "does not register them again, so this dry run counts them out, as the deploy will"
        )


def _recorded(group: TargetGroup, target: Target) -> TargetState:
    """A target of the record as it will be once registered again and healthy."""
    if not target.by_address:
        return TargetState(target.target_id, target.port, HEALTHY)
    owner = target.owner or (
        group.addresses.owner(target.target_id, group.vpc_id, target.zone) if group.addresses else None
    )
    return TargetState(owner or target.target_id, target.port, HEALTHY, address=target.target_id, zone=target.zone)


def _left_out_with_the_lock_off(clients: Clients, lock: str) -> None:
    """LOCK 'false': this deploy neither takes the lock nor puts back what a deploy holding it (killed, or
    running now) took out of service; the targets its record names stay out, and a warning says so."""
    left = what_a_killed_deploy_left(clients.ssm, lock)  # None without the record or the right to read it
    if left is None:
        return
    build, targets = left
    listed = ", ".join(f"{target.target_id} ({target.group})" for target in targets)
    log.warning(
        f"Build {build} took {listed} out of service and has not put them back ({lock}/out-of-service): with "
        "LOCK 'false' this deploy neither puts them back nor waits for them, so they stay out of service. If "
        f"build {build} was killed, run the deploy with LOCK 'true': it registers them again before anything else"
    )


def _running(ec2: Any, instance_ids: list[str]) -> set[str] | None:
    """Which of ``instance_ids`` are running (ec2:DescribeInstances, as the plan's TARGETS), None when it
    cannot be read (every target is then counted as back)."""
    try:
        return set(running_instances(ec2, [], set(instance_ids)))
    except (ClientError, BotoCoreError):
        return None


def _refuse_below_min_healthy(leaving: list[TargetGroup], batches: list[Batch], min_healthy: str) -> None:
    """MIN_HEALTHY must hold in every group the batches leave, before and while each batch is out."""
    if min_healthy != "0":
        _refuse_if_nothing_serves(leaving)
    problem = _short_of(leaving, batches, min_healthy)
    if problem is None:
        return
    if _short_of(once_checked(leaving), batches, min_healthy) is None:  # each batch waits for its capacity
        log.info(
            f"Target(s) still in their first health checks (initial): {', '.join(still_checked(leaving)[:10])}; "
            f"MIN_HEALTHY {min_healthy} holds once they pass, and each batch waits for them before it starts "
            "(up to HEALTHY_TIMEOUT)"
        )
        return
    raise NothingSent(
        "MIN_HEALTHY",
        problem,
        "lower BATCH_SIZE (or CANARY), add instances, or lower MIN_HEALTHY ('0' accepts downtime)",
    )


def _short_of(leaving: list[TargetGroup], batches: list[Batch], min_healthy: str) -> str | None:
    return below_floor(leaving, min_healthy) or impossible_batch(leaving, batches, min_healthy)


def _refuse_if_nothing_serves(leaving: list[TargetGroup]) -> None:
    """A group in which no target is healthy serves nothing yet (a service's first deploy, or one that
    is down): MIN_HEALTHY has no capacity to keep there, and only its one-off '0' lets the deploy start."""
    idle = [group for group in leaving if group.registered and not group.healthy]
    if not idle:
        return
    states = "; ".join(f"{t.label}: {t.describe()}" for g in idle for t in g.registered[:5])
    raise NothingSent(
        "MIN_HEALTHY",
        f"No target of {', '.join(g.name for g in idle)} is healthy ({states}): nothing serves through it yet, as "
        "before a service's first deploy (or while it is down), so there is no capacity for MIN_HEALTHY to keep",
        "deploy this once with MIN_HEALTHY: '0' (nothing is served, so nothing is lost; the instances are "
        "deployed one batch at a time all the same), then remove it",
    )


def _group_lines(found: Discovery, ours: set[str], auto: bool) -> list[str]:
    """One line per target group: its health, the instances of this deploy in it, its delay, and
    why it is in the plan when TARGET_GROUPS does not name it; then how they were found."""
    lines = []
    for group in found.groups:
        lines.append(
            f"  target group {group.name}: {len(group.healthy)} healthy of {len(group.registered)} registered, "
            f"{len(group.registrations(ours))} of them deployed here; deregistration delay "
            f"{group.deregistration_delay} s{_why_listed(group, auto)}"
        )
    lines.append(
        f"  found:     targets read in {found.read} of the Region's {found.listed} target group(s); "
        "each batch leaves every group it is registered in"
    )
    return lines


def _why_listed(group: TargetGroup, auto: bool) -> str:
    if not group.in_use:
        return " (no load balancer uses it: nothing to drain)"
    if not group.named and not auto:
        return " (not in TARGET_GROUPS: the instances are registered in it, so each batch leaves it too)"
    return ""
