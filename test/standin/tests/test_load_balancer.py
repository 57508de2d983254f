"""The stand-in's ELBv2 target health, through boto3 against the real HTTP endpoint, as AWS documents it
(see test/standin/load_balancer.py for the sources), with ELB's clock sped up."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from standin import StandIn
from standin.traffic import APP_DOWN

SCALE = 0.05  # a 5-s health-check interval lasts 0.25 s; a 20-s deregistration delay 1 s


@pytest.fixture
def elb(standin: StandIn) -> Iterator[Any]:
    saved = standin.elb_time_scale
    standin.elb_time_scale = SCALE
    yield standin.client("elbv2")
    standin.elb_time_scale = saved


def name() -> str:
    return f"tg-{uuid.uuid4().hex[:10]}"


def serving(standin: StandIn, count: int) -> list[str]:
    ids = standin.launch(count)
    for instance_id in ids:
        standin.app_up(instance_id)
    return ids


def health(elb: Any, arn: str, instance_id: str | None = None) -> dict[str, dict[str, Any]]:
    """Instance id -> TargetHealth, from DescribeTargetHealth (naming ``instance_id`` if given)."""
    extra = {"Targets": [{"Id": instance_id}]} if instance_id else {}
    rows = elb.describe_target_health(TargetGroupArn=arn, **extra)["TargetHealthDescriptions"]
    return {row["Target"]["Id"]: row["TargetHealth"] for row in rows}


def test_a_registered_target_is_initial_then_healthy_after_a_passing_check(standin: StandIn, elb: Any) -> None:
    ids = serving(standin, 2)
    arn = standin.create_target_group(name(), ids)

    first = health(elb, arn)
    standin.wait_target_states(arn, ids, "healthy", timeout=5)

    assert {i: h["State"] for i, h in first.items()} == dict.fromkeys(ids, "initial")
    assert {h["Reason"] for h in first.values()} == {"Elb.RegistrationInProgress"}
    assert health(elb, arn) == {i: {"State": "healthy"} for i in ids}  # no Reason when healthy


def test_a_target_whose_app_never_answers_becomes_unhealthy(standin: StandIn, elb: Any) -> None:
    (instance_id,) = standin.launch(1)
    arn = standin.create_target_group(name(), [instance_id], unhealthy_threshold=3)

    seen: set[tuple[str, str | None]] = set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and ("unhealthy", "Target.FailedHealthChecks") not in seen:
        row = health(elb, arn)[instance_id]
        seen.add((row["State"], row.get("Reason")))
        time.sleep(0.02)

    assert ("initial", "Elb.InitialHealthChecking") in seen  # failed checks, not yet the threshold
    assert ("unhealthy", "Target.FailedHealthChecks") in seen


def test_a_healthy_target_whose_app_stops_turns_unhealthy_then_healthy_when_it_answers_again(
    standin: StandIn, elb: Any
) -> None:
    (instance_id,) = serving(standin, 1)
    arn = standin.create_target_group(name(), [instance_id], healthy_threshold=3)
    standin.wait_target_states(arn, [instance_id], "healthy", timeout=5)

    standin.app_up(instance_id, up=False)
    standin.wait_target_states(arn, [instance_id], "unhealthy", timeout=5)
    standin.app_up(instance_id)
    back = time.monotonic()
    standin.wait_target_states(arn, [instance_id], "healthy", timeout=5)

    # three consecutive passes, one per interval, bring an unhealthy target back (HealthyThresholdCount)
    assert time.monotonic() - back >= 2 * 5 * SCALE


def test_a_deregistered_target_drains_for_the_delay_then_is_gone(standin: StandIn, elb: Any) -> None:
    ids = serving(standin, 2)
    arn = standin.create_target_group(name(), ids, deregistration_delay=20)
    standin.wait_target_states(arn, ids, "healthy", timeout=5)

    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": ids[0]}])
    draining = health(elb, arn)
    standin.wait_target_states(arn, ids[:1], "gone", timeout=5)

    assert draining[ids[0]] == {
        "State": "draining",
        "Reason": "Target.DeregistrationInProgress",
        "Description": "Target deregistration is in progress",
    }
    assert list(health(elb, arn)) == [ids[1]]
    assert health(elb, arn, ids[0])[ids[0]]["State"] == "unused"
    assert health(elb, arn, ids[0])[ids[0]]["Reason"] == "Target.NotRegistered"
    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": ids[0]}])  # not registered: no error


def test_the_group_reports_the_delay_aws_would_while_the_stand_in_waits_less(standin: StandIn, elb: Any) -> None:
    (instance_id,) = serving(standin, 1)
    arn = standin.create_target_group(name(), [instance_id], deregistration_delay=300, interval=10)

    attributes = {a["Key"]: a["Value"] for a in elb.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]}
    group = elb.describe_target_groups(TargetGroupArns=[arn])["TargetGroups"][0]

    assert attributes["deregistration_delay.timeout_seconds"] == "300"
    assert group["HealthCheckIntervalSeconds"] == 10


def test_registering_a_draining_target_again_puts_it_back_in_service(standin: StandIn, elb: Any) -> None:
    (instance_id,) = serving(standin, 1)
    arn = standin.create_target_group(name(), [instance_id], deregistration_delay=300)
    standin.wait_target_states(arn, [instance_id], "healthy", timeout=5)
    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": instance_id}])
    assert standin.target_states(arn) == {instance_id: "draining"}

    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": instance_id}])

    assert health(elb, arn) == {instance_id: {"State": "healthy"}}


def test_when_no_target_is_healthy_the_load_balancer_fails_open(standin: StandIn, elb: Any) -> None:
    ids = serving(standin, 3)
    arn = standin.create_target_group(name(), ids, deregistration_delay=300)
    standin.wait_target_states(arn, ids, "healthy", timeout=5)
    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": ids[2]}])
    for instance_id in ids:
        standin.app_up(instance_id, up=False)
    standin.wait_target_states(arn, ids[:2], "unhealthy", timeout=5)

    with standin.traffic(arn, seed=7) as traffic:
        time.sleep(0.6)

    assert sorted(standin.load_balancer.in_service(arn)) == sorted(ids[:2])  # every registered one, not draining
    assert set(traffic.per_instance) == set(ids[:2])
    assert traffic.failures and all(f.reason == APP_DOWN for f in traffic.failures)


def test_unknown_and_stopped_instances_are_invalid_targets(standin: StandIn, elb: Any) -> None:
    (instance_id,) = serving(standin, 1)
    arn = standin.create_target_group(name(), [])
    standin.client("ec2").stop_instances(InstanceIds=[instance_id])

    with pytest.raises(ClientError) as unknown:
        elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": "i-0123456789abcdef0"}])
    with pytest.raises(ClientError) as stopped:
        elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": instance_id}])
    with pytest.raises(ClientError) as unknown_deregistered:
        elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": "i-0123456789abcdef0"}])

    assert unknown.value.response["Error"]["Code"] == "InvalidTarget"
    assert stopped.value.response["Error"]["Code"] == "InvalidTarget"
    assert "not in a running state" in stopped.value.response["Error"]["Message"]
    assert unknown_deregistered.value.response["Error"]["Code"] == "InvalidTarget"


def test_target_groups_are_found_by_name_arn_or_load_balancer_and_page(standin: StandIn, elb: Any) -> None:
    balancer = f"lb-{uuid.uuid4().hex[:8]}"
    names = sorted(name() for _ in range(3))
    arns = [standin.create_target_group(n, [], load_balancer=balancer) for n in names]
    balancer_arn = elb.describe_load_balancers(Names=[balancer])["LoadBalancers"][0]["LoadBalancerArn"]

    pages = list(elb.get_paginator("describe_target_groups").paginate(LoadBalancerArn=balancer_arn, PageSize=2))
    by_name = elb.describe_target_groups(Names=[names[1]])["TargetGroups"]
    by_arn = elb.describe_target_groups(TargetGroupArns=[arns[2]])["TargetGroups"]

    assert [len(page["TargetGroups"]) for page in pages] == [2, 1]
    assert [g["TargetGroupArn"] for page in pages for g in page["TargetGroups"]] == arns
    assert [g["TargetGroupArn"] for g in by_name] == [arns[1]]
    assert [g["TargetGroupName"] for g in by_arn] == [names[2]]


def test_a_group_no_load_balancer_uses_checks_nothing(standin: StandIn, elb: Any) -> None:
    (instance_id,) = serving(standin, 1)
    vpc = standin.client("ec2").describe_vpcs()["Vpcs"][0]["VpcId"]
    arn = elb.create_target_group(Name=name(), Protocol="HTTP", Port=3000, VpcId=vpc, HealthCheckIntervalSeconds=5)[
        "TargetGroups"
    ][0]["TargetGroupArn"]
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": instance_id}])
    time.sleep(3 * 5 * SCALE)

    assert health(elb, arn)[instance_id]["Reason"] == "Target.NotInUse"
    assert health(elb, arn)[instance_id]["State"] == "unused"


def test_traffic_fails_when_a_healthy_instance_stops_answering(standin: StandIn, elb: Any) -> None:
    ids = serving(standin, 2)
    arn = standin.create_target_group(name(), ids)
    standin.wait_target_states(arn, ids, "healthy", timeout=5)

    with standin.traffic(arn, seed=1) as traffic:
        time.sleep(0.3)
        standin.app_up(ids[0], up=False)  # a restart without draining first
        standin.wait_target_states(arn, ids[:1], "unhealthy", timeout=5)
        standin.app_up(ids[0])
        standin.wait_target_states(arn, ids[:1], "healthy", timeout=5)
        time.sleep(0.3)

    assert traffic.failures
    assert {f.instance_id for f in traffic.failures} == {ids[0]}
    assert traffic.requests > len(traffic.failures)


def test_traffic_has_no_failures_when_the_instance_is_drained_first(standin: StandIn, elb: Any) -> None:
    ids = serving(standin, 2)
    arn = standin.create_target_group(name(), ids, deregistration_delay=10)
    standin.wait_target_states(arn, ids, "healthy", timeout=5)

    with standin.traffic(arn, seed=2) as traffic:
        time.sleep(0.3)
        elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": ids[0]}])
        standin.wait_target_states(arn, ids[:1], "gone", timeout=5)
        standin.app_up(ids[0], up=False)
        time.sleep(0.2)
        standin.app_up(ids[0])
        elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": ids[0]}])
        standin.wait_target_states(arn, ids, "healthy", timeout=5)
        time.sleep(0.3)

    assert traffic.failures == []
    assert traffic.per_instance[ids[0]] > 0 and traffic.per_instance[ids[1]] > 0
    assert traffic.requests == sum(traffic.per_instance.values())


def test_elb_and_cloudwatch_calls_are_counted_and_checked_against_iam(standin: StandIn, elb: Any) -> None:
    (instance_id,) = serving(standin, 1)
    arn = standin.create_target_group(name(), [instance_id])
    standin.create_alarm(f"alarm-{uuid.uuid4().hex[:6]}")
    actions = [
        "elasticloadbalancing:DescribeTargetGroups",
        "elasticloadbalancing:DescribeTargetGroupAttributes",
        "elasticloadbalancing:DescribeTargetHealth",
        "elasticloadbalancing:RegisterTargets",
        "elasticloadbalancing:DeregisterTargets",
        "cloudwatch:DescribeAlarms",
    ]
    suffix = uuid.uuid4().hex[:6]
    before = standin.calls_snapshot()
    with standin.iam_enforced():
        allowed = clients(standin, f"deployer-{suffix}", actions)
        denied = clients(standin, f"reader-{suffix}", ["elasticloadbalancing:DescribeTargetGroups"])
        allowed["elbv2"].describe_target_groups(TargetGroupArns=[arn])
        allowed["elbv2"].describe_target_group_attributes(TargetGroupArn=arn)
        allowed["elbv2"].describe_target_health(TargetGroupArn=arn)
        allowed["elbv2"].deregister_targets(TargetGroupArn=arn, Targets=[{"Id": instance_id}])
        allowed["elbv2"].register_targets(TargetGroupArn=arn, Targets=[{"Id": instance_id}])
        allowed["cloudwatch"].describe_alarms()
        with pytest.raises(ClientError) as refused_health:
            denied["elbv2"].describe_target_health(TargetGroupArn=arn)
        with pytest.raises(ClientError) as refused_alarms:
            denied["cloudwatch"].describe_alarms()
    calls = standin.calls_snapshot() - before

    assert refused_health.value.response["Error"]["Code"] == "AccessDenied"
    assert "cloudwatch:DescribeAlarms" in refused_alarms.value.response["Error"]["Message"]
    assert calls["elbv2:DescribeTargetHealth"] == 2
    assert calls["elbv2:RegisterTargets"] == 1
    assert calls["cloudwatch:DescribeAlarms"] == 2


def clients(standin: StandIn, user: str, actions: list[str]) -> dict[str, Any]:
    keys = standin.create_user(
        user, {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
    )
    return {
        service: boto3.client(service, endpoint_url=standin.endpoint, region_name=standin.region, **keys)  # type: ignore[call-overload]
        for service in ("elbv2", "cloudwatch")
    }
