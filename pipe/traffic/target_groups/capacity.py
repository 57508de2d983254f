"""MIN_HEALTHY: how many healthy targets each target group keeps while a batch is out of it, checked
for every group the batch leaves (named in TARGET_GROUPS or not)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pipe.config.rollout import healthy_floor
from pipe.model import Batch
from pipe.traffic.target_groups.groups import HEALTHY, INITIAL, TargetGroup


def shortfall(groups: Sequence[TargetGroup], batch_ids: Sequence[str], min_healthy: str) -> str | None:
    """Why taking ``batch_ids`` out now would leave a group it leaves below MIN_HEALTHY (counting
    targets that are already unhealthy), or None when every such group keeps enough."""
    out = set(batch_ids)
    for group in groups:
        if not group.registrations(out):
            continue  # the batch is not in it: it loses nothing
        registered = group.registered
        floor = healthy_floor(min_healthy, len(registered))
        healthy = group.healthy
        left = len([t for t in healthy if t.instance_id not in out])
        if left < floor:
            taken = len(healthy) - left
            return (
                f"{group.name} has {len(healthy)} healthy of {len(registered)} registered target(s); taking "
                f"{taken} out would leave {left}, fewer than MIN_HEALTHY {min_healthy} ({floor})"
            )
    return None


def below_floor(groups: Sequence[TargetGroup], min_healthy: str) -> str | None:
    """Why the fleet is already below MIN_HEALTHY, before anything is taken out."""
    for group in groups:
        registered = group.registered
        floor = healthy_floor(min_healthy, len(registered))
        if len(group.healthy) < floor:
            unhealthy = [f"{t.label}: {t.describe()}" for t in registered if t.state != "healthy"][:5]
            return (
                f"{group.name} has only {len(group.healthy)} healthy of {len(registered)} registered target(s), "
                f"fewer than MIN_HEALTHY {min_healthy} ({floor}) before the deploy starts"
                + (f" ({'; '.join(unhealthy)})" if unhealthy else "")
            )
    return None


def impossible_batch(groups: Sequence[TargetGroup], batches: Sequence[Batch], min_healthy: str) -> str | None:
    """The first batch of the plan that cannot start without going below MIN_HEALTHY, with the
    targets' health as it is now (an unhealthy target counts against it): the plan is refused before
    anything is deregistered."""
    for batch in batches:
        problem = shortfall(groups, batch.instance_ids, min_healthy)
        if problem:
            largest = largest_batch(groups, min_healthy)
            return (
                f"{batch} cannot start: {problem}. With this fleet a batch may hold at most {largest} instance(s) "
                "of each group"
            )
    return None


def largest_batch(groups: Sequence[TargetGroup], min_healthy: str, among: Sequence[str] = ()) -> int:
    """The most instances a batch may take out of ``groups`` with their health as last read: the fewest
    healthy targets above MIN_HEALTHY's floor in any of them. With ``among`` (the instances the batches
    are made of, in any grouping): a group that holds no more of them than its room does not bound the
    batch, since no batch of them can take more of its targets out."""
    going = set(among)
    rooms = []
    for group in groups:
        room = len(group.healthy) - healthy_floor(min_healthy, len(group.registered))
        held = len(group.registrations(going))  # targets: an instance may be registered on several ports
        rooms.append(len(going) if going and held <= room else room)
    return min(rooms, default=0)


def once_checked(groups: Sequence[TargetGroup]) -> list[TargetGroup]:
    """``groups`` as they will be once their ``initial`` targets (registered a moment ago: by an operator, a
    group's scale-out, a deploy stopped after it registered its batch again) pass their first health checks:
    what the plan weighs MIN_HEALTHY against, since each batch waits for its capacity before it starts."""
    return [
        dataclasses.replace(
            group, targets=[dataclasses.replace(t, state=HEALTHY) if t.state == INITIAL else t for t in group.targets]
        )
        for group in groups
    ]


def still_checked(groups: Sequence[TargetGroup]) -> list[str]:
    """The ``initial`` targets of ``groups``, as ``<instance> (<group>)``."""
    return [f"{t.label} ({group.name})" for group in groups for t in group.targets if t.state == INITIAL]
