"""The deploy's instances by address, for target groups of target type ``ip``.

An ``ip`` group's target is an IP address, not an instance id (RegisterTargets: "If the target type is ip,
specify an IP address"), so an instance may be registered in it by any address it has: the private IPv4
addresses of each of its network interfaces (a secondary interface's and secondary addresses included) and
their IPv6 addresses. They come from ec2:DescribeInstances, asked once per INSTANCE_FILTER_VALUES instances,
and only when the Region has an ``ip`` group that a load balancer uses. Hybrid (``mi-``) nodes have no EC2
addresses and are not asked about.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipe.plan.resolve import HYBRID_PREFIX, INSTANCE_FILTER_VALUES


@dataclass
class Addresses:
    """Which instance of the deploy has each address, for the instances asked about so far."""

    owners: dict[str, str] = field(default_factory=dict)  # canonical address -> instance id
    asked: set[str] = field(default_factory=set)

    def owner(self, target_id: str) -> str | None:
        """The instance whose address ``target_id`` is, if one of those asked about has it."""
        return self.owners.get(canonical(target_id))

    def learn(self, ec2: Any, instance_ids: Iterable[str]) -> None:
        """Ask EC2 for the addresses of ``instance_ids`` not asked about yet; ClientError or BotoCoreError
        as botocore raises them (the caller names the refusal)."""
        new = sorted({i for i in instance_ids if not i.startswith(HYBRID_PREFIX)} - self.asked)
        for start in range(0, len(new), INSTANCE_FILTER_VALUES):
            chunk = new[start : start + INSTANCE_FILTER_VALUES]
            pages = ec2.get_paginator("describe_instances").paginate(Filters=[{"Name": "instance-id", "Values": chunk}])
            for page in pages:
                for reservation in page.get("Reservations", []):
                    for instance in reservation.get("Instances", []):
                        for address in addresses_of(instance):
                            self.owners[canonical(address)] = str(instance["InstanceId"])
            self.asked.update(chunk)


def addresses_of(instance: dict[str, Any]) -> list[str]:
    """Every private IPv4 and IPv6 address of a DescribeInstances row, on every network interface."""
    rows = [instance]
    for interface in instance.get("NetworkInterfaces", []):
        rows += [*interface.get("PrivateIpAddresses", []), *interface.get("Ipv6Addresses", [])]
    return [str(row[key]) for row in rows for key in ("PrivateIpAddress", "Ipv6Address") if row.get(key)]


def canonical(address: str) -> str:
    """One spelling per address (IPv6 has several); anything else as it is."""
    try:
        return ipaddress.ip_address(address).compressed
    except ValueError:
        return address
