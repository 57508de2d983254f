"""The stand-in's launch lifecycle hooks (test/standin/auto_scaling.py) and State Manager associations
(test/standin/associations.py), through boto3 against the real HTTP endpoint: a launched instance waits
in Pending:Wait, out of its target groups, until CompleteLifecycleAction; ABANDON (or the heartbeat
timeout with DefaultResult ABANDON) terminates and replaces it; an association runs its document on a new
matching instance when it comes online, and again on every target when it is updated."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from standin import StandIn

DEADLINE = 90.0
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {DEADLINE} s: {what}")
        time.sleep(0.2)


def _states(standin: StandIn, name: str) -> dict[str, str]:
    group = standin.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    return {i["InstanceId"]: i["LifecycleState"] for i in group["AutoScalingGroups"][0]["Instances"]}


def _group_with_hook(standin: StandIn, arn: str, heartbeat: int = 3600) -> tuple[str, str]:
    name = _name("asg-hook")
    (first,) = standin.create_auto_scaling_group(name, 1, target_group_arns=[arn])
    standin.client("autoscaling").put_lifecycle_hook(
        AutoScalingGroupName=name,
        LifecycleHookName="launch",
        LifecycleTransition=LAUNCHING,
        HeartbeatTimeout=heartbeat,
        DefaultResult="ABANDON",
    )
    return name, first


def _scale_out(standin: StandIn, name: str, before: list[str]) -> str:
    standin.client("autoscaling").set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=len(before) + 1)
    (new,) = set(standin.group_instances(name)) - set(before)
    return new


def test_a_launched_instance_waits_until_its_hook_continues_then_enters_service(standin: StandIn) -> None:
    arn = standin.create_target_group(_name("tg"), [], deregistration_delay=0)
    name, first = _group_with_hook(standin, arn)
    new = _scale_out(standin, name, [first])
    assert _states(standin, name)[new] == "Pending:Wait"
    assert new not in standin.target_states(arn)  # not registered while it waits
    autoscaling = standin.client("autoscaling")
    autoscaling.complete_lifecycle_action(
        AutoScalingGroupName=name, LifecycleHookName="launch", InstanceId=new, LifecycleActionResult="CONTINUE"
    )
    assert _states(standin, name)[new] == "InService"
    assert new in standin.target_states(arn)
    with pytest.raises(ClientError, match="No active Lifecycle Action"):  # nothing holds it any more
        autoscaling.complete_lifecycle_action(
            AutoScalingGroupName=name, LifecycleHookName="launch", InstanceId=new, LifecycleActionResult="CONTINUE"
        )


def test_abandon_and_the_heartbeat_timeout_terminate_and_replace(standin: StandIn) -> None:
    arn = standin.create_target_group(_name("tg"), [], deregistration_delay=0)
    name, first = _group_with_hook(standin, arn, heartbeat=30)
    new = _scale_out(standin, name, [first])
    standin.client("autoscaling").complete_lifecycle_action(
        AutoScalingGroupName=name, LifecycleHookName="launch", InstanceId=new, LifecycleActionResult="ABANDON"
    )
    states = _states(standin, name)
    assert new not in states and len(states) == 2  # terminated and replaced
    (replacement,) = set(states) - {first}
    assert states[replacement] == "Pending:Wait"
    standin.auto_scaling.hook_time_scale = 0.05  # the next heartbeat timeout elapses in 1.5 s
    try:
        standin.client("autoscaling").record_lifecycle_action_heartbeat(
            AutoScalingGroupName=name, LifecycleHookName="launch", InstanceId=replacement
        )
        _until(lambda: replacement not in _states(standin, name), "the timed-out instance is abandoned")
    finally:
        standin.auto_scaling.hook_time_scale = 1.0
    assert replacement not in standin.target_states(arn)


def test_an_association_runs_on_a_new_instance_of_its_group_and_again_when_updated(standin: StandIn) -> None:
    name = _name("asg-assoc")
    ids = standin.create_auto_scaling_group(name, 1)
    ssm = standin.client("ssm")
    target = [{"Key": "tag:aws:autoscaling:groupName", "Values": [name]}]
    created = ssm.create_association(
        Name="AWS-RunShellScript",
        AssociationName=f"a-{name}",
        Targets=target,
        Parameters={"commands": ["echo v1 >> /tmp/association-runs"]},
    )["AssociationDescription"]

    def runs(instance_id: str) -> Path:
        return standin.instance_path(instance_id, "/tmp/association-runs")

    _until(lambda: runs(ids[0]).exists() and runs(ids[0]).read_text() == "v1\n", "the create applies to the target")
    new = _scale_out(standin, name, ids)
    _until(lambda: runs(new).exists() and runs(new).read_text() == "v1\n", "the new instance runs it")
    listed = ssm.list_associations(AssociationFilterList=[{"key": "AssociationName", "value": f"a-{name}"}])
    assert [a["AssociationId"] for a in listed["Associations"]] == [created["AssociationId"]]
    ssm.update_association(
        AssociationId=created["AssociationId"],
        Name="AWS-RunShellScript",
        AssociationName=f"a-{name}",
        Targets=target,
        Parameters={"commands": ["echo v2 >> /tmp/association-runs"]},
    )
    for instance_id in [ids[0], new]:
        _until(lambda i=instance_id: runs(i).read_text().endswith("v2\n"), "the update re-applies everywhere")  # type: ignore[misc]
    described = ssm.describe_association(AssociationId=created["AssociationId"])["AssociationDescription"]
    assert described["AssociationVersion"] == "2"
    assert described["Parameters"] == {"commands": ["echo v2 >> /tmp/association-runs"]}


def test_auto_scaling_and_association_actions_are_held_to_iam_policies_and_so_are_the_instances(
    standin: StandIn,
) -> None:
    """Under ``iam_enforced`` each Auto Scaling and State Manager association action is checked against the
    caller's policy (AccessDenied naming the action), and with ``instance_role_policy`` a command on an
    instance runs with credentials held to that policy, not the administrator's."""
    name, first = _group_with_hook(standin, standin.create_target_group(_name("tg"), [], deregistration_delay=0))
    new = _scale_out(standin, name, [first])
    allowed = ["autoscaling:DescribeAutoScalingGroups", "ssm:ListAssociations"]
    instance_role = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "autoscaling:RecordLifecycleActionHeartbeat", "Resource": "*"}],
    }
    hook = f"--auto-scaling-group-name {name} --lifecycle-hook-name launch --instance-id {new}"
    with standin.iam_enforced(instance_role_policy=instance_role):
        keys = standin.create_user(
            _name("deployer"),
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": allowed, "Resource": "*"}]},
        )
        autoscaling = boto3.client("autoscaling", endpoint_url=standin.endpoint, region_name=standin.region, **keys)  # type: ignore[call-overload]
        ssm = boto3.client("ssm", endpoint_url=standin.endpoint, region_name=standin.region, **keys)  # type: ignore[call-overload]
        autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
        ssm.list_associations()
        with pytest.raises(ClientError) as suspend:
            autoscaling.suspend_processes(AutoScalingGroupName=name, ScalingProcesses=["AZRebalance"])
        with pytest.raises(ClientError) as create:
            ssm.create_association(Name="AWS-RunShellScript", AssociationName=_name("a"), Targets=[])
        heartbeat = standin.run_on_instance(first, f"aws autoscaling record-lifecycle-action-heartbeat {hook}")
        complete = standin.run_on_instance(
            first, f"aws autoscaling complete-lifecycle-action {hook} --lifecycle-action-result CONTINUE"
        )

    assert "autoscaling:SuspendProcesses" in suspend.value.response["Error"]["Message"]
    assert "ssm:CreateAssociation" in create.value.response["Error"]["Message"]
    assert standin.suspended_processes(name) == set()
    assert heartbeat.returncode == 0, heartbeat.stderr  # the instance role's one action
    assert complete.returncode != 0 and "autoscaling:CompleteLifecycleAction" in complete.stderr
    assert _states(standin, name)[new] == "Pending:Wait"
