"""Target groups of target type ``ip``: their targets matched to the instances by every address EC2 gives
them, each kept as registered (Id, Port, AvailabilityZone), and a role that may not read the addresses
refused before anything is drained."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from pipe.config.rollout import TargetGroupChoice
from pipe.errors import NothingSent
from pipe.traffic.target_groups.groups import TargetState, find_target_groups
from pipe.traffic.target_groups.waits import deregister, register, register_command

WEB, ECS, PEER = "arn:tg/web", "arn:tg/ecs", "arn:tg/peer"
VPC, OTHER_VPC = "vpc-0000000000000000a", "vpc-0000000000000000b"
ONE, TWO, OTHER = "i-0000000000000000a", "i-0000000000000000b", "i-0000000000000000c"


class Pages:
    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self.pages = pages

    def paginate(self, **_: Any) -> list[dict[str, Any]]:
        return self.pages


class FakeELB:
    """An instance group holding ONE and an ``ip`` group holding TWO by a secondary interface's address,
    ONE by its IPv6 address (spelled long) from every zone, and an address of no instance of the deploy;
    an ``ip`` group of another VPC holding that VPC's own 10.0.2.7 and 10.0.3.20 (addresses ours have in our
    VPC) and, from every zone, 10.0.4.20 in the prefix of TWO's interface in a VPC peered with it."""

    def __init__(self) -> None:
        self.ip_group_used = True
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.targets = {
            WEB: [{"Id": ONE, "Port": 3000}],
            ECS: [
                {"Id": "10.0.2.7", "Port": 3000, "AvailabilityZone": "eu-west-1b"},
                {"Id": "2001:db8:0:0:0:0:0:1", "Port": 3000, "AvailabilityZone": "all"},
                {"Id": "10.0.9.9", "Port": 3000, "AvailabilityZone": "eu-west-1a"},
                {"Id": "10.0.3.20", "Port": 3000, "AvailabilityZone": "eu-west-1a"},  # in ONE's prefix
            ],
            PEER: [
                {"Id": "10.0.2.7", "Port": 3000, "AvailabilityZone": "eu-west-1a"},
                {"Id": "10.0.3.20", "Port": 3000, "AvailabilityZone": "eu-west-1a"},
                {"Id": "10.0.4.20", "Port": 3000, "AvailabilityZone": "all"},
            ],
        }

    @property
    def ip_users(self) -> list[str]:
        return ["lb2"] if self.ip_group_used else []

    def get_paginator(self, name: str) -> Pages:
        assert name == "describe_target_groups"
        rows = [
            {"TargetGroupArn": WEB, "TargetGroupName": "web", "TargetType": "instance", "LoadBalancerArns": ["lb"]},
            {"TargetGroupArn": ECS, "TargetGroupName": "ecs", "TargetType": "ip", "LoadBalancerArns": self.ip_users}
            | {"VpcId": VPC},
            {"TargetGroupArn": PEER, "TargetGroupName": "peer", "TargetType": "ip", "LoadBalancerArns": self.ip_users}
            | {"VpcId": OTHER_VPC},
            {"TargetGroupArn": "arn:tg/fn", "TargetGroupName": "fn", "TargetType": "lambda", "LoadBalancerArns": ["x"]},
        ]
        return Pages([{"TargetGroups": rows}])

    def describe_target_health(self, TargetGroupArn: str, Targets: Any = None) -> dict[str, Any]:
        rows = [{"Target": t, "TargetHealth": {"State": "healthy"}} for t in self.targets[TargetGroupArn]]
        return {"TargetHealthDescriptions": rows}

    def describe_target_group_attributes(self, TargetGroupArn: str) -> dict[str, Any]:
        return {"Attributes": []}

    def deregister_targets(self, **request: Any) -> None:
        self.calls.append(("deregister", request))

    def register_targets(self, **request: Any) -> None:
        self.calls.append(("register", request))


