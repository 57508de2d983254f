"""TARGETS (tag and resource-group targets) and the rate controls MAX_CONCURRENCY / MAX_ERRORS."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipe.config.parsers import split_words

MAX_TARGETS = 5  # SendCommand Targets
MAX_TARGET_VALUES = 50  # Target.Values
INSTANCE_ID = re.compile(r"i-[0-9a-f]{8}|i-[0-9a-f]{17}|mi-[0-9a-f]{17}")
TAG_KEY = re.compile(r"[\w .:/=+\-@]{1,128}", re.ASCII)
RATE = re.compile(r"([0-9]{1,5})(%?)")
PLAIN_KEYS = ("tag-key", "resource-groups:Name", "resource-groups:ResourceTypeFilters", "InstanceIds")


@dataclass(frozen=True)
class Target:
    key: str
    values: tuple[str, ...]

    def to_api(self) -> dict[str, Any]:
        return {"Key": self.key, "Values": list(self.values)}

    def __str__(self) -> str:
        return f"{self.key}={','.join(self.values)}"


def parse_targets(text: str) -> list[Target]:
    """``tag:Service=api;tag:Env=prod`` (newlines also separate) -> SendCommand Targets."""
    targets: list[Target] = []
    for raw in re.split(r"[\n;]", text):
        entry = raw.strip()
        if not entry:
            continue
        key, sep, values_text = entry.partition("=")
        key = key.strip()
        values = [v for v in (part.strip() for part in values_text.split(",")) if v]
        if not sep or not values:
            raise ValueError(f"entry {entry!r} must be KEY=value[,value...], e.g. tag:Service=api")
        if key.startswith("tag:"):
            if not TAG_KEY.fullmatch(key[4:]):
                raise ValueError(f"{key!r} is not a valid tag key")
        elif key not in PLAIN_KEYS:
            raise ValueError(
                f"unknown target key {key!r}: use tag:<TagKey>, tag-key, resource-groups:Name or InstanceIds"
            )
        if key == "InstanceIds":
            values = [word for value in values for word in split_words(value)]
            bad = [value for value in values if not INSTANCE_ID.fullmatch(value)]
            if bad:
                raise ValueError(
                    f"InstanceIds: {', '.join(map(repr, bad))} not instance ids (i- and 8 or 17 hex digits)"
                )
        if len(values) > MAX_TARGET_VALUES:
            raise ValueError(f"{key} has {len(values)} values; SSM takes at most {MAX_TARGET_VALUES} per target")
        if any(target.key == key for target in targets):
            raise ValueError(f"{key} is given twice: put all its values in one entry, separated by commas")
        targets.append(Target(key, tuple(values)))
    if not targets:
        raise ValueError("is empty: give targets like tag:Service=api;tag:Env=prod")
    if len(targets) > MAX_TARGETS:
        raise ValueError(f"has {len(targets)} entries; SSM takes at most {MAX_TARGETS}")
    return targets


def parse_rate(text: str | None, *, minimum: int, default: str) -> str:
    """A count (``10``) or a percentage (``10%``) of the targets, as SendCommand takes them."""
    if text is None or not text.strip():
        return default
    match = RATE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"must be a number like 10 or a percentage like 10%, got {text!r}")
    number, percent = int(match.group(1)), match.group(2)
    if percent and not minimum <= number <= 100:
        raise ValueError(f"must be from {minimum}% to 100%, got {text.strip()}")
    if not percent and number < minimum:
        raise ValueError(f"must be at least {minimum}, got {number}")
    return f"{number}{percent}"
