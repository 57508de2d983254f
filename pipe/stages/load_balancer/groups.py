"""Which ELBv2 target groups the instances are in, how each is set up, and their targets' health.

ELBv2 has no look-up from an instance to its target groups: ``auto`` lists every target group of
the Region (DescribeTargetGroups, 400 per page) and asks each for its targets (DescribeTargetHealth).
A target is an instance id and a port; the pipe deregisters and registers back exactly the
registrations it found, never adds one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipe.aws.errors import error_code, error_message, is_access_denied
from pipe.config.rollout import TARGET_GROUP_ARN, TargetGroupChoice
from pipe.errors import NothingSent

log = logging.getLogger("ssm-deploy")
PAGE_SIZE = 400  # DescribeTargetGroups' largest PageSize
DEFAULT_DEREGISTRATION_DELAY = 300  # deregistration_delay.timeout_seconds unless changed
HEALTHY, DRAINING, UNUSED = "healthy", "draining", "unused"


@dataclass(frozen=True)
class TargetState:
    instance_id: str
    port: int | None
    state: str  # initial, healthy, unhealthy, unused, draining, unavailable
    reason: str = ""
    description: str = ""

    @property
    def target(self) -> dict[str, Any]:
        """As RegisterTargets and DeregisterTargets take it: the id and the port it was registered with."""
        return {"Id": self.instance_id} if self.port is None else {"Id": self.instance_id, "Port": self.port}

    def describe(self) -> str:
        why = f" ({self.reason}: {self.description})" if self.reason and self.description else ""
        return f"{self.state}{why}"


@dataclass
class TargetGroup:
    arn: str
    name: str
    deregistration_delay: int = DEFAULT_DEREGISTRATION_DELAY
    targets: list[TargetState] = field(default_factory=list)  # every target, ours and others, when looked up

    def registrations(self, instance_ids: set[str]) -> list[TargetState]:
        """Our instances' registrations in this group (an instance may be registered on several ports)."""
        return [t for t in self.registered if t.instance_id in instance_ids]

    @property
    def registered(self) -> list[TargetState]:
        """Targets that count for capacity: registered and not on their way out."""
        return [t for t in self.targets if t.state not in (DRAINING, UNUSED)]

    @property
    def healthy(self) -> list[TargetState]:
        return [t for t in self.targets if t.state == HEALTHY]


def find_target_groups(elbv2: Any, choice: TargetGroupChoice, instance_ids: list[str]) -> list[TargetGroup]:
    """The target groups TARGET_GROUPS names (or, with ``auto``, every group one of the instances is
    registered in), with their deregistration delay and every target's health."""
    try:
        groups = _all_instance_groups(elbv2) if choice.auto else _named_groups(elbv2, choice.refs)
        for group in groups:
            group.targets = target_states(elbv2, group.arn)
        ours = set(instance_ids)
        if choice.auto:
            groups = [group for group in groups if group.registrations(ours)]
            if not groups:
                raise NothingSent(
                    "TARGET_GROUPS",
                    f"'auto' found no ELBv2 target group in which any of the {len(ours)} instance(s) is registered",
                    "register them in their target group, or name the groups in TARGET_GROUPS",
                )
        for group in groups:
            group.deregistration_delay = _deregistration_delay(elbv2, group.arn)
    except ClientError as error:
        raise _refused(error) from None
    except BotoCoreError as error:
        raise NothingSent("TARGET_GROUPS", f"Elastic Load Balancing could not be reached ({error})") from None
    return groups


def target_states(elbv2: Any, group_arn: str, targets: list[dict[str, Any]] | None = None) -> list[TargetState]:
    """DescribeTargetHealth: every target of the group, or the ``targets`` asked about (a target no
    longer registered is then ``unused``)."""
    request: dict[str, Any] = {"TargetGroupArn": group_arn}
    if targets:
        request["Targets"] = targets
    answer = elbv2.describe_target_health(**request)
    states = []
    for row in answer.get("TargetHealthDescriptions", []):
        target, health = row.get("Target", {}), row.get("TargetHealth", {})
        port = target.get("Port")
        states.append(
            TargetState(
                instance_id=str(target.get("Id", "")),
                port=int(port) if port is not None else None,
                state=str(health.get("State", "")),
                reason=str(health.get("Reason", "")),
                description=str(health.get("Description", "")),
            )
        )
    return states


def _all_instance_groups(elbv2: Any) -> list[TargetGroup]:
    groups = []
    for page in elbv2.get_paginator("describe_target_groups").paginate(PaginationConfig={"PageSize": PAGE_SIZE}):
        for row in page.get("TargetGroups", []):
            if row.get("TargetType", "instance") == "instance":
                groups.append(TargetGroup(arn=row["TargetGroupArn"], name=row["TargetGroupName"]))
    return groups


def _named_groups(elbv2: Any, refs: tuple[str, ...]) -> list[TargetGroup]:
    arns = [ref for ref in refs if TARGET_GROUP_ARN.fullmatch(ref)]
    names = [ref for ref in refs if ref not in arns]
    rows: list[dict[str, Any]] = []
    for key, values in (("TargetGroupArns", arns), ("Names", names)):
        if not values:
            continue
        try:
            rows += elbv2.describe_target_groups(**{key: values}).get("TargetGroups", [])
        except ClientError as error:
            if error_code(error) != "TargetGroupNotFound":
                raise
            found = _one_by_one(elbv2, key, values)
            rows += found
    wrong_type = [row["TargetGroupName"] for row in rows if row.get("TargetType", "instance") != "instance"]
    if wrong_type:
        raise NothingSent(
            "TARGET_GROUPS",
            f"{', '.join(wrong_type)} register targets by IP address or Lambda, not by instance id",
            "name target groups of target type 'instance'",
        )
    return [TargetGroup(arn=row["TargetGroupArn"], name=row["TargetGroupName"]) for row in rows]


def _one_by_one(elbv2: Any, key: str, values: list[str]) -> list[dict[str, Any]]:
    """DescribeTargetGroups fails as a whole when one name is unknown: find which."""
    rows, missing = [], []
    for value in values:
        try:
            rows += elbv2.describe_target_groups(**{key: [value]}).get("TargetGroups", [])
        except ClientError as error:
            if error_code(error) != "TargetGroupNotFound":
                raise
            missing.append(value)
    if not missing:  # it appeared meanwhile
        return rows
    raise NothingSent(
        "TARGET_GROUPS",
        f"there is no target group {', '.join(repr(m) for m in missing)} in this account and Region",
        "check the name or ARN (and AWS_DEFAULT_REGION), or use 'auto'",
    )


def _deregistration_delay(elbv2: Any, group_arn: str) -> int:
    answer = elbv2.describe_target_group_attributes(TargetGroupArn=group_arn)
    for attribute in answer.get("Attributes", []):
        if attribute.get("Key") == "deregistration_delay.timeout_seconds":
            try:
                return int(attribute.get("Value", DEFAULT_DEREGISTRATION_DELAY))
            except ValueError:
                break
    return DEFAULT_DEREGISTRATION_DELAY


def _refused(error: ClientError) -> NothingSent:
    action = f"elasticloadbalancing:{error.operation_name}"
    if is_access_denied(error):
        return NothingSent(
            "TARGET_GROUPS",
            f"the deploy role may not call {error.operation_name} ({error_message(error)})",
            f"allow {action} in the deploy role's policy (see the README's load balancer statements)",
        )
    return NothingSent(
        "TARGET_GROUPS",
        f"Elastic Load Balancing refused {error.operation_name} ({error_code(error)}: {error_message(error)})",
    )
