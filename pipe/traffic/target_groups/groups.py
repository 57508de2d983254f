"""Which ELBv2 target groups the instances are in, how each is set up, and their targets' health.

A batch leaves every target group it is registered in, whether TARGET_GROUPS names it or not: an
instance left in a group would take that group's requests while its app restarts. ELBv2 has no
look-up from an instance to its target groups (DescribeTargetGroups filters by load balancer, name
or ARN only), so the plan lists every target group of the Region (DescribeTargetGroups, PAGE_SIZE a
page) and reads the targets (DescribeTargetHealth) of each one that can send an instance requests:
target type ``instance`` or ``ip`` and used by a load balancer (a group no load balancer uses routes
nothing; its targets are ``unused``). An ``ip`` group's targets are addresses: they are matched to the
instances by every address EC2 gives each of them (``addresses.py``), asked only when such a group
exists. That is one DescribeTargetGroups per 400 groups of the Region and one
DescribeTargetHealth per such group, taken from ELBv2's Describe* token bucket (per account and
Region, shared with every other caller: 40 tokens, 10 back a second, "Request throttling for the
Elastic Load Balancing API"); the clients' adaptive retries slow down on ThrottlingException.

A target is an instance id or IP address and a port (RegisterTargets: "You can register each EC2
instance or IP address with the same target group multiple times using different ports"), and an IP
address also has the Availability Zone it takes requests from (TargetDescription: "An Availability Zone
or all", required for an address outside the group's VPC); the pipe deregisters and registers back
exactly the registrations it found, each with its Id, port and zone, and never adds one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipe.aws.errors import error_code, error_message, is_access_denied, permission_for
from pipe.config.rollout import TargetGroupChoice
from pipe.errors import NothingSent
from pipe.traffic.target_groups.addresses import Addresses

log = logging.getLogger("ssm-deploy")
PAGE_SIZE = 400  # DescribeTargetGroups' largest PageSize
DEFAULT_DEREGISTRATION_DELAY = 300  # deregistration_delay.timeout_seconds unless changed
HEALTHY, UNHEALTHY, DRAINING, UNUSED = "healthy", "unhealthy", "draining", "unused"
# registered, its first health checks not yet done (Elb.RegistrationInProgress, Elb.InitialHealthChecking)
INITIAL = "initial"
INSTANCE = "instance"  # TargetType of groups whose targets are instance ids
IP = "ip"  # TargetType of groups whose targets are IP addresses
ROUTED = (INSTANCE, IP)  # the target types by which an instance can be registered
# What each read is for, in the refusal when the deploy role may not make it
NEEDED_FOR = {
    "DescribeTargetGroups": "to list the Region's target groups and find every one the instances are registered in",
    "DescribeTargetHealth": "to find which target groups the instances are registered in, and their targets' health",
    "DescribeTargetGroupAttributes": "to read each target group's deregistration delay",
    "DescribeInstances": "to find the instances registered by IP address in the Region's target groups of type 'ip'",
}


@dataclass(frozen=True)
class TargetState:
    instance_id: str  # the instance: an instance target's Id, or the one whose address an ip target's Id is
    port: int | None
    state: str  # initial, healthy, unhealthy, unused, draining, unavailable
    reason: str = ""
    description: str = ""
    address: str | None = None  # an ip target's Id (None: registered by instance id)
    zone: str | None = None  # an ip target's AvailabilityZone, as ELBv2 reports it

    @property
    def target_id(self) -> str:
        """The Id it is registered by."""
        return self.instance_id if self.address is None else self.address

    @property
    def target(self) -> dict[str, Any]:
        """As RegisterTargets and DeregisterTargets take it: the Id, port and zone it was registered with."""
        return target_description(self.target_id, self.port, self.zone)

    @property
    def target_key(self) -> tuple[str, int | None]:
        return self.target_id, self.port

    @property
    def label(self) -> str:
        """The instance, and the address it is registered by when that is not its id."""
        return self.instance_id if self.target_id == self.instance_id else f"{self.instance_id} ({self.target_id})"

    def describe(self) -> str:
        why = f" ({self.reason}: {self.description})" if self.reason and self.description else ""
        return f"{self.state}{why}"


def target_description(target_id: str, port: int | None, zone: str | None) -> dict[str, Any]:
    """A TargetDescription (RegisterTargets, DeregisterTargets, DescribeTargetHealth): its Id, and its
    port and zone when it has them."""
    described: dict[str, Any] = {"Id": target_id}
    if port is not None:
        described["Port"] = port
    if zone is not None:
        described["AvailabilityZone"] = zone
    return described


@dataclass
class TargetGroup:
    arn: str
    name: str
    deregistration_delay: int = DEFAULT_DEREGISTRATION_DELAY
    targets: list[TargetState] = field(default_factory=list)  # every target, ours and others, when looked up
    named: bool = True  # named in TARGET_GROUPS (False: found because the instances are registered in it)
    in_use: bool = True  # some load balancer sends it requests
    addresses: Addresses | None = None  # target type ip: the instances by address (None: by instance id)
    vpc_id: str | None = None  # the VPC its targets are in (an ip target outside it: AvailabilityZone 'all')

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


@dataclass(frozen=True)
class Discovery:
    """The rollout's target groups, and what finding them took."""

    groups: list[TargetGroup]  # the named ones, then every other one the instances are registered in
    listed: int  # target groups of the Region
    read: int  # of them, whose targets were read


