"""pipe.plan.resolve with stubbed EC2, SSM and Resource Groups clients: which nodes TARGETS select.

EC2 knows EC2 instances only; hybrid (mi-) nodes are known to SSM alone, which DescribeInstanceInformation
lists with ``tag:<key>`` / ``tag-key`` filters (never combined with other filter types)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from pipe.model import Target
from pipe.plan.resolve import no_longer_targeted, resolve_targets, running_instances
from unit.unit_support import INSTANCE_A, INSTANCE_B, REGION

HYBRID = "mi-0123456789abcdef0"
OTHER_HYBRID = "mi-0fedcba9876543210"
RUNNING = {"Name": "instance-state-name", "Values": ["running"]}


@lru_cache(maxsize=1)
def _session() -> boto3.session.Session:  # one session: its loader reads each service model once
    return boto3.session.Session(
        aws_access_key_id="AKIAUNITTESTEXAMPLE", aws_secret_access_key="unit-test-secret-key", region_name=REGION
    )


def client(service: str) -> Any:
    return _session().client(service, region_name=REGION)  # type: ignore[call-overload]


@pytest.fixture
def clients() -> Iterator[tuple[Any, Stubber, Any, Stubber, Any]]:
    ec2, ssm, groups = client("ec2"), client("ssm"), client("resource-groups")
    with Stubber(ec2) as ec2_stub, Stubber(ssm) as ssm_stub:
        yield ec2, ec2_stub, ssm, ssm_stub, groups
        ec2_stub.assert_no_pending_responses()
        ssm_stub.assert_no_pending_responses()


def ec2_found(*ids: str) -> dict[str, Any]:
    return {"Reservations": [{"Instances": [{"InstanceId": i} for i in ids]}]}


def ssm_found(*ids: str) -> dict[str, Any]:
    rows = [{"InstanceId": i, "ResourceType": "ManagedInstance" if i.startswith("mi-") else "EC2Instance"} for i in ids]
    return {"InstanceInformationList": rows}


def test_tag_targets_select_ec2_instances_and_hybrid_nodes(clients: tuple[Any, Stubber, Any, Stubber, Any]) -> None:
    ec2, ec2_stub, ssm, ssm_stub, groups = clients
    ec2_stub.add_response(
        "describe_instances", ec2_found(INSTANCE_A), {"Filters": [RUNNING, {"Name": "tag:Service", "Values": ["api"]}]}
    )
    ssm_stub.add_response(
        "describe_instance_information",
        ssm_found(INSTANCE_A, HYBRID),  # SSM lists the EC2 instance too: EC2 says whether it runs
        {"Filters": [{"Key": "tag:Service", "Values": ["api"]}]},
    )
    assert resolve_targets(ec2, groups, [Target("tag:Service", ("api",))], ssm) == [INSTANCE_A, HYBRID]


def test_listed_hybrid_nodes_need_no_lookup(clients: tuple[Any, Stubber, Any, Stubber, Any]) -> None:
    ec2, _, ssm, _, groups = clients  # nothing stubbed: any call would fail
    assert resolve_targets(ec2, groups, [Target("InstanceIds", (HYBRID, OTHER_HYBRID))], ssm) == [HYBRID, OTHER_HYBRID]


def test_listed_hybrid_nodes_and_a_tag_are_intersected(clients: tuple[Any, Stubber, Any, Stubber, Any]) -> None:
    ec2, ec2_stub, ssm, ssm_stub, groups = clients
    tag = {"Name": "tag:Env", "Values": ["prod"]}
    ec2_stub.add_response(
        "describe_instances", ec2_found(), {"Filters": [RUNNING, tag, {"Name": "instance-id", "Values": [INSTANCE_B]}]}
    )
    ssm_stub.add_response(
        "describe_instance_information", ssm_found(HYBRID), {"Filters": [{"Key": "tag:Env", "Values": ["prod"]}]}
    )
    targets = [Target("InstanceIds", (HYBRID, OTHER_HYBRID, INSTANCE_B)), Target("tag:Env", ("prod",))]
    assert resolve_targets(ec2, groups, targets, ssm) == [HYBRID]


def test_without_describe_instance_information_the_ec2_result_stands(
    clients: tuple[Any, Stubber, Any, Stubber, Any], caplog: pytest.LogCaptureFixture
) -> None:
    ec2, ec2_stub, ssm, ssm_stub, groups = clients
    ec2_stub.add_response("describe_instances", ec2_found(INSTANCE_A))
    ssm_stub.add_client_error("describe_instance_information", "AccessDeniedException", "not authorized")
    with caplog.at_level(logging.WARNING, logger="ssm-deploy"):
        assert resolve_targets(ec2, groups, [Target("tag-key", ("Service",))], ssm) == [INSTANCE_A]
    assert "lacks ssm:DescribeInstanceInformation" in caplog.text


def test_without_describe_instance_information_and_no_ec2_match_nothing_is_known(
    clients: tuple[Any, Stubber, Any, Stubber, Any],
) -> None:
    """Not "matches nothing": hybrid nodes may match, so SSM resolves the targets when sending."""
    ec2, ec2_stub, ssm, ssm_stub, groups = clients
    ec2_stub.add_response("describe_instances", ec2_found())
    ssm_stub.add_client_error("describe_instance_information", "AccessDeniedException", "not authorized")
    assert resolve_targets(ec2, groups, [Target("tag:Service", ("api",))], ssm) is None


def test_hybrid_nodes_of_a_resource_group_are_selected(clients: tuple[Any, Stubber, Any, Stubber, Any]) -> None:
    ec2, ec2_stub, ssm, _, groups = clients
    arns = [
        f"arn:aws:ec2:{REGION}:123456789012:instance/{INSTANCE_A}",
        f"arn:aws:ssm:{REGION}:123456789012:managed-instance/{HYBRID}",
    ]
    with Stubber(groups) as groups_stub:
        groups_stub.add_response(
            "list_group_resources", {"ResourceIdentifiers": [{"ResourceArn": arn} for arn in arns]}, {"Group": "web"}
        )
        ec2_stub.add_response(
            "describe_instances",
            ec2_found(INSTANCE_A),
            {"Filters": [RUNNING, {"Name": "instance-id", "Values": [INSTANCE_A]}]},
        )
        assert resolve_targets(ec2, groups, [Target("resource-groups:Name", ("web",))], ssm) == [INSTANCE_A, HYBRID]


def test_running_instances_asks_about_at_most_200_ids_a_request(
    clients: tuple[Any, Stubber, Any, Stubber, Any],
) -> None:
    # DescribeInstances takes at most 200 values in a filter: 450 listed instances are three requests
    ec2, ec2_stub, _, _, _ = clients
    ids = sorted(f"i-{n:017x}" for n in range(450))
    for start in range(0, 450, 200):
        chunk = ids[start : start + 200]
        ec2_stub.add_response(
            "describe_instances", ec2_found(*chunk), {"Filters": [RUNNING, {"Name": "instance-id", "Values": chunk}]}
        )

    assert running_instances(ec2, [], set(ids)) == ids


# --- resolved again after the send: which planned instances left the fleet (review H4, issue #17) ---


def _clients(ec2: Any, ssm: Any, groups: Any) -> Any:
    return SimpleNamespace(ec2=ec2, ssm=ssm, resource_groups=groups)


def test_an_instance_untagged_or_terminated_since_the_plan_is_no_longer_targeted_and_says_why(
    clients: tuple[Any, Stubber, Any, Stubber, Any],
) -> None:
    ec2, ec2_stub, ssm, _, groups = clients
    tag = {"Name": "tag:Service", "Values": ["api"]}
    ec2_stub.add_response("describe_instances", ec2_found(), {"Filters": [RUNNING, tag]})
    found = [
        {"InstanceId": INSTANCE_A, "State": {"Name": "running"}},
        {"InstanceId": INSTANCE_B, "State": {"Name": "terminated"}},
    ]
    states = {"Reservations": [{"Instances": found}]}
    ec2_stub.add_response(
        "describe_instances", states, {"Filters": [{"Name": "instance-id", "Values": [INSTANCE_A, INSTANCE_B]}]}
    )
    gone = no_longer_targeted(_clients(ec2, ssm, groups), [Target("tag:Service", ("api",))], [INSTANCE_A, INSTANCE_B])
    assert gone == {
        INSTANCE_A: "no longer matched by TARGETS (its tags or resource group changed since the deploy was planned)",
        INSTANCE_B: "no longer running (terminated) since the deploy was planned",
    }


def test_an_instance_stopped_since_the_plan_that_targets_still_match_is_still_in_the_fleet(
    clients: tuple[Any, Stubber, Any, Stubber, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Attack 58: stopped, it runs nothing, but it is still tagged: started again it serves what it had. It
    did not get the deploy: not gone (a failure), and said so; one stopped and untagged has left."""
    ec2, ec2_stub, ssm, _, groups = clients
    tag = {"Name": "tag:Service", "Values": ["api"]}
    ec2_stub.add_response("describe_instances", ec2_found(), {"Filters": [RUNNING, tag]})
    found = [
        {"InstanceId": INSTANCE_A, "State": {"Name": "stopped"}},
        {"InstanceId": INSTANCE_B, "State": {"Name": "stopped"}},
    ]
    ids = {"Name": "instance-id", "Values": [INSTANCE_A, INSTANCE_B]}
    ec2_stub.add_response("describe_instances", {"Reservations": [{"Instances": found}]}, {"Filters": [ids]})
    # asked running too: one started again between the two reads is still matched, not gone (the review's race)
    stopped = {"Name": "instance-state-name", "Values": ["running", "pending", "stopping", "stopped"]}
    ec2_stub.add_response("describe_instances", ec2_found(INSTANCE_A), {"Filters": [stopped, tag, ids]})
    with caplog.at_level(logging.WARNING, logger="ssm-deploy"):
        gone = no_longer_targeted(
            _clients(ec2, ssm, groups), [Target("tag:Service", ("api",))], [INSTANCE_A, INSTANCE_B]
        )
    assert gone == {
        INSTANCE_B: "no longer matched by TARGETS (its tags or resource group changed since the deploy was planned)"
    }
    assert f"{INSTANCE_A} is stopped, still matched by TARGETS: still in the fleet, it did not get the deploy" in (
        caplog.text
    )


def test_an_instance_still_matched_stays_and_an_unreadable_fleet_keeps_every_one(
    clients: tuple[Any, Stubber, Any, Stubber, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Only an instance known to have left counts as gone: a refused call leaves them all in the fleet."""
    ec2, ec2_stub, ssm, _, groups = clients
    targets = [Target("tag:Service", ("api",))]
    ec2_stub.add_response("describe_instances", ec2_found(INSTANCE_A))
    assert no_longer_targeted(_clients(ec2, ssm, groups), targets, [INSTANCE_A]) == {}
    ec2_stub.add_client_error("describe_instances", "UnauthorizedOperation", "not authorized")
    with caplog.at_level(logging.WARNING, logger="ssm-deploy"):
        assert no_longer_targeted(_clients(ec2, ssm, groups), targets, [INSTANCE_A, INSTANCE_B]) == {}
    assert "Could not resolve TARGETS again to tell whether instances left the fleet (not authorized)" in caplog.text
