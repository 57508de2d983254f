"""Rolling deploys to EC2 Auto Scaling groups (AUTO_SCALING_GROUPS) against the stand-in's groups
(test/standin/auto_scaling.py): the processes that fight a rollout are held from the first batch to the
last and resumed on every exit path, processes someone else suspended stay suspended, and an instance
the group terminates while it is being deployed to is reported as gone, not failed."""

from __future__ import annotations

import signal
import uuid
from dataclasses import dataclass

from standin import StandIn
from standin.instance_app import RESTART
from support import LivePipe, run_pipe, wait_until

ELB_TIME_SCALE = 0.05
HELD = {"AZRebalance", "HealthCheck", "ReplaceUnhealthy", "InstanceRefresh"}
SOMEONE_ELSES = {"ScheduledActions", "HealthCheck"}  # suspended before the deploy, by the team


@dataclass
class Group:
    name: str
    ids: list[str]
    target_group_arn: str


def make_group(standin: StandIn, size: int) -> Group:
    standin.elb_time_scale = ELB_TIME_SCALE
    name = f"asg-{uuid.uuid4().hex[:8]}"
    arn = standin.create_target_group(name, [], deregistration_delay=20)
    ids = standin.create_auto_scaling_group(name, size, target_group_arns=[arn])
    for instance_id in ids:
        standin.app_up(instance_id)
    standin.wait_target_states(arn, ids, "healthy", timeout=60)
    return Group(name, ids, arn)


def group_env(standin: StandIn, group: Group, **variables: str) -> dict[str, str]:
    defaults = {
        "TARGETS": f"tag:aws:autoscaling:groupName={group.name}",
        "AUTO_SCALING_GROUPS": "auto",
        "TARGET_GROUPS": "auto",
        "SERVICE": group.name,
    }
    return standin.pipe_env(**{**defaults, **variables})


def _record_held(group: Group) -> str:
    """A line of the deploy's script: what the group has suspended while the instance is deployed."""
    return (
        f"aws autoscaling describe-auto-scaling-groups --auto-scaling-group-names {group.name} "
        "--query 'AutoScalingGroups[0].SuspendedProcesses[].ProcessName' --output text > /tmp/held-during-deploy"
    )


def test_a_rolling_deploy_of_a_group_holds_scaling_and_resumes_only_what_it_suspended(standin: StandIn) -> None:
    group = make_group(standin, 3)
    standin.client("autoscaling").suspend_processes(
        AutoScalingGroupName=group.name, ScalingProcesses=sorted(SOMEONE_ELSES)
    )
    run = run_pipe(group_env(standin, group, COMMANDS=f"{_record_held(group)}\n{RESTART}"), timeout=300)

    assert run.returncode == 0, run.output
    for instance_id in group.ids:  # each batch saw the group held
        seen = set(standin.instance_path(instance_id, "/tmp/held-during-deploy").read_text().split())
        assert seen == HELD | SOMEONE_ELSES, instance_id
    assert standin.suspended_processes(group.name) == SOMEONE_ELSES  # the team's suspensions stay
    assert "AZRebalance, ReplaceUnhealthy, InstanceRefresh suspended for the rollout" in run.output
    assert "HealthCheck already suspended before it: left as they are" in run.output
    assert f"Auto Scaling group {group.name}: AZRebalance, ReplaceUnhealthy, InstanceRefresh resumed" in run.output


def test_a_failed_deploy_resumes_every_process_it_suspended(standin: StandIn) -> None:
    group = make_group(standin, 2)
    standin.client("autoscaling").suspend_processes(AutoScalingGroupName=group.name, ScalingProcesses=["Launch"])
    run = run_pipe(group_env(standin, group, COMMANDS=f"{_record_held(group)}\nexit 3"), timeout=300)

    assert run.returncode != 0, run.output
    records = [standin.instance_path(i, "/tmp/held-during-deploy") for i in group.ids]
    (deployed,) = [record for record in records if record.exists()]  # the first batch failed: the only one sent
    assert set(deployed.read_text().split()) == HELD | {"Launch"}
    assert standin.suspended_processes(group.name) == {"Launch"}


