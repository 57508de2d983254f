"""The twenty-ninth outside attack on the verdict (issue #17): AWS refusing in the middle of a rollout. A
policy changed mid-deploy (the deploy role loses an action after the first batch), a call throttled
past the SDK's retries, a lost permission at the very end: nothing may be left half-done on the instances
or the load balancer without the step naming it (and the command that puts it right), the ledger must say
what runs, and no traceback. Each test compares the three truths: ``current`` on disk, the ledger and the
load balancer, and what the step said (exit code, message, result file)."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from e2e.release_support import A, B
from e2e.test_attack9 import rolling_b, ship_a
from e2e.test_attack_held import fleet_on_disk, ledger_fleet, result
from e2e.test_least_privilege import (
    DEPLOY_ROLE_POLICY,
    LOAD_BALANCER_ADDITIONS,
    LOCK_ADDITION,
    RELEASE_ADDITIONS,
    runnable_in_moto,
    small_release,
    with_auto_scaling,
)
from e2e.test_ledger import entries as ledger_entries
from e2e.test_load_balancer import Fleet, make_fleet
from standin import StandIn
from support import LivePipe, PipeRun, run_pipe

from pipe.traffic.auto_scaling.hold import HELD_PROCESSES
from pipe.traffic.auto_scaling.new_instances import HEARTBEAT_MAX

ACCOUNT = "123456789012"


def release_behind_load_balancer(without: str | None = None) -> dict[str, Any]:
    """The README's deploy role for a release deploy behind a load balancer (resources widened for moto)."""
    statements = (
        DEPLOY_ROLE_POLICY["Statement"]
        + RELEASE_ADDITIONS["Statement"]
        + LOAD_BALANCER_ADDITIONS["Statement"]
        + LOCK_ADDITION["Statement"]
    )
    return runnable_in_moto({"Statement": statements}, without)


@contextlib.contextmanager
def deploy_role(standin: StandIn, policy: dict[str, Any]) -> Iterator[tuple[str, dict[str, str]]]:
    """A deploy role with ``policy`` and a CI user that may only assume it, with IAM enforced inside: the
    role's name and the variables that make the pipe use it."""
    suffix = uuid.uuid4().hex[:6]
    role = f"deploy-a29-{suffix}"
    role_arn = standin.create_role(role)
    standin.client("iam").put_role_policy(RoleName=role, PolicyName="deploy", PolicyDocument=json.dumps(policy))
    keys = standin.create_user(
        f"ci-a29-{suffix}",
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arn}]},
    )
    with standin.iam_enforced():
        yield (
            role,
            {
                "AWS_ACCESS_KEY_ID": keys["aws_access_key_id"],
                "AWS_SECRET_ACCESS_KEY": keys["aws_secret_access_key"],
                "ROLE_ARN": role_arn,
            },
        )


def take_away(standin: StandIn, role: str, action: str) -> None:
    """The deploy role loses ``action`` now (an administrator changed its policy mid-deploy)."""
    standin.client("iam").put_role_policy(
        RoleName=role,
        PolicyName="deploy",
        PolicyDocument=json.dumps(release_behind_load_balancer(without=action)),
    )


def denied_after_first_batch(
    standin: StandIn, fleet: Fleet, tmp_path: Path, bucket: str, service: str, action: str, **extra: str
) -> PipeRun:
    """B in batches of one; ``action`` is taken from the deploy role while batch 1 bakes."""
    with deploy_role(standin, release_behind_load_balancer()) as (role, keys):
        env = rolling_b(standin, fleet, tmp_path, bucket, service, BAKE_TIME="6", **keys, **extra)
        pipe = LivePipe(env)
        pipe.wait_for_line(f"batch 1/{len(fleet.ids)} (1 instance(s)): baking", timeout=240)
        take_away(standin, role, action)
        return pipe.finish(timeout=400)


def in_service(standin: StandIn, fleet: Fleet) -> dict[str, str]:
    """Each instance's state in the fleet's target group ('gone' when not registered)."""
    states = standin.target_states(fleet.group_arn)
    return {i: states.get(i, "gone") for i in fleet.ids}


# --- 1. the load balancer's calls refused after the first batch --------------------------------------------


