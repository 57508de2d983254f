"""Planning a rollout over Auto Scaling groups (AUTO_SCALING_GROUPS): which instances are deployed by their
lifecycle state, the groups and what the rollout holds in them, the plan's lines. Reads only."""

from __future__ import annotations

import logging

from pipe.aws.clients import Clients
from pipe.config.settings import DeploySettings
from pipe.errors import NothingSent
from pipe.model import Batch
from pipe.traffic import Planned
from pipe.traffic.auto_scaling.groups import (
    DEPLOYED_STATES,
    LAUNCHING_STATES,
    LEAVING_STATES,
    VARIABLE,
    AutoScalingError,
    Group,
    group_names,
    memberships,
    read_groups,
)
from pipe.traffic.auto_scaling.hold import HELD_PROCESSES, ScalingHold
from pipe.traffic.auto_scaling.launch_bounds import launch_bound

log = logging.getLogger("ssm-deploy")
LISTED = 8
PERMISSION_FIX = (
    "allow autoscaling:DescribeAutoScalingInstances and autoscaling:DescribeAutoScalingGroups in the deploy "
    "role's policy (see the README's IAM section)"
)


def deployable(settings: DeploySettings, clients: Clients, instances: list[str] | None) -> list[str] | None:
    """The targeted instances without those their group is still launching or already removing (or
    keeps in its warm pool): each such instance is named with its state; none of them is a failure."""
    if settings.rollout.auto_scaling_groups is None or not instances:
        return instances
    try:
        found = memberships(clients.autoscaling, instances)
    except AutoScalingError as error:
        raise NothingSent(VARIABLE, str(error), PERMISSION_FIX) from None
    left_out: dict[str, list[str]] = {}
    for instance_id, (group, state) in found.items():
        if state not in DEPLOYED_STATES:
            left_out.setdefault(f"{_meaning(state)} ({group}: {state})", []).append(instance_id)
    for why, ids in left_out.items():
        log.info(f"Not deployed, {why}: {_listed(ids)}")
    kept = [i for i in instances if i not in {i for ids in left_out.values() for i in ids}]
    if not kept:
        raise NothingSent(
            VARIABLE,
            f"none of the {len(instances)} targeted instance(s) is InService or in Standby in its Auto Scaling group",
            "deploy once the group has instances in service",
        )
    return kept


def plan_auto_scaling(settings: DeploySettings, clients: Clients, batches: list[Batch]) -> Planned | None:
    """The groups held around the whole rollout, or None without AUTO_SCALING_GROUPS."""
    choice = settings.rollout.auto_scaling_groups
    if choice is None:
        return None
    instance_ids = [i for batch in batches for i in batch.instance_ids]
    try:
        names = group_names(clients.autoscaling, choice, instance_ids)
        groups = read_groups(clients.autoscaling, names) if names else {}
    except AutoScalingError as error:
        raise NothingSent(VARIABLE, str(error), PERMISSION_FIX) from None
    missing = [name for name in names if name not in groups]
    if missing:
        raise NothingSent(
            VARIABLE,
            f"no Auto Scaling group named {', '.join(missing)} in {settings.region}",
            "check the names (they are case-sensitive) and the Region, or use 'auto'",
        )
    if not groups:
        log.info(
            f"AUTO_SCALING_GROUPS 'auto': none of the {len(instance_ids)} instance(s) is in an Auto Scaling group, "
            "so no scaling is held"
        )
        return Planned(None, batches)
    ours = set(instance_ids)
    outside = sorted(ours - {i for g in groups.values() for i in g.instances})
    lines = [_group_line(group, ours) for group in groups.values()]
    if outside:
        lines.append(f"  outside:   {len(outside)} instance(s) in none of these groups: {_listed(outside)}")
    hold = ScalingHold(list(groups.values()), instance_ids, settings.rollout.min_healthy, launch_bound(settings))
    return Planned(None, batches, lines, scope=hold)


def _group_line(group: Group, ours: set[str]) -> str:
    held = [p for p in HELD_PROCESSES if p not in group.suspended]
    already = sorted(group.suspended)
    others = {i: s for i, s in group.instances.items() if i not in ours}
    line = (
        f"  auto scaling group {group.name}: {len(group.in_service)} InService (desired {group.desired}, min "
        f"{group.min_size}, max {group.max_size}), {len([i for i in group.instances if i in ours])} of them deployed "
        f"here; holds {', '.join(held) or 'nothing more'} for the rollout"
    )
    if already:
        line += f"; suspended before (left so): {', '.join(already)}"
    if others:
        line += f"; not deployed: {_listed([f'{i} ({s})' for i, s in others.items()])}"
    return line


def _meaning(state: str) -> str:
    if state in LAUNCHING_STATES:
        return "still being launched"
    if state in LEAVING_STATES:
        return "leaving its group"
    if state.startswith("Warmed:"):
        return "in its warm pool"
    return "not in service"


def _listed(items: list[str]) -> str:
    return ", ".join(items[:LISTED]) + (f" and {len(items) - LISTED} more" if len(items) > LISTED else "")
