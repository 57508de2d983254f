"""The deploy's instances by address, for target groups of target type ``ip``.

An ``ip`` group's target is an IP address, not an instance id (RegisterTargets: "If the target type is ip,
specify an IP address"), so an instance may be registered in it by any address it has: the private IPv4
addresses of each of its network interfaces (a secondary interface's and secondary addresses included),
their IPv6 addresses, and any address inside a prefix delegated to one of them (Ipv4Prefixes,
Ipv6Prefixes: the addresses of the containers or pods the interface serves). They come from
ec2:DescribeInstances, asked once per INSTANCE_FILTER_VALUES instances, and only when the Region has an
``ip`` group that a load balancer uses. Hybrid (``mi-``) nodes have no EC2 addresses and are not asked about.

A private address is unique only within its VPC: another VPC's task or instance may have the same
10.0.x.y. So a target whose AvailabilityZone is a zone is matched only to an address held in the group's
VPC (each network interface's VpcId against the group's). A target whose zone is ``all`` may be an address
outside the group's VPC (TargetDescription: "If the IP address is outside the VPC, this parameter is
required"; with an Application Load Balancer and cross-zone load balancing on, ``all``), reached through a
peered VPC, whose CIDRs cannot overlap the group's, or from on premises: it is matched by address alone,
in the group's VPC first. (An address outside the group's VPC registered with a zone, as an Application
Load Balancer with cross-zone load balancing off takes it, is not told apart from another VPC's address:
it is not matched; the README says so.)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipe.plan.resolve import HYBRID_PREFIX, described_instances

ANY_ZONE = "all"  # the AvailabilityZone of a target outside the group's VPC
RUNNING = "running"  # the only instance state RegisterTargets takes
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Held:
    """An address (a /32 or /128) or a delegated prefix one instance holds, and the VPC it is in."""

    instance_id: str
    vpc_id: str | None
    network: IPNetwork

    def reaches(self, group_vpc: str | None, zone: str | None) -> bool:
        """Whether a target of a group in ``group_vpc`` registered with ``zone`` can be this address: in the
        group's VPC for a zone, anywhere for ``all`` (or when a VPC is unknown)."""
        return zone == ANY_ZONE or group_vpc is None or self.vpc_id is None or self.vpc_id == group_vpc


@dataclass
class Addresses:
    """Which instance of the deploy holds each address, for the instances asked about so far."""

    exact: dict[IPAddress, list[Held]] = field(default_factory=dict)  # single addresses, looked up at once
    prefixes: list[Held] = field(default_factory=list)  # delegated prefixes, searched by containment
    states: dict[str, str] = field(default_factory=dict)  # instance id -> State.Name
    asked: set[str] = field(default_factory=set)

    def owner(self, target_id: str, group_vpc: str | None, zone: str | None) -> str | None:
        """The instance whose address ``target_id`` is, in a group of ``group_vpc`` registered with ``zone``,
        if one of those asked about holds it (several, with ``all``: the one in the group's VPC, else the
        first by id)."""
        found = [held for held in self.holders(target_id) if held.reaches(group_vpc, zone)]
        first = min(found, key=lambda held: (held.vpc_id != group_vpc, held.instance_id), default=None)
        return None if first is None else first.instance_id

    def holds(self, instance_id: str, target_id: str) -> bool:
        """Whether ``instance_id`` holds the address ``target_id`` now (as last asked)."""
        return any(held.instance_id == instance_id for held in self.holders(target_id))

    def state(self, instance_id: str) -> str | None:
        """Its State.Name as EC2 gave it (None: EC2 does not know it, e.g. terminated over an hour ago)."""
        return self.states.get(instance_id)

    def holders(self, target_id: str) -> list[Held]:
        try:
            address = ipaddress.ip_address(target_id)
        except ValueError:
            return []
        return self.exact.get(address, []) + [held for held in self.prefixes if address in held.network]

    def learn(self, ec2: Any, instance_ids: Iterable[str]) -> None:
        """Ask EC2 for the addresses of ``instance_ids`` not asked about yet; ClientError or BotoCoreError
        as botocore raises them (the caller names the refusal)."""
        new = sorted({i for i in instance_ids if not i.startswith(HYBRID_PREFIX)} - self.asked)
        for instance in described_instances(ec2, new):
            self.states[str(instance["InstanceId"])] = str(instance.get("State", {}).get("Name", RUNNING))
            for held in held_by(instance):
                if held.network.num_addresses == 1:
                    self.exact.setdefault(held.network.network_address, []).append(held)
                else:
                    self.prefixes.append(held)
        self.asked.update(new)


def held_by(instance: dict[str, Any]) -> set[Held]:
    """Every private IPv4 and IPv6 address and delegated prefix of a DescribeInstances row, on every network
    interface, each with its interface's VPC (the instance's when the interface does not say)."""
    instance_id, vpc = str(instance["InstanceId"]), instance.get("VpcId")
    found = {_held(instance_id, vpc, instance.get("PrivateIpAddress"))}
    for interface in instance.get("NetworkInterfaces", []):
        where = interface.get("VpcId") or vpc
        rows = [
            *interface.get("PrivateIpAddresses", []),
            *interface.get("Ipv6Addresses", []),
            *interface.get("Ipv4Prefixes", []),
            *interface.get("Ipv6Prefixes", []),
        ]
        keys = ("PrivateIpAddress", "Ipv6Address", "Ipv4Prefix", "Ipv6Prefix")
        found |= {_held(instance_id, where, row.get(key)) for row in rows for key in keys}
    return {held for held in found if held is not None}


def _held(instance_id: str, vpc: Any, text: Any) -> Held | None:
    if not text:
        return None
    try:
        network = ipaddress.ip_network(str(text), strict=False)
    except ValueError:
        return None
    return Held(instance_id, str(vpc) if vpc else None, network)