def test_register_targets_denied_after_the_first_batch_takes_no_more_targets_out(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on three instances behind a group; B in batches of one; the deploy role loses RegisterTargets
    while batch 1 bakes. Batch 2 cannot be registered again: it is switched back (it is out anyway) and named
    with the command that registers it. Before, the rollback then drained batch 1, healthy on B, to switch it
    back, and could not register it either: two of three instances out of service (all of a two-instance
    fleet), the pipe's own doing after it knew RegisterTargets failed. Now batch 1 stays in service on B and
    is named; the ledger and the result file say which release each instance runs."""
    fleet = make_fleet(standin, 3)
    ship_a(standin, fleet, tmp_path, bucket, service)
    first, second, third = fleet.ids

    run = denied_after_first_batch(
        standin, fleet, tmp_path, bucket, service, "elasticloadbalancing:RegisterTargets", MIN_HEALTHY="1"
    )

    disk = fleet_on_disk(standin, fleet.ids)
    assert run.returncode == 1, run.output
    assert "Traceback" not in run.output, run.output
    assert disk == {first: B, second: A, third: A}, run.output
    assert in_service(standin, fleet) == {first: "healthy", second: "gone", third: "healthy"}, run.output
    last = run.output.strip().splitlines()[-1]
    assert f"aws elbv2 register-targets --target-group-arn {fleet.group_arn} --targets Id={second}" in last, last
    assert f"ROLLBACK NOT RUN on 1 instance(s), still on the new version: {first}" in last, last
    assert "batch 1/3 (1 instance(s)) was not taken out of the load balancer" in last, last
    assert f"{first} runs {B}" in last or f"{first} run {B}" in last, last
    entry = ledger_entries(standin, service)[-1]
    assert entry["status"] != "succeeded" and ledger_fleet(entry) == disk, entry
    document = result(tmp_path)
    assert (document["status"], document["failed_phase"], document["fleet"]) == ("failed", "load balancer", disk)


def test_held_deregister_targets_denied_after_the_first_batch(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """Held: the deploy role loses DeregisterTargets while batch 1 bakes. Batch 2 is never taken out (nothing
    of it deployed), batch 1 cannot be taken out for its switch back either: it stays in service on B, named
    ("rollback not run"), and the ledger and the result file say B on batch 1, A on the others."""
    fleet = make_fleet(standin, 3)
    ship_a(standin, fleet, tmp_path, bucket, service)
    first, second, third = fleet.ids

    run = denied_after_first_batch(
        standin, fleet, tmp_path, bucket, service, "elasticloadbalancing:DeregisterTargets", MIN_HEALTHY="1"
    )

    disk = fleet_on_disk(standin, fleet.ids)
    last = run.output.strip().splitlines()[-1]
    assert run.returncode == 1 and "Traceback" not in run.output, run.output
    assert disk == {first: B, second: A, third: A}, run.output
    assert set(in_service(standin, fleet).values()) == {"healthy"}, run.output
    assert "allow elasticloadbalancing:DeregisterTargets" in last, last
    assert f"ROLLBACK NOT RUN on 1 instance(s), still on the new version: {first}" in last, last
    entry = ledger_entries(standin, service)[-1]
    assert entry["status"] != "succeeded" and ledger_fleet(entry) == disk, entry
    assert result(tmp_path)["fleet"] == disk


def test_send_command_and_register_targets_throttled_after_the_first_batch_are_in_the_verdict(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """SendCommand and RegisterTargets are throttled past the SDK's retries from batch 1's bake on (an
    account-wide burst of another tool). Batch 2 is drained, its command refused, and it cannot be registered
    again: the verdict itself (not only an ERROR line in the log) names it with the command that registers it,
    and batch 1 is not drained for a switch back that would leave it out of service too."""
    fleet = make_fleet(standin, 3)
    ship_a(standin, fleet, tmp_path, bucket, service)
    first, second, third = fleet.ids
    env = rolling_b(standin, fleet, tmp_path, bucket, service, BAKE_TIME="4", MIN_HEALTHY="1", AWS_MAX_ATTEMPTS="2")
    pipe = LivePipe(env)
    try:
        pipe.wait_for_line("batch 1/3 (1 instance(s)): baking", timeout=240)
        standin.service.throttle(1, 1, 600, actions={"SendCommand", "RegisterTargets"})
        run = pipe.finish(timeout=400)
    finally:
        standin.service.clear_faults()

    disk = fleet_on_disk(standin, fleet.ids)
    last = run.output.strip().splitlines()[-1]
    assert run.returncode == 1 and "Traceback" not in run.output, run.output
    assert disk == {first: B, second: A, third: A}, run.output
    assert in_service(standin, fleet) == {first: "healthy", second: "gone", third: "healthy"}, run.output
    assert f"aws elbv2 register-targets --target-group-arn {fleet.group_arn} --targets Id={second}" in last, last
    assert f"ROLLBACK NOT RUN on 1 instance(s), still on the new version: {first}" in last, last
    entry = ledger_entries(standin, service)[-1]
    assert entry["status"] != "succeeded" and ledger_fleet(entry) == disk, entry
    assert result(tmp_path)["fleet"] == disk


def test_resume_processes_denied_at_the_end_of_a_failed_deploy_is_in_the_verdict(
    standin: StandIn, tmp_path: Path
) -> None:
    """A release deploy to an Auto Scaling group whose health check fails, by a role that may not call
    ResumeProcesses: HealthCheck and ReplaceUnhealthy stay suspended for good (the group no longer replaces
    an unhealthy instance). Before, only an ERROR line in the middle of the log said so; the verdict, the
    result file and the summary spoke of the health check alone. Now the verdict names the group, the
    processes and the command that resumes them, as a successful deploy's does."""
    suffix = uuid.uuid4().hex[:6]
    group = f"a29-{suffix}"
    (instance_id,) = standin.create_auto_scaling_group(group, 1)
    standin.client("autoscaling").put_lifecycle_hook(
        AutoScalingGroupName=group,
        LifecycleHookName="a29-launch",
        LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
        HeartbeatTimeout=HEARTBEAT_MAX,
        DefaultResult="ABANDON",
    )
    release = small_release(standin, suffix, tmp_path)
    with deploy_role(standin, with_auto_scaling(without="autoscaling:ResumeProcesses")) as (_, keys):
        env = standin.pipe_env(
            **keys,
            ENVIRONMENT=f"a29{suffix}",
            SERVICE=group,
            INSTANCE_IDS=instance_id,
            AUTO_SCALING_GROUPS=group,
            HEALTHCHECK_COMMANDS="exit 1",
            HEALTHCHECK_RETRIES="1",
            **release,
        )
        run = run_pipe(env, timeout=200)

    resume = f"aws autoscaling resume-processes --auto-scaling-group-name {group} --scaling-processes"
    last = run.output.strip().splitlines()[-1]
    assert run.returncode == 1, run.output
    assert "Traceback" not in run.output, run.output
    assert standin.suspended_processes(group) == set(HELD_PROCESSES)
    assert "the health check failed on 1 of 1 instance(s)" in last, last
    assert f"of the Auto Scaling group {group} could not be resumed" in last and resume in last, last
    document = result(tmp_path)
    assert resume in document["message"] and resume in document["summary"], document