class FakeEC2:
    def __init__(self, denied: bool = False) -> None:
        self.denied = denied
        self.asked: list[list[str]] = []

    def get_paginator(self, name: str) -> Any:
        assert name == "describe_instances"
        fake = self

        class Instances:
            def paginate(self, Filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
                fake.asked.append(Filters[0]["Values"])
                if fake.denied:
                    error = {"Error": {"Code": "UnauthorizedOperation", "Message": "not authorized"}}
                    raise ClientError(error, "DescribeInstances")  # type: ignore[arg-type]
                return [{"Reservations": [{"Instances": [_instance(ONE, "10.0.1.5"), _instance(TWO, "10.0.1.6")]}]}]

        return Instances()


def _instance(instance_id: str, address: str) -> dict[str, Any]:
    interfaces: list[dict[str, Any]] = [
        {"VpcId": VPC, "PrivateIpAddresses": [{"PrivateIpAddress": address}], "Ipv6Addresses": []}
    ]
    if instance_id == ONE:  # an IPv6 address, and a prefix delegated to its interface (containers)
        interfaces[0]["Ipv6Addresses"] = [{"Ipv6Address": "2001:db8::1"}]
        interfaces[0]["Ipv4Prefixes"] = [{"Ipv4Prefix": "10.0.3.16/28"}]
    else:  # a secondary interface with a secondary address; one in another VPC with a prefix (multi-VPC ENI)
        secondary = [{"PrivateIpAddress": "10.0.2.6"}, {"PrivateIpAddress": "10.0.2.7"}]
        interfaces.append({"VpcId": VPC, "PrivateIpAddresses": secondary})
        interfaces.append({"VpcId": "vpc-0000000000000000c", "Ipv4Prefixes": [{"Ipv4Prefix": "10.0.4.16/28"}]})
    return {
        "InstanceId": instance_id,
        "VpcId": VPC,
        "State": {"Name": "running"},
        "PrivateIpAddress": address,
        "NetworkInterfaces": interfaces,
    }


def test_an_ip_groups_targets_are_the_instances_with_those_addresses_kept_as_registered() -> None:
    elb, ec2 = FakeELB(), FakeEC2()

    found = find_target_groups(elb, ec2, TargetGroupChoice(auto=True, refs=()), [ONE, TWO, "mi-0123456789abcdef0"])

    assert ec2.asked == [[ONE, TWO]]  # a hybrid node has no EC2 address
    web, ecs, peer = found.groups
    assert [(t.instance_id, t.target) for t in web.registrations({ONE, TWO})] == [(ONE, {"Id": ONE, "Port": 3000})]
    assert [(t.instance_id, t.target) for t in ecs.registrations({ONE, TWO})] == [
        (TWO, {"Id": "10.0.2.7", "Port": 3000, "AvailabilityZone": "eu-west-1b"}),
        (ONE, {"Id": "2001:db8:0:0:0:0:0:1", "Port": 3000, "AvailabilityZone": "all"}),
        (ONE, {"Id": "10.0.3.20", "Port": 3000, "AvailabilityZone": "eu-west-1a"}),  # inside its prefix
    ]
    assert len(ecs.healthy) == 4  # the address of no instance of the deploy counts for MIN_HEALTHY
    # another VPC's 10.0.2.7 and 10.0.3.20 are not ours; its 'all' target is TWO's peered interface's prefix
    assert [(t.instance_id, t.target_id) for t in peer.registrations({ONE, TWO})] == [(TWO, "10.0.4.20")]

    registrations = {ecs.arn: (ecs, ecs.registrations({TWO}))}
    deregister(elb, registrations)
    assert register(elb, registrations) == []
    expected = {"TargetGroupArn": ECS, "Targets": [{"Id": "10.0.2.7", "Port": 3000, "AvailabilityZone": "eu-west-1b"}]}
    assert elb.calls == [("deregister", expected), ("register", expected)]


def test_without_an_ip_group_behind_a_load_balancer_the_addresses_are_not_asked_for() -> None:
    elb, ec2 = FakeELB(), FakeEC2(denied=True)
    elb.ip_group_used = False

    found = find_target_groups(elb, ec2, TargetGroupChoice(auto=True, refs=()), [ONE])

    assert ec2.asked == [] and [g.name for g in found.groups] == ["web"]


def test_a_group_in_another_vpc_holding_our_addresses_there_is_not_left() -> None:
    """Found by review (H1): a task of another VPC at the 10.0.2.7 one of ours has in our VPC was taken for
    ours, and the group it is in was drained of it at each batch."""
    elb, ec2 = FakeELB(), FakeEC2()
    elb.targets[PEER] = [{"Id": "10.0.2.7", "Port": 3000, "AvailabilityZone": "eu-west-1a"}]

    found = find_target_groups(elb, ec2, TargetGroupChoice(auto=True, refs=()), [ONE, TWO])

    assert "peer" not in [g.name for g in found.groups]


def test_a_role_that_may_not_read_the_addresses_is_refused_naming_ec2_describe_instances() -> None:
    with pytest.raises(NothingSent) as refused:
        find_target_groups(FakeELB(), FakeEC2(denied=True), TargetGroupChoice(auto=True, refs=()), [ONE])

    message = str(refused.value)
    assert "may not call DescribeInstances" in message and "type 'ip'" in message
    assert "allow ec2:DescribeInstances" in message


def test_the_register_command_names_the_address_and_its_zone() -> None:
    target = TargetState(TWO, 3000, "unused", address="10.0.2.7", zone="all")
    assert register_command("arn:tg", [target]) == (
        "aws elbv2 register-targets --target-group-arn arn:tg --targets Id=10.0.2.7,Port=3000,AvailabilityZone=all"
    )
    assert target.label == f"{TWO} (10.0.2.7)"
