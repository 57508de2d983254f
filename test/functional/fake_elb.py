"""A fake ELBv2 client for in-process tests of the load balancer's stage: target groups whose targets
are (instance id, port) registrations, as the API reference describes them, with every call recorded
and any call refusable as a denial. A deregistered target is gone at once (no deregistration delay)
and a registered one is healthy at once: the waits end on their first read. Only the calls the pipe
makes are implemented."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

PAGE_SIZE_RANGE = (1, 400)  # DescribeTargetGroups PageSize
TargetKey = tuple[str, int]


@dataclass
class FakeGroup:
    name: str
    port: int = 3000
    target_type: str = "instance"
    load_balancers: int = 1  # how many load balancers use it (0: none)
    delay: int = 30  # deregistration_delay.timeout_seconds
    targets: dict[TargetKey, str] = field(default_factory=dict)  # (instance id, port) -> State

    @property
    def arn(self) -> str:
        return f"arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/{self.name}/0123456789abcdef"

    def row(self) -> dict[str, Any]:
        """As DescribeTargetGroups lists it (LoadBalancerArns left out when empty, as the XML is)."""
        row: dict[str, Any] = {
            "TargetGroupArn": self.arn,
            "TargetGroupName": self.name,
            "Port": self.port,
            "TargetType": self.target_type,
            "VpcId": "vpc-0123456789abcdef0",
        }
        if self.load_balancers:
            row["LoadBalancerArns"] = [f"arn:lb/{self.name}/{n}" for n in range(self.load_balancers)]
        return row


@dataclass
class Call:
    operation: str
    group: str  # the group's name ("" for DescribeTargetGroups)
    targets: list[TargetKey] = field(default_factory=list)
    page_size: int | None = None


class FakeELB:
    def __init__(self, *groups: FakeGroup) -> None:
        self.groups = {group.arn: group for group in groups}
        self.calls: list[Call] = []
        self.denied: set[tuple[str, str]] = set()  # (operation, group name or "*")

    # --- what tests read -------------------------------------------------------------------------------
    def group(self, name: str) -> FakeGroup:
        (found,) = [g for g in self.groups.values() if g.name == name]
        return found

    def made(self, operation: str, group: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.operation == operation and (group is None or c.group == group)]

    # --- the client ------------------------------------------------------------------------------------
    def get_paginator(self, operation: str) -> Any:
        assert operation == "describe_target_groups", operation
        return self

    def paginate(self, PaginationConfig: dict[str, int]) -> Iterator[dict[str, Any]]:
        size = PaginationConfig["PageSize"]
        rows = [group.row() for group in self.groups.values()]
        for start in range(0, max(len(rows), 1), size):
            self._call("DescribeTargetGroups", "", page_size=size)
            if not PAGE_SIZE_RANGE[0] <= size <= PAGE_SIZE_RANGE[1]:
                raise ClientError({"Error": {"Code": "ValidationError", "Message": "pageSize"}}, "DescribeTargetGroups")
            yield {"TargetGroups": rows[start : start + size]}

    def describe_target_groups(self, Names: list[str] = [], TargetGroupArns: list[str] = []) -> Any:  # noqa: B006
        """By name or ARN (the pipe lists them all with the paginator instead)."""
        self._call("DescribeTargetGroups", "")
        rows = [g.row() for g in self.groups.values() if g.name in Names or g.arn in TargetGroupArns]
        if len(rows) < len(Names) + len(TargetGroupArns):
            raise ClientError({"Error": {"Code": "TargetGroupNotFound", "Message": "?"}}, "DescribeTargetGroups")
        return {"TargetGroups": rows}

    def describe_target_health(self, TargetGroupArn: str, Targets: list[dict[str, Any]] | None = None) -> Any:
        group = self._group(TargetGroupArn)
        named = None if Targets is None else [self._key(group, t) for t in Targets]
        self._call("DescribeTargetHealth", group.name, named or [])
        keys = list(group.targets) if named is None else named
        rows = []
        for key in keys:
            state = group.targets.get(key, "unused")
            if group.load_balancers == 0 and key in group.targets:
                state = "unused"  # Target.NotInUse
            rows.append({"Target": {"Id": key[0], "Port": key[1]}, "TargetHealth": {"State": state}})
        return {"TargetHealthDescriptions": rows}

    def describe_target_group_attributes(self, TargetGroupArn: str) -> Any:
        group = self._group(TargetGroupArn)
        self._call("DescribeTargetGroupAttributes", group.name)
        return {"Attributes": [{"Key": "deregistration_delay.timeout_seconds", "Value": str(group.delay)}]}

    def deregister_targets(self, TargetGroupArn: str, Targets: list[dict[str, Any]]) -> Any:
        group = self._group(TargetGroupArn)
        keys = [self._key(group, t) for t in Targets]
        self._call("DeregisterTargets", group.name, keys)
        for key in keys:
            group.targets.pop(key, None)
        return {}

    def register_targets(self, TargetGroupArn: str, Targets: list[dict[str, Any]]) -> Any:
        group = self._group(TargetGroupArn)
        keys = [self._key(group, t) for t in Targets]
        self._call("RegisterTargets", group.name, keys)
        for key in keys:
            group.targets[key] = "healthy"
        return {}

    # --- inside ----------------------------------------------------------------------------------------
    def _group(self, arn: str) -> FakeGroup:
        if arn not in self.groups:
            raise ClientError({"Error": {"Code": "TargetGroupNotFound", "Message": arn}}, "DescribeTargetHealth")
        return self.groups[arn]

    @staticmethod
    def _key(group: FakeGroup, target: dict[str, Any]) -> TargetKey:
        """A TargetDescription's registration: no Port is the group's port."""
        return (str(target["Id"]), int(target.get("Port") or group.port))

    def _call(self, operation: str, group: str, targets: list[TargetKey] | None = None, **extra: Any) -> None:
        self.calls.append(Call(operation, group, list(targets or []), **extra))
        if (operation, group) in self.denied or (operation, "*") in self.denied:
            message = f"User is not authorized to perform: elasticloadbalancing:{operation}"
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": message}}, operation)
