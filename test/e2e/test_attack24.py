"""The twenty-fourth outside attack on the verdict and the audit trail (issue #17, "Done when"), end to end
against the stand-in: rolling deploys behind load balancers whose targets an operator (or an earlier deploy)
left out of service, or changes while the rollout runs. Each test asserts what should hold: what the load
balancer routes, what the instances run and what the step says must agree."""

from __future__ import annotations

import re
from pathlib import Path

from e2e.test_auto_scaling import group_env, make_group
from e2e.test_load_balancer import Fleet, make_fleet, rolling_env
from standin import StandIn
from standin.instance_app import RESTART
from support import LivePipe, PipeRun, run_pipe, wait_until

GATE = "/srv/attack24-go"  # on the second instance: its deploy waits until the test creates it


def gated(fleet: Fleet) -> str:
    """COMMANDS: a restart of the app, the second instance's only once the test opened its gate."""
    return (
        f'if [ "$AWS_SSM_INSTANCE_ID" = "{fleet.ids[1]}" ]; then '
        f"for _ in $(seq 600); do [ -e {GATE} ] && break; sleep 0.1; done; fi\n{RESTART}"
    )


def open_gate(standin: StandIn, fleet: Fleet) -> None:
    gate = standin.instance_path(fleet.ids[1], GATE)
    gate.parent.mkdir(parents=True, exist_ok=True)
    gate.write_text("go\n")


def while_batch_two_runs(standin: StandIn, fleet: Fleet, env: dict[str, str], act: object) -> PipeRun:
    """The deploy, with ``act()`` done while batch 2 is out of service (its deploy waits for it): after the
    last read of the groups before batch 3."""
    pipe = LivePipe(env)
    try:
        pipe.wait_for_line("batch 2/3 (1 instance(s)): drained after", timeout=120)
        assert callable(act)
        act()
    finally:
        open_gate(standin, fleet)
    return pipe.finish(timeout=300)


def test_a_target_an_operator_deregisters_while_the_rollout_runs_is_not_registered_again_by_its_batch(
    standin: StandIn, tmp_path: Path
) -> None:
    """Three instances behind a group, one at a time. While batch 2 runs, an operator deregisters the third
    instance (to look at it, or because it is being retired). When batch 3 comes, the instance is no longer a
    target: the pipe has nothing to take out and must not register it again after its deploy (it registers
    back exactly what it took out). It used the group's targets as read when the rollout was planned, so it
    deregistered the instance again and put it back in service."""
    fleet = make_fleet(standin, 3)
    third = fleet.ids[2]
    elbv2 = standin.client("elbv2")

    def operator_takes_the_third_out() -> None:
        elbv2.deregister_targets(TargetGroupArn=fleet.group_arn, Targets=[{"Id": third}])
        standin.wait_target_states(fleet.group_arn, [third], "gone", timeout=60)

    env = rolling_env(standin, fleet, BATCH_SIZE="1", MIN_HEALTHY="1", COMMANDS=gated(fleet))
    run = while_batch_two_runs(standin, fleet, env, operator_takes_the_third_out)

    assert run.returncode == 0, run.output
    assert "batch 3/3 (1 instance(s)): in none of the target groups, deployed without draining" in run.output
    assert standin.target_states(fleet.group_arn).get(third, "gone") == "gone", run.output


def test_a_target_an_operator_registers_back_while_the_rollout_runs_is_drained_before_its_restart(
    standin: StandIn, tmp_path: Path
) -> None:
    """The third instance is draining when the deploy is planned (an operator took it out of a group whose
    deregistration delay was long then); while batch 2 runs the operator registers it again, which cancels
    its deregistration: healthy, it takes requests. When batch 3 comes the pipe must drain it before the
    restart, or requests through the load balancer fail while the app is down. It used the targets as read
    before (draining), deployed it "without draining", and requests failed."""
    fleet = make_fleet(standin, 3)
    third = fleet.ids[2]
    elbv2 = standin.client("elbv2")
    set_delay(standin, fleet, 3000)  # 150 s at the stand-in's ELB clock: draining for the whole deploy
    elbv2.deregister_targets(TargetGroupArn=fleet.group_arn, Targets=[{"Id": third}])
    standin.wait_target_states(fleet.group_arn, [third], "draining", timeout=60)
    set_delay(standin, fleet, 20)  # what the deploy's batches wait for

    def operator_puts_the_third_back() -> None:
        elbv2.register_targets(TargetGroupArn=fleet.group_arn, Targets=[{"Id": third}])
        standin.wait_target_states(fleet.group_arn, [third], "healthy", timeout=60)

    env = rolling_env(standin, fleet, BATCH_SIZE="1", MIN_HEALTHY="1", COMMANDS=gated(fleet))
    with standin.traffic(fleet.group_arn) as traffic:
        run = while_batch_two_runs(standin, fleet, env, operator_puts_the_third_back)
        wait_until(lambda: standin.target_states(fleet.group_arn).get(third) == "healthy", "third healthy", 60)

    assert run.returncode == 0, run.output
    assert "are in none of the target groups and are deployed without draining" in run.output  # as planned
    assert f"batch 3/3 (1 instance(s)): draining from {fleet.group_name}" in run.output, run.output
    assert traffic.failures == [], traffic.failures[:5]


