"""The stand-in's EC2 Auto Scaling groups (test/standin/auto_scaling.py), through boto3 against the real
HTTP endpoint: launched instances are managed stand-in instances that register in the group's target
groups when InService, terminated ones go away (deregistered, agent lost, commands undeliverable),
suspended processes are reported as AWS does and Launch/Terminate suspended hold scaling."""

from __future__ import annotations

import time
import uuid

from standin import StandIn

DEADLINE = 60.0


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _managed(standin: StandIn, instance_ids: list[str]) -> dict[str, str]:
    rows = standin.client("ssm").describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": instance_ids}]
    )["InstanceInformationList"]
    return {row["InstanceId"]: row["PingStatus"] for row in rows}


def test_launched_instances_are_managed_and_run_commands(standin: StandIn) -> None:
    ids = standin.create_auto_scaling_group(_name("asg-run"), 2)
    assert len(ids) == 2
    assert _managed(standin, ids) == {i: "Online" for i in ids}
    for instance_id in ids:
        done = standin.run_on_instance(instance_id, "echo hello from $(hostname -I)")
        assert done.returncode == 0 and "hello" in done.stdout


def test_instances_register_in_the_groups_target_groups_once_and_a_drain_survives_scaling(standin: StandIn) -> None:
    name = _name("asg-tg")
    arn = standin.create_target_group(name, [], deregistration_delay=0)
    ids = standin.create_auto_scaling_group(name, 2, target_group_arns=[arn])
    assert set(standin.target_states(arn)) == set(ids)
    elbv2, autoscaling = standin.client("elbv2"), standin.client("autoscaling")
    elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": ids[0]}])
    standin.wait_target_states(arn, [ids[0]], "gone", DEADLINE)
    autoscaling.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=3)  # scale out
    after = standin.group_instances(name)
    (new,) = set(after) - set(ids)
    states = standin.target_states(arn)
    assert new in states  # the launched instance entered the target group
    assert ids[0] not in states  # moto registered every instance again: the drained one stays out
    assert _managed(standin, [new]) == {new: "Online"}


def test_a_terminated_instance_is_deregistered_lost_and_undeliverable(standin: StandIn) -> None:
    name = _name("asg-term")
    arn = standin.create_target_group(name, [], deregistration_delay=0)
    ids = standin.create_auto_scaling_group(name, 2, target_group_arns=[arn])
    autoscaling = standin.client("autoscaling")
    autoscaling.terminate_instance_in_auto_scaling_group(InstanceId=ids[0], ShouldDecrementDesiredCapacity=True)
    assert standin.group_instances(name) == [ids[1]]
    standin.wait_target_states(arn, [ids[0]], "gone", DEADLINE)
    assert _managed(standin, [ids[0]]).get(ids[0]) == "ConnectionLost"
    state = standin.client("ec2").describe_instances(InstanceIds=[ids[0]])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] == "terminated"
    ssm = standin.client("ssm")
    command = ssm.send_command(
        InstanceIds=[ids[0]], DocumentName="AWS-RunShellScript", Parameters={"commands": ["true"]}
    )["Command"]["CommandId"]
    deadline = time.monotonic() + DEADLINE
    while True:
        rows = ssm.list_command_invocations(CommandId=command)["CommandInvocations"]
        if rows and rows[0]["Status"] not in ("Pending", "InProgress"):
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)
    assert (rows[0]["Status"], rows[0]["StatusDetails"]) == ("Failed", "Undeliverable")


def test_suspended_processes_are_listed_with_a_reason_and_resumed_exactly(standin: StandIn) -> None:
    name = _name("asg-susp")
    standin.create_auto_scaling_group(name, 1)
    autoscaling = standin.client("autoscaling")
    autoscaling.suspend_processes(AutoScalingGroupName=name, ScalingProcesses=["AZRebalance", "ScheduledActions"])
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
    reasons = {p["ProcessName"]: p["SuspensionReason"] for p in group["SuspendedProcesses"]}
    assert set(reasons) == {"AZRebalance", "ScheduledActions"}
    assert all(reason.startswith("User suspended at ") for reason in reasons.values())
    autoscaling.resume_processes(AutoScalingGroupName=name, ScalingProcesses=["AZRebalance"])
    assert standin.suspended_processes(name) == {"ScheduledActions"}


def test_launch_and_terminate_suspended_hold_the_group_at_its_size(standin: StandIn) -> None:
    name = _name("asg-hold")
    ids = standin.create_auto_scaling_group(name, 2)
    autoscaling = standin.client("autoscaling")
    autoscaling.suspend_processes(AutoScalingGroupName=name, ScalingProcesses=["Launch", "Terminate"])
    autoscaling.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=1)
    assert sorted(standin.group_instances(name)) == sorted(ids)  # no scale-in
    autoscaling.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=3)
    assert sorted(standin.group_instances(name)) == sorted(ids)  # no scale-out
    autoscaling.resume_processes(AutoScalingGroupName=name, ScalingProcesses=["Launch"])
    assert len(standin.group_instances(name)) == 3  # Launch resumed: it launches what it could not


def test_standby_takes_an_instance_out_of_the_target_groups_and_exit_standby_puts_it_back(standin: StandIn) -> None:
    arn = standin.create_target_group(_name("tg-standby"), [], deregistration_delay=0)
    name = _name("asg-standby")
    ids = standin.create_auto_scaling_group(name, 2, target_group_arns=[arn])
    resting, serving = ids
    autoscaling = standin.client("autoscaling")
    assert set(standin.target_states(arn)) == set(ids)

    autoscaling.enter_standby(AutoScalingGroupName=name, InstanceIds=[resting], ShouldDecrementDesiredCapacity=True)
    instances = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
    assert {i["InstanceId"]: i["LifecycleState"] for i in instances["Instances"]} == {
        resting: "Standby",
        serving: "InService",
    }
    deadline = time.monotonic() + DEADLINE
    while resting in standin.target_states(arn) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert set(standin.target_states(arn)) == {serving}  # no load balancer traffic while in Standby
    assert standin.run_on_instance(resting, "true").returncode == 0  # still running and managed

    autoscaling.exit_standby(AutoScalingGroupName=name, InstanceIds=[resting])
    assert set(standin.target_states(arn)) == set(ids)