def find_target_groups(elbv2: Any, ec2: Any, choice: TargetGroupChoice, instance_ids: Sequence[str]) -> Discovery:
    """The target groups TARGET_GROUPS names and every other one in which one of the instances is
    registered (with ``auto``: only those), by instance id or by address, each with its deregistration
    delay and every target's health (with ``auto``, possibly none). Refused (NothingSent) when a named
    group does not exist or has neither instance nor IP targets, and when the deploy role may not list
    the groups, read one of them or, with an ``ip`` group, the instances' addresses: a group left unread
    could hold an instance that would then restart while in service."""
    ours = set(instance_ids)
    try:
        rows = every_target_group(elbv2)
        named = [] if choice.auto else _named(rows, choice.refs)
        named_arns = {row["TargetGroupArn"] for row in named}
        others = [row for row in rows if row["TargetGroupArn"] not in named_arns and _routes_to_instances(row)]
        addresses = Addresses()
        if any(row.get("TargetType") == IP for row in named + others):
            addresses.learn(ec2, instance_ids)
        groups, read = [], 0
        for row in named + others:
            group = _group(row, named=row["TargetGroupArn"] in named_arns, addresses=addresses)
            targets = _targets_unless_gone(elbv2, group)
            read += 1
            if targets is None:  # deleted since it was listed
                if group.named:
                    raise _not_found([group.name])
                continue
            group.targets = targets
            if group.named or group.registrations(ours):
                groups.append(group)
        for group in groups:
            group.deregistration_delay = _deregistration_delay(elbv2, group.arn)
    except ClientError as error:
        raise _refused(error) from None
    except BotoCoreError as error:
        raise NothingSent("TARGET_GROUPS", f"AWS could not be reached ({error})") from None
    return Discovery(groups, listed=len(rows), read=read)


def target_states(elbv2: Any, group: TargetGroup, targets: list[dict[str, Any]] | None = None) -> list[TargetState]:
    """DescribeTargetHealth: every target of the group, or the ``targets`` asked about (a target no
    longer registered is then ``unused``); an ip target is the instance with its address, if any."""
    request: dict[str, Any] = {"TargetGroupArn": group.arn}
    if targets:
        request["Targets"] = targets
    answer = elbv2.describe_target_health(**request)
    states = []
    for row in answer.get("TargetHealthDescriptions", []):
        target, health = row.get("Target", {}), row.get("TargetHealth", {})
        port, target_id = target.get("Port"), str(target.get("Id", ""))
        zone = target.get("AvailabilityZone")
        by_address = group.addresses is not None
        states.append(
            TargetState(
                instance_id=(group.addresses.owner(target_id, group.vpc_id, zone) if group.addresses else None)
                or target_id,
                port=int(port) if port is not None else None,
                state=str(health.get("State", "")),
                reason=str(health.get("Reason", "")),
                description=str(health.get("Description", "")),
                address=target_id if by_address else None,
                zone=str(zone) if by_address and zone else None,
            )
        )
    return states


