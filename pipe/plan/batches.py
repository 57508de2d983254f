"""The batches of a deploy: one of every targeted instance (or of the TARGETS, which SSM resolves), or,
when the pipe drives the rollout, the canary and then BATCH_SIZE instances at a time; and their lines
in the plan."""

from __future__ import annotations

from pipe.config.rollout import LARGEST, batch_sizes
from pipe.config.settings import DeploySettings
from pipe.errors import NothingSent
from pipe.model import Batch


def plan_batches(settings: DeploySettings, targeted: list[str] | None, by_id: bool = False) -> list[Batch]:
    """One batch of every targeted instance (or of the TARGETS, which SSM resolves; ``by_id``: of the instances
    they matched, so that SSM targets no other, e.g. a stopped one SKIP_STOPPED leaves out); or, when the pipe
    drives the rollout, the canary and then BATCH_SIZE instances at a time."""
    rollout = settings.rollout
    if not rollout.pipe_driven:
        if by_id and targeted is not None:
            return [Batch(1, 1, instance_ids=tuple(targeted))]
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
    rollout, back = settings.rollout, switching_back(settings)
    if back is not None:  # no canary: going back to a release the ledger knows, staged first
        sizes = batch_sizes(len(instance_ids), None if back == LARGEST else back, None, one_at_a_time=False)
    else:
        sizes = batch_sizes(len(instance_ids), rollout.batch_size, rollout.canary, one_at_a_time)
    return sized(instance_ids, sizes)


def switching_back(settings: DeploySettings) -> str | None:
    """ROLLBACK_BATCH_SIZE when it sizes this deploy's batches: RELEASE (a release the ledger knows) in a
    rollout the pipe drives, staged first (STAGE_FIRST), so that each batch only switches. None otherwise:
    the deploy's own batches (without staging a batch would install in its window, more of them at once)."""
    release, rollout = settings.release, settings.rollout
    if release is None or release.release is None or not release.stage_first or not rollout.pipe_driven:
        return None
    return rollout.rollback_batch_size


def sized(instance_ids: list[str], sizes: list[int]) -> list[Batch]:
    """``instance_ids`` in order, cut into batches of ``sizes``."""
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