def test_an_instance_the_group_scales_in_while_it_is_deployed_is_gone_not_failed(standin: StandIn) -> None:
    group = make_group(standin, 3)
    doomed = group.ids[1]
    # the doomed instance's own deploy asks its group to scale it in, then waits: it dies mid-command
    scale_in = (
        f'if [ "$AWS_SSM_INSTANCE_ID" = {doomed} ]; then aws autoscaling terminate-instance-in-auto-scaling-group '
        f"--instance-id {doomed} --should-decrement-desired-capacity; sleep 600; fi"
    )
    env = group_env(standin, group, COMMANDS=f"{scale_in}\n{RESTART}", AGENT_LOST_TIMEOUT="1")
    run = run_pipe(env, timeout=300)

    assert run.returncode == 0, run.output
    assert f"{doomed} is gone, no longer in the Auto Scaling group {group.name}" in run.output
    assert doomed not in standin.group_instances(group.name)
    assert standin.suspended_processes(group.name) == set()
    states = standin.target_states(group.target_group_arn)
    assert doomed not in states  # not registered again: it is gone
    assert all(states[i] == "healthy" for i in group.ids if i != doomed), states


def test_a_stop_during_the_rollout_resumes_every_process_it_suspended_and_only_those(standin: StandIn) -> None:
    """SIGTERM to the pipe while the first batch's command runs: the command is cancelled, the batch
    registered again, and the group's processes are back as the team left them."""
    group = make_group(standin, 2)
    standin.client("autoscaling").suspend_processes(AutoScalingGroupName=group.name, ScalingProcesses=["Launch"])
    env = group_env(standin, group, COMMANDS=f"{_record_held(group)}\necho deploy-is-running\nsleep 600")
    pipe = LivePipe(env)
    try:
        pipe.wait_for_line("deploy-is-running", timeout=180)
        assert standin.suspended_processes(group.name) == HELD | {"Launch"}  # held while the batch runs
    finally:
        pipe.signal(signal.SIGTERM)
    run = pipe.finish(timeout=300)

    assert run.returncode != 0, run.output
    assert "Received SIGTERM: the pipeline was stopped" in run.output
    assert f"Auto Scaling group {group.name}: AZRebalance, HealthCheck, ReplaceUnhealthy, InstanceRefresh resumed" in (
        run.output
    )
    assert standin.suspended_processes(group.name) == {"Launch"}  # the team's suspension stays
    states = standin.target_states(group.target_group_arn)
    assert all(states[i] in ("healthy", "initial") for i in group.ids), states  # the stopped batch is back


def test_an_instance_in_standby_is_deployed_now_and_left_in_standby_out_of_the_load_balancer(standin: StandIn) -> None:
    """Standby is running and goes back into service with ExitStandby, without a lifecycle hook: the pipe
    deploys it with the others, and leaves it as the team put it (Standby, in no target group)."""
    group = make_group(standin, 3)
    resting = group.ids[2]
    standin.client("autoscaling").enter_standby(
        AutoScalingGroupName=group.name, InstanceIds=[resting], ShouldDecrementDesiredCapacity=True
    )
    wait_until(lambda: resting not in standin.target_states(group.target_group_arn), "Standby left the target group")
    run = run_pipe(group_env(standin, group, COMMANDS=f"echo deployed > /tmp/deployed\n{RESTART}"), timeout=300)

    assert run.returncode == 0, run.output
    assert all(standin.instance_path(i, "/tmp/deployed").exists() for i in group.ids)
    states = standin.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[group.name])
    assert {i["InstanceId"]: i["LifecycleState"] for i in states["AutoScalingGroups"][0]["Instances"]}[resting] == (
        "Standby"
    )
    assert resting not in standin.target_states(group.target_group_arn)  # not put into service by the deploy
