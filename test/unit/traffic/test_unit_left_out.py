"""The record of what a deploy took out of service (``pipe/traffic/left_out.py``): read back as written,
readable by the pipe's previous version, small enough for a standard parameter with a large batch."""

from __future__ import annotations

import json
from typing import Any

from pipe.traffic.left_out import Target, decode, encode, unverified

ARN = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-api-prod-blue/0123456789abcdef"
# the longest a target group's ARN gets: a long Region, a 32-character name
LONGEST_ARN = "arn:aws:elasticloadbalancing:ap-southeast-2:123456789012:targetgroup/" + "n" * 32 + "/0123456789abcdef"
STANDARD_PARAMETER_MAX = 4096  # characters of a standard-tier Parameter Store value
BUILD = "https://bitbucket.org/acme/web-api/pipelines/results/12345"


def test_a_record_reads_back_as_written() -> None:
    targets = [
        Target(ARN, "web-api-prod-blue", "i-0123456789abcdef0", None),
        Target(ARN, "web-api-prod-blue", "i-1", 8080),
        Target(ARN + "-ip", "web-api-prod-ip", "10.0.1.12", 3000, "all", "i-0123456789abcdef0"),  # zone, instance
        Target(ARN + "-ip", "web-api-prod-ip", "2001:db8::12", 3000, None, "i-1"),  # an IPv6 address holds colons
    ]
    suspended = {"web-api-asg": ["AZRebalance", "HealthCheck"]}

    build, read, held = decode(encode("https://bitbucket.org/acme/web-api/pipelines/results/42", targets, suspended))

    assert build == "https://bitbucket.org/acme/web-api/pipelines/results/42"
    assert sorted(read, key=str) == sorted(targets, key=str)
    assert held == suspended


def _previous_decode(value: str) -> list[tuple[str, str, str, int | None]]:
    """The pipe's previous version's decode (before target groups of type ip), as it was."""
    record = json.loads(value)
    targets = []
    for arn, group in dict(record.get("groups", {})).items():
        for target in group["targets"]:
            instance, _, port = str(target).partition(":")
            targets.append((str(arn), str(group["name"]), instance, int(port) if port else None))
    return targets


def test_the_previous_version_reads_the_instance_targets_and_skips_the_addresses_it_never_drained() -> None:
    targets = [Target(ARN, "web", "i-1", 3000), Target(ARN + "-ip", "ecs", "10.0.1.12", 3000, "eu-west-1a", "i-1")]

    assert _previous_decode(encode(BUILD, targets, {})) == [(ARN, "web", "i-1", 3000)]


def test_a_record_of_the_first_ip_version_reads_as_addresses_without_their_instance() -> None:
    value = json.dumps(
        {"build": "7", "groups": {ARN: {"name": "ecs", "targets": ["10.0.1.12:3000", ["2001:db8::1", 80, "all"]]}}}
    )

    _, read, _ = decode(value)

    assert read == [Target(ARN, "ecs", "10.0.1.12", 3000), Target(ARN, "ecs", "2001:db8::1", 80, "all")]
    assert all(t.by_address and t.owner is None for t in read)


def test_a_batch_of_a_hundred_instances_in_two_groups_fits_a_standard_parameter() -> None:
    instances = [f"i-{n:017x}" for n in range(100)]
    targets = [
        Target(ARN + suffix, f"web-api-prod{suffix}", i, None) for suffix in ("", "-admin") for i in instances[:50]
    ]
    targets += [Target(ARN, "web-api-prod", i, None) for i in instances[50:]]
    value = encode(BUILD, targets, {"web-api-asg": ["HealthCheck"]})

    assert len(value) <= STANDARD_PARAMETER_MAX


def test_the_bounds_the_docstring_gives_fit_a_standard_parameter() -> None:
    """About 130 instances in one group, or 60 IPv4 addresses, at their longest."""
    instances = [f"i-{n:017x}" for n in range(130)]
    by_id = [Target(LONGEST_ARN, "n" * 32, i, 65535) for i in instances]
    by_address = [
        Target(LONGEST_ARN, "n" * 32, f"100.100.200.{n}", 65535, "ap-southeast-2a", i)
        for n, i in enumerate(instances[:60], 100)
    ]

    assert len(encode(BUILD, by_id, {})) <= STANDARD_PARAMETER_MAX
    assert len(encode(BUILD, by_address, {})) <= STANDARD_PARAMETER_MAX


class _EC2:
    """DescribeInstances of two instances: one running with 10.0.1.5, one terminated (no address)."""

    def get_paginator(self, name: str) -> _EC2:
        return self

    def paginate(self, Filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = [
            {"InstanceId": "i-1", "State": {"Name": "running"}, "VpcId": "vpc-1", "PrivateIpAddress": "10.0.1.5"},
            {"InstanceId": "i-2", "State": {"Name": "terminated"}},
        ]
        return [{"Reservations": [{"Instances": [r for r in rows if r["InstanceId"] in Filters[0]["Values"]]}]}]


def test_an_address_is_put_back_only_while_its_instance_runs_and_holds_it() -> None:
    """Found by review (H2): RegisterTargets takes any address, so the record's owner is checked first."""
    held = Target(ARN, "ecs", "10.0.1.5", 3000, "eu-west-1a", "i-1")
    dead = Target(ARN, "ecs", "10.0.1.6", 3000, "eu-west-1a", "i-2")
    moved = Target(ARN, "ecs", "10.0.1.7", 3000, "eu-west-1a", "i-1")  # i-1 no longer holds it
    unknown = Target(ARN, "ecs", "10.0.1.8", 3000)  # recorded by the first ip version, without its instance
    by_id = Target(ARN, "web", "i-2", 3000)  # RegisterTargets itself refuses a terminated instance's id

    assert unverified(_EC2(), [held, dead, moved, unknown, by_id]) == {
        dead: "its instance i-2 is terminated",
        moved: "its instance i-1 no longer holds that address",
        unknown: "recorded without its instance, which could not be checked",
    }
