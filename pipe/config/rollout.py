"""The pipe-driven rollout's settings and pure arithmetic: target groups, batch sizes, the healthy floor,
alarm names, the lock switch. The stages that drain, deploy and gate use the same facts."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pipe.config.parsers import RATE, parse_rate, shown

AUTO = "auto"  # TARGET_GROUPS: no names, only the groups the instances are registered in; LOCK: on with TARGET_GROUPS
# ELBv2 target group names: 1-32 letters, digits and hyphens, not starting or ending with a hyphen
# (CreateTargetGroup, Name); ARNs: arn:<partition>:elasticloadbalancing:<region>:<account>:targetgroup/<name>/<id>
TARGET_GROUP_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?", re.ASCII)
TARGET_GROUP_ARN = re.compile(
    r"arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:\d{12}:targetgroup/"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?/[0-9a-f]{16}",
    re.ASCII,
)
# Auto Scaling group names: 1-255 characters (CreateAutoScalingGroup, AutoScalingGroupName); the pipe
# splits AUTO_SCALING_GROUPS on whitespace, so a name here holds none (a YAML list item may)
AUTO_SCALING_GROUP_NAME_MAX = 255
MAX_AUTO_SCALING_GROUPS = 20  # the pipe's own bound on the names given, as for target groups
MAX_TARGET_GROUPS = 20  # the pipe's own bound on the names given (the groups found registered are not bounded)
ALARM_NAME_MAX = 255  # CloudWatch AlarmName: 1-255 characters
MAX_ALARMS = 100  # DescribeAlarms takes at most 100 AlarmNames
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
DRAIN_TIMEOUT_RANGE = (1, 3600 + 600)  # deregistration_delay.timeout_seconds is 0-3600
HEALTHY_TIMEOUT_RANGE = (1, 3600)
DEFAULT_HEALTHY_TIMEOUT = 300
BAKE_TIME_RANGE = (0, 86400)
CANARY_RANGE = (1, 10000)
DEFAULT_MIN_HEALTHY = "1"  # a batch never takes the last healthy target of a group out
DRAIN_MARGIN_SECONDS = 30  # DRAIN_TIMEOUT's default: the longest deregistration delay plus this
LARGEST = "max"  # ROLLBACK_BATCH_SIZE: the largest batches MIN_HEALTHY allows


@dataclass(frozen=True)
class TargetGroupChoice:
    """TARGET_GROUPS: ``auto``, or names and ARNs as given."""

    auto: bool = False
    refs: tuple[str, ...] = ()

    def __str__(self) -> str:
        return AUTO if self.auto else " ".join(self.refs)


@dataclass(frozen=True)
class AutoScalingChoice:
    """AUTO_SCALING_GROUPS: ``auto`` (the groups the targeted instances belong to), or names as given."""

    auto: bool = False
    names: tuple[str, ...] = ()

    def __str__(self) -> str:
        return AUTO if self.auto else " ".join(self.names)


@dataclass(frozen=True)
class RolloutSettings:
    """How the pipe paces the deploy itself: batches, the load balancer around each, the gates after."""

    target_groups: TargetGroupChoice | None = None
    auto_scaling_groups: AutoScalingChoice | None = None
    batch_size: str | None = None  # a count or a percentage; None: one batch (or one at a time behind a load balancer)
    # going back (the automatic rollback, RELEASE after staging): a count, a percentage or LARGEST; None: the deploy's
    rollback_batch_size: str | None = None
    canary: int | None = None
    min_healthy: str = DEFAULT_MIN_HEALTHY
    drain_timeout: int | None = None  # None: the longest deregistration delay + DRAIN_MARGIN_SECONDS
    healthy_timeout: int = DEFAULT_HEALTHY_TIMEOUT
    bake_time: int = 0
    alarms: tuple[str, ...] = ()
    lock: bool = False
    # MIN_HEALTHY, DRAIN_TIMEOUT, HEALTHY_TIMEOUT given without TARGET_GROUPS: ignored, and said so
    ignored: tuple[str, ...] = ()

    @property
    def pipe_driven(self) -> bool:
        """Whether the pipe sends one command per batch itself (rather than one command SSM paces)."""
        return (
            self.target_groups is not None
            or self.auto_scaling_groups is not None
            or self.batch_size is not None
            or self.canary is not None
            or bool(self.bake_time)
            or bool(self.alarms)
        )


def parse_target_groups(words: list[str]) -> TargetGroupChoice:
    if [word.lower() for word in words] == [AUTO]:
        return TargetGroupChoice(auto=True)
    problems = []
    if AUTO in (word.lower() for word in words):
        problems.append(f"'{AUTO}' stands alone: give it, or target group names and ARNs")
    bad = [word for word in words if word.lower() != AUTO and not _target_group_ref(word)]
    if bad:
        problems.append(
            f"{', '.join(shown(word) for word in bad[:5])} is not a target group name (1-32 letters, digits, "
            "hyphens) or ARN (arn:aws:elasticloadbalancing:<region>:<account>:targetgroup/<name>/<id>)"
        )
    unique = tuple(dict.fromkeys(words))
    if len(unique) > MAX_TARGET_GROUPS:
        problems.append(f"at most {MAX_TARGET_GROUPS} target groups, got {len(unique)}")
    if problems:
        raise ValueError("; ".join(problems))
    return TargetGroupChoice(refs=unique)


def parse_auto_scaling_groups(names: list[str]) -> AutoScalingChoice:
    if [name.lower() for name in names] == [AUTO]:
        return AutoScalingChoice(auto=True)
    problems = []
    if AUTO in (name.lower() for name in names):
        problems.append(f"'{AUTO}' stands alone: give it, or Auto Scaling group names")
    bad = [name for name in names if _CONTROL.search(name) or len(name) > AUTO_SCALING_GROUP_NAME_MAX]
    if bad:
        problems.append(
            f"{', '.join(shown(name) for name in bad[:5])} is not an Auto Scaling group name (1-"
            f"{AUTO_SCALING_GROUP_NAME_MAX} characters, no control characters)"
        )
    unique = tuple(dict.fromkeys(names))
    if len(unique) > MAX_AUTO_SCALING_GROUPS:
        problems.append(f"at most {MAX_AUTO_SCALING_GROUPS} Auto Scaling groups, got {len(unique)}")
    if problems:
        raise ValueError("; ".join(problems))
    return AutoScalingChoice(names=unique)


def _target_group_ref(word: str) -> bool:
    return bool(TARGET_GROUP_NAME.fullmatch(word) or TARGET_GROUP_ARN.fullmatch(word))


def parse_alarm_names(names: list[str]) -> tuple[str, ...]:
    problems = []
    for name in names:
        if _CONTROL.search(name):
            problems.append(f"alarm name {shown(name)} holds a control character")
        elif len(name) > ALARM_NAME_MAX:
            problems.append(f"an alarm name has at most {ALARM_NAME_MAX} characters, got {len(name)}")
    unique = tuple(dict.fromkeys(names))
    if len(unique) > MAX_ALARMS:
        problems.append(f"at most {MAX_ALARMS} alarms, got {len(unique)}")
    if problems:
        raise ValueError("; ".join(problems))
    return unique


def count_of(rate: str, total: int) -> int:
    """``10`` or ``10%`` of ``total`` as a count of instances: a percentage rounds up (``25%`` of 6 is 2),
    as SSM rounds MaxConcurrency; never below 1 when total > 0 and the rate is not 0."""
    match = RATE.fullmatch(rate.strip())
    if not match:
        raise ValueError(f"not a rate: {rate!r}")
    number, percent = int(match.group(1)), match.group(2)
    if percent:
        return min(total, math.ceil(total * number / 100))
    return min(total, number)


def batch_sizes(total: int, batch_size: str | None, canary: int | None, one_at_a_time: bool) -> list[int]:
    """How many instances each batch holds: the canary first, then BATCH_SIZE of the whole fleet at a
    time (the last batch takes the rest). Without BATCH_SIZE: everything in one batch, or one
    instance at a time behind a load balancer (``one_at_a_time``)."""
    if total <= 0:
        return []
    sizes: list[int] = []
    left = total
    if canary:
        sizes.append(min(canary, left))
        left -= sizes[0]
    step = left  # one batch
    if batch_size is not None:
        step = max(1, count_of(batch_size, total))
    elif one_at_a_time:
        step = 1
    while left > 0:
        sizes.append(min(step, left))
        left -= sizes[-1]
    return sizes


def parse_rollback_batch_size(text: str) -> str | None:
    """ROLLBACK_BATCH_SIZE: LARGEST, a count or a percentage; None when not given."""
    if not text.strip():
        return None
    if text.strip().lower() == LARGEST:
        return LARGEST
    return parse_rate(text, minimum=1)


def rollback_size(rollback_batch_size: str, total: int, room: int | None) -> int:
    """How many instances one batch going back may hold: ROLLBACK_BATCH_SIZE of ``total``, or with LARGEST
    the ``room`` MIN_HEALTHY leaves (every one of them without a bound); at least 1."""
    if rollback_batch_size == LARGEST:
        return max(1, total if room is None else room)
    return max(1, count_of(rollback_batch_size, total))


def healthy_floor(min_healthy: str, registered: int) -> int:
    """MIN_HEALTHY as a number of healthy targets a group must keep, of ``registered`` targets."""
    return count_of(min_healthy, registered) if registered else 0
