"""How SendCommand ``Targets`` pick managed instances (no moto here: the bridge hands in readers).

Resolution, as "Run commands at scale" documents it, over the stand-in's *registered* managed
instances only (``Fleet``; an EC2 instance that was never registered has no SSM Agent, so no
target reaches it, whatever its tags):

* Every entry of ``Targets`` is a condition; an instance is targeted when it meets *all* of
  them (keys are AND'ed). Within one entry an instance needs to match *any* value (OR).
* ``tag:<Key>``: the instance has tag ``<Key>`` with one of the values (exact, case-sensitive).
* ``tag-key``: the instance has one of the listed tag keys, whatever its value.
* ``InstanceIds`` (any case, the user guide writes ``instanceids``): the instance is listed;
  the single value ``*`` means every managed instance.
* ``resource-groups:Name``: exactly one group name. The group's ``ResourceQuery`` must be of
  type ``TAG_FILTERS_1_0`` and its ``ResourceTypeFilters`` must admit EC2 instances
  (``AWS::EC2::Instance`` or ``AWS::AllSupported``); its ``TagFilters`` are applied the way
  Resource Groups applies them: every filter must match (AND), a filter matches when the tag
  has one of its values (OR), and a filter with no values matches any value of its key.
  A ``CLOUDFORMATION_STACK_1_0`` group selects no instance here (the stand-in has no stacks).
* ``resource-groups:ResourceTypeFilters``: keeps instances only when ``AWS::EC2::Instance``
  is among the values (on its own: every managed instance).

Tags are read from EC2 (moto) at SendCommand time, so ``create_tags`` after launch counts.
The result is in registration order (launch order), which is also the order in which a
rollout with a small ``MaxConcurrency`` starts the invocations. An empty result is not an
error: the command is created with no invocations and ends ``Failed`` / ``NoInstancesInTag``.
Malformed targets answer ``InvalidParameters`` (the code SendCommand documents for bad input).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_TARGETS = 5
MAX_VALUES = 50
INSTANCE_TYPES = {"AWS::EC2::Instance", "AWS::AllSupported"}

TagReader = Callable[[str], Mapping[str, str]]
GroupReader = Callable[[str], Mapping[str, Any] | None]


class TargetError(Exception):
    """Targets SendCommand refuses; ``code`` is the AWS error code."""

    def __init__(self, message: str, code: str = "InvalidParameters") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Directory:
    """What resolution reads: managed instances (in registration order), their EC2 tags, groups."""

    managed: Sequence[str]
    tags_of: TagReader
    group_query: GroupReader


Predicate = Callable[[str], bool]


def resolve(targets: Sequence[Mapping[str, Any]], directory: Directory) -> list[str]:
    """The managed instances the targets select, in registration order."""
    if len(targets) > MAX_TARGETS:
        raise TargetError(f"Targets can have at most {MAX_TARGETS} entries, got {len(targets)}.")
    predicates = [_predicate(target, directory) for target in targets]
    if not predicates:
        return []
    return [instance_id for instance_id in directory.managed if all(match(instance_id) for match in predicates)]


def _predicate(target: Mapping[str, Any], directory: Directory) -> Predicate:
    key = str(target.get("Key") or "")
    values = [str(value) for value in (target.get("Values") or [])]
    if not values:
        raise TargetError(f"Target {key or '<no key>'} has no values.")
    if len(values) > MAX_VALUES:
        raise TargetError(f"Target {key} has {len(values)} values; at most {MAX_VALUES} are allowed.")
    tags_of = directory.tags_of
    if key.startswith("tag:") and len(key) > len("tag:"):
        tag, wanted = key[len("tag:") :], set(values)
        return lambda instance_id: tags_of(instance_id).get(tag) in wanted
    if key == "tag-key":
        keys = set(values)
        return lambda instance_id: not keys.isdisjoint(tags_of(instance_id))
    if key.lower() == "instanceids":
        if values == ["*"]:
            return lambda instance_id: True
        listed = set(values)
        return lambda instance_id: instance_id in listed
    if key == "resource-groups:Name":
        if len(values) != 1:
            raise TargetError("Only one resource group name can be targeted per command.")
        return _group_predicate(values[0], directory)
    if key == "resource-groups:ResourceTypeFilters":
        admits = "AWS::EC2::Instance" in values
        return lambda instance_id: admits
    raise TargetError(
        f"Target key {key!r} is not supported: use tag:<key>, tag-key, InstanceIds, "
        "resource-groups:Name or resource-groups:ResourceTypeFilters."
    )


def _group_predicate(name: str, directory: Directory) -> Predicate:
    query = directory.group_query(name)
    if query is None:
        raise TargetError(f"Resource group {name} does not exist.")
    return group_matcher(query, directory.tags_of)


def group_matcher(query: Mapping[str, Any], tags_of: TagReader) -> Predicate:
    """Whether an EC2 instance belongs to a group with this ``ResourceQuery`` (see module doc)."""
    if query.get("Type") != "TAG_FILTERS_1_0":
        return lambda instance_id: False
    loaded = json.loads(str(query.get("Query") or "{}"))
    if not INSTANCE_TYPES.intersection(loaded.get("ResourceTypeFilters") or []):
        return lambda instance_id: False
    filters = [(str(f["Key"]), {str(v) for v in f.get("Values") or []}) for f in loaded.get("TagFilters") or []]

    def match(instance_id: str) -> bool:
        tags = tags_of(instance_id)
        return all(tag in tags and (not wanted or tags[tag] in wanted) for tag, wanted in filters)

    return match
