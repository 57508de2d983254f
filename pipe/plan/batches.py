"""The batches of a deploy: one of every targeted instance (or of the TARGETS, which SSM resolves), or,
when the pipe drives the rollout, the canary and then BATCH_SIZE instances at a time; and their lines
in the plan."""

from __future__ import annotations

from pipe.config.rollout import batch_sizes
from pipe.config.settings import DeploySettings
from pipe.errors import NothingSent
from pipe.model import Batch


def plan_batches(settings: DeploySettings, targeted: list[str] | None) -> list[Batch]:
    """One batch of every targeted instance (or of the TARGETS, which SSM resolves); or, when the pipe
    drives the rollout, the canary and then BATCH_SIZE instances at a time."""
    rollout = settings.rollout
    if not rollout.pipe_driven:
        if settings.targets:
            return [Batch(1, 1, targets=tuple(settings.targets))]
        return [Batch(1, 1, instance_ids=tuple(settings.instance_ids))]
    if targeted is None:
        raise NothingSent(
            "TARGETS",
            "the pipe rolls out batch by batch here (TARGET_GROUPS, BATCH_SIZE, CANARY, BAKE_TIME or ALARMS), so it "
            "must know the instances before sending, but TARGETS could not be resolved",
            "allow ec2:DescribeInstances in the deploy role's policy, or give INSTANCE_IDS",
        )
    return batches_of(settings, targeted, one_at_a_time=rollout.target_groups is not None)


def batches_of(settings: DeploySettings, instance_ids: list[str], one_at_a_time: bool) -> list[Batch]:
    rollout = settings.rollout
    sizes = batch_sizes(len(instance_ids), rollout.batch_size, rollout.canary, one_at_a_time)
    batches, start = [], 0
    for number, size in enumerate(sizes, 1):
        batches.append(Batch(number, len(sizes), tuple(instance_ids[start : start + size])))
        start += size
    return batches


def batch_lines(batches: list[Batch]) -> list[str]:
    if len(batches) <= 1 and not (batches and batches[0].instance_ids):
        return []
    lines = [f"  batches:   {len(batches)}, one command each, sent when the one before passed every gate"]
    for batch in batches:
        shown = ", ".join(batch.instance_ids[:8]) + (" ..." if len(batch.instance_ids) > 8 else "")
        lines.append(f"    {batch}: {shown}")
    return lines