def every_target_group(elbv2: Any) -> list[dict[str, Any]]:
    """DescribeTargetGroups of the whole Region, page after page."""
    rows: list[dict[str, Any]] = []
    for page in elbv2.get_paginator("describe_target_groups").paginate(PaginationConfig={"PageSize": PAGE_SIZE}):
        rows += page.get("TargetGroups", [])
    return rows


def _routes_to_instances(row: dict[str, Any]) -> bool:
    """Whether the group can send requests to an instance: its targets are instance ids or IP addresses
    and a load balancer uses it."""
    return row.get("TargetType", INSTANCE) in ROUTED and bool(row.get("LoadBalancerArns"))


def _group(row: dict[str, Any], named: bool, addresses: Addresses) -> TargetGroup:
    return TargetGroup(
        arn=row["TargetGroupArn"],
        name=row["TargetGroupName"],
        named=named,
        in_use=bool(row.get("LoadBalancerArns")),
        addresses=addresses if row.get("TargetType") == IP else None,
        vpc_id=str(row["VpcId"]) if row.get("VpcId") else None,
    )


def _named(rows: list[dict[str, Any]], refs: tuple[str, ...]) -> list[dict[str, Any]]:
    """The listed groups TARGET_GROUPS names, by name or ARN, in its order."""
    by_ref = {ref: row for row in rows for ref in (row["TargetGroupArn"], row["TargetGroupName"])}
    missing = [ref for ref in refs if ref not in by_ref]
    if missing:
        raise _not_found(missing)
    named = list({by_ref[ref]["TargetGroupArn"]: by_ref[ref] for ref in refs}.values())
    wrong_type = [row["TargetGroupName"] for row in named if row.get("TargetType", INSTANCE) not in ROUTED]
    if wrong_type:
        raise NothingSent(
            "TARGET_GROUPS",
            f"{', '.join(wrong_type)} register a Lambda function or a load balancer, not instances",
            "name target groups of target type 'instance' or 'ip'",
        )
    return named


def _not_found(refs: Sequence[str]) -> NothingSent:
    return NothingSent(
        "TARGET_GROUPS",
        f"there is no target group {', '.join(repr(ref) for ref in refs)} in this account and Region",
        "check the name or ARN (and AWS_DEFAULT_REGION), or use 'auto'",
    )


def _targets_unless_gone(elbv2: Any, group: TargetGroup) -> list[TargetState] | None:
    """Every target of the group; None when the group no longer exists."""
    try:
        return target_states(elbv2, group)
    except ClientError as error:
        if error_code(error) == "TargetGroupNotFound":
            return None
        raise


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
    action = permission_for(error.operation_name)
    service = action.partition(":")[0]
    if is_access_denied(error):
        why = NEEDED_FOR.get(error.operation_name, "")
        return NothingSent(
            "TARGET_GROUPS",
            f"the deploy role may not call {error.operation_name}"
            + (f", which the pipe needs {why}" if why else "")
            + f" ({error_message(error)})",
            f"allow {action} in the deploy role's policy (see the README's "
            + ("deploy role policy)" if service == "ec2" else "load balancer statements)"),
        )
    return NothingSent(
        "TARGET_GROUPS",
        f"{'EC2' if service == 'ec2' else 'Elastic Load Balancing'} refused {error.operation_name} "
        f"({error_code(error)}: {error_message(error)})",
    )