def set_delay(standin: StandIn, fleet: Fleet, seconds: int) -> None:
    standin.client("elbv2").modify_target_group_attributes(
        TargetGroupArn=fleet.group_arn,
        Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": str(seconds)}],
    )


def test_an_instance_the_group_scales_in_during_its_health_check_is_gone_not_failed(standin: StandIn) -> None:
    """Three instances of an Auto Scaling group behind its target group, one at a time. The group scales in
    the second instance while its batch runs HEALTHCHECK_COMMANDS (after its deploy succeeded): the README says
    an instance the group terminates during the deploy is reported as gone, not failed, unless fewer than
    MIN_HEALTHY remain (two are left here)."""
    group = make_group(standin, 3)
    doomed = group.ids[1]
    scale_in = (
        f'if [ "$AWS_SSM_INSTANCE_ID" = {doomed} ]; then aws autoscaling terminate-instance-in-auto-scaling-group '
        f"--instance-id {doomed} --should-decrement-desired-capacity >/dev/null; sleep 600; fi"
    )
    env = group_env(
        standin, group, COMMANDS=RESTART, HEALTHCHECK_COMMANDS=scale_in, HEALTHCHECK_RETRIES="1", AGENT_LOST_TIMEOUT="1"
    )
    run = run_pipe(env, timeout=300)

    assert doomed not in standin.group_instances(group.name)
    assert standin.suspended_processes(group.name) == set()
    assert f"{doomed} is gone, no longer in the Auto Scaling group {group.name}" in run.output, run.output
    assert run.returncode == 0, run.output
    assert "Health check passed on all 0 instance(s) still in the fleet (1 gone)" in run.output, run.output
    assert "every instance of it left the fleet: nothing to register again" in run.output, run.output


def test_an_instance_the_group_scales_in_while_its_batch_comes_back_into_service_is_gone_not_failed(
    standin: StandIn,
) -> None:
    """Three instances of an Auto Scaling group behind its target group, one at a time; the group's health check
    runs every 60 s (3 s at the stand-in's ELB clock), so a target registered again is 'initial' for a while.
    The group scales in the first batch's instance right after the pipe registered it again. Before the fix the
    wait for it to turn healthy did not ask the group: it waited until HEALTHY_TIMEOUT and failed the deploy."""
    group = make_group(standin, 3)
    standin.client("elbv2").modify_target_group(
        TargetGroupArn=group.target_group_arn, HealthCheckIntervalSeconds=60, HealthCheckTimeoutSeconds=5
    )
    pipe = LivePipe(group_env(standin, group, COMMANDS=RESTART, HEALTHY_TIMEOUT="30"))
    pipe.wait_for_line("batch 1/3 (1 instance(s)): registered again in", timeout=120)
    (doomed,) = re.findall(r"batch 1/3 \(1 instance\(s\)\): (i-[0-9a-f]+)", pipe.output)
    standin.client("autoscaling").terminate_instance_in_auto_scaling_group(
        InstanceId=doomed, ShouldDecrementDesiredCapacity=True
    )
    run = pipe.finish(timeout=300)

    assert doomed not in standin.group_instances(group.name)
    assert standin.suspended_processes(group.name) == set()
    assert run.returncode == 0, run.output
    assert f"{doomed} is gone, no longer in the Auto Scaling group {group.name}" in run.output, run.output
    assert (
        "batch 1/3 (1 instance(s)): every instance of it left the fleet while it came back into service" in run.output
    )


def test_a_target_draining_before_the_deploy_is_deployed_without_draining_and_left_out(standin: StandIn) -> None:
    """Held: an operator took the third instance out of the group just before the deploy (still draining, a long
    delay). The plan counts two registered targets, deploys the third without draining, and leaves it out: the
    pipe registers again only what it took out."""
    fleet = make_fleet(standin, 3)
    third = fleet.ids[2]
    set_delay(standin, fleet, 3000)  # 150 s at the stand-in's ELB clock: draining for the whole deploy
    standin.client("elbv2").deregister_targets(TargetGroupArn=fleet.group_arn, Targets=[{"Id": third}])
    standin.wait_target_states(fleet.group_arn, [third], "draining", timeout=60)
    set_delay(standin, fleet, 20)

    run = run_pipe(rolling_env(standin, fleet, BATCH_SIZE="1", COMMANDS=RESTART), timeout=300)

    assert run.returncode == 0, run.output
    assert f"target group {fleet.group_name}: 2 healthy of 2 registered, 2 of them deployed here" in run.output
    assert "batch 3/3 (1 instance(s)): in none of the target groups, deployed without draining" in run.output
    assert standin.target_states(fleet.group_arn)[third] == "draining", run.output
