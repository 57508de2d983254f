"""The README's deploy-role policy is enough for a deploy, and each of its actions is needed.

moto enforces actions and principals, but sees every SSM and Logs resource as "*" and does not
evaluate conditions, so the policy is run with its resources widened to "*" and its conditions
dropped; resource scoping is checked on the document's shape instead.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from standin import StandIn
from support import PipeRun, run_pipe, wait_until

from pipe.traffic.auto_scaling.hold import HELD_PROCESSES
from pipe.traffic.auto_scaling.new_instances import HEARTBEAT_MAX, association_name

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def documented_policy(heading: str) -> dict[str, Any]:
    section = README.split(heading, 1)[1]
    block = re.search(r"```json\n(.*?)```", section, flags=re.DOTALL)
    assert block, f"no policy under {heading}"
    policy: dict[str, Any] = json.loads(block.group(1))
    return policy


DEPLOY_ROLE_POLICY = documented_policy("### The deploy role")


def actions_of(policy: dict[str, Any]) -> list[str]:
    found: set[str] = set()
    for statement in policy["Statement"]:
        action = statement["Action"]
        found.update([action] if isinstance(action, str) else action)
    return sorted(found)


def runnable_in_moto(policy: dict[str, Any], without: str | None = None) -> dict[str, Any]:
    statements = []
    for statement in policy["Statement"]:
        listed = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        actions = [a for a in listed if a != without]
        if actions:
            statements.append({"Effect": statement["Effect"], "Action": actions, "Resource": "*"})
    return {"Version": "2012-10-17", "Statement": statements}


def ci_user_and_deploy_role(
    standin: StandIn, suffix: str, environment: str, role_policy: dict[str, Any]
) -> dict[str, str]:
    """The environment's deploy role with ``role_policy``, and a CI user that may only assume it:
    the AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY the pipe gets."""
    role_arn = standin.create_role(f"deploy-{environment}")
    standin.client("iam").put_role_policy(
        RoleName=f"deploy-{environment}", PolicyName="deploy", PolicyDocument=json.dumps(role_policy)
    )
    keys = standin.create_user(
        f"ci-{suffix}",
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arn}]},
    )
    return {"AWS_ACCESS_KEY_ID": keys["aws_access_key_id"], "AWS_SECRET_ACCESS_KEY": keys["aws_secret_access_key"]}


def deploy_with(standin: StandIn, role_policy: dict[str, Any], by_group: bool = False) -> tuple[PipeRun, list[str]]:
    """Create a CI user and a deploy role with ``role_policy``; deploy by tag (or resource group) with
    IAM enforced."""
    suffix = uuid.uuid4().hex[:6]
    instance_ids = standin.launch(2, name="lp", tags={"Service": f"lp-{suffix}"})
    if by_group:
        standin.create_resource_group(f"lp-{suffix}", {"Service": [f"lp-{suffix}"]})
    environment = f"lp{suffix}"
    key = standin.create_key("lp")
    standin.put_secret(f"/deploy/{environment}/db_password", "least-privilege-pw", key)
    standin.put_secret(f"/deploy/{environment}/app/api_token", "least-privilege-token", key)
    ci_keys = ci_user_and_deploy_role(standin, suffix, environment, role_policy)
    with standin.iam_enforced():
        env = standin.pipe_env(
            **ci_keys,
            ENVIRONMENT=environment,
            ROLE_ARN="arn:aws:iam::123456789012:role/deploy-{environment}",
            TARGETS=f"resource-groups:Name=lp-{suffix}" if by_group else f"tag:Service=lp-{suffix}",
            SECRETS="DB_PASSWORD=/deploy/{environment}/db_password",
            PARAMETERS_PATH="/deploy/{environment}/app",
            COMMANDS='echo "deployed with ${#DB_PASSWORD} chars and a ${#API_TOKEN}-char token"',
        )
        run = run_pipe(env)
    return run, instance_ids


@pytest.mark.parametrize("by_group", [False, True], ids=["by tag", "by resource group"])
def test_documented_policy_is_enough(standin: StandIn, by_group: bool) -> None:
    run, instance_ids = deploy_with(standin, runnable_in_moto(DEPLOY_ROLE_POLICY), by_group)

    assert run.returncode == 0, run.output
    for instance_id in instance_ids:
        assert f"{instance_id} | deployed with 18 chars and a 21-char token" in run.output
    assert "WARNING" not in run.output  # no degraded mode: every check and the live output ran


# What the pipe does without each action: fail naming it, or carry on with a warning naming it.
WITHOUT = {
    "ssm:SendCommand": (1, "Fix: allow ssm:SendCommand"),
    "ssm:GetParameters": (1, "is not allowed ssm:GetParameters"),
    "ssm:GetParametersByPath": (1, "is not allowed to list them"),
    "ssm:ListCommandInvocations": (
        1,
        "The deploy role: nothing was sent. arn:aws:sts::123456789012:assumed-role/deploy-lp",
    ),
    "ssm:GetCommandInvocation": (1, "could send the command but not follow it"),
    "ssm:ListCommands": (1, "could send the command but not follow it"),
    "ssm:DescribeInstanceInformation": (0, "lacks ssm:DescribeInstanceInformation"),
    "logs:FilterLogEvents": (0, "Allow logs:FilterLogEvents"),
    "logs:StartLiveTail": (0, "allow logs:StartLiveTail"),
    "ec2:DescribeInstances": (0, "Could not resolve TARGETS before sending"),
    "resource-groups:ListGroupResources": (0, "Could not resolve TARGETS before sending"),
}


@pytest.mark.parametrize("action", sorted(WITHOUT))
def test_each_documented_action_is_needed_and_named_when_missing(standin: StandIn, action: str) -> None:
    expected_code, expected_text = WITHOUT[action]
    by_group = action.startswith("resource-groups:")
    run, instance_ids = deploy_with(standin, runnable_in_moto(DEPLOY_ROLE_POLICY, without=action), by_group)

    assert run.returncode == expected_code, run.output
    assert expected_text in run.output
    assert action in run.output  # the message names the missing permission
    assert "Traceback" not in run.output
    if expected_code == 1 and action != "ssm:SendCommand":
        for instance_id in instance_ids:
            assert standin.client("ssm").list_commands(InstanceId=instance_id)["Commands"] == [], "sent anyway"


def test_every_documented_action_is_covered_above() -> None:
    untestable_here = {"ssm:CancelCommand", "kms:Decrypt"}  # used on stops; KMS is not enforced by moto
    assert set(actions_of(DEPLOY_ROLE_POLICY)) == set(WITHOUT) | untestable_here


def test_documented_policy_scopes_what_can_be_scoped() -> None:
    statements = {s["Sid"]: s for s in DEPLOY_ROLE_POLICY["Statement"]}

    assert statements["RunTheDeployDocument"]["Resource"].endswith(":document/AWS-RunShellScript")
    assert "aws:ResourceTag/Environment" in json.dumps(statements["OnThisEnvironmentsInstancesOnly"]["Condition"])
    assert [r.split(":parameter", 1)[1] for r in statements["CheckTheSecretsExist"]["Resource"]] == [
        "/deploy/prod",
        "/deploy/prod/*",
    ]
    assert "kms:ViaService" in json.dumps(statements["CheckTheSecretsDecrypt"]["Condition"])
    assert all(":log-group:/aws/ssm/ssm-deploy" in r for r in statements["StreamTheOutput"]["Resource"])
    wildcard = [sid for sid, s in statements.items() if s["Resource"] == "*"]
    assert wildcard == ["FollowAndCancelTheCommand"]  # these actions take no resource-level scoping


# --- release mode: the README's additions, each needed ---------------------------------------------

RELEASE_ADDITIONS = documented_policy("these statements join the deploy role's policy:")
# LOCK is on by default in release mode, with TARGET_GROUPS and with AUTO_SCALING_GROUPS: its statement
# joins each of those additions. Without PutParameter the lock is refused before anything is sent; without
# GetParameter or DeleteParameter the deploy ends with a warning naming the action.
LOCK_ADDITION = documented_policy("this statement joins the deploy role's policy wherever the deploy lock is on:")
LOCK_WITHOUT = {
    "ssm:PutParameter": (1, "LOCK: nothing was sent"),
    "ssm:GetParameter": (0, "ssm:GetParameter"),
    "ssm:DeleteParameter": (0, "ssm:DeleteParameter"),
}
# What a release deploy does without each added action. AbortMultipartUpload only runs when a
# multipart upload fails, which a small artifact never starts. Without s3:ListBucket, S3 answers a
# HeadObject of a missing key with 403 instead of 404 (S3 API Reference, HeadObject); moto answers
# 404 whatever the policy, so that path is covered by a stubbed client in test_unit_release_artifact.py.
RELEASE_WITHOUT = {
    "s3:GetObject": (1, "s3:GetObject"),
    "s3:PutObject": (1, "s3:PutObject"),
    "ssm:GetParameterHistory": (1, "ssm:GetParameterHistory"),
    # the ledger's PutParameter is the lock's too: refused first there (test_ledger.py covers a ledger
    # that cannot be written behind a lock that can)
    **LOCK_WITHOUT,
}


def small_release(standin: StandIn, suffix: str, tmp_path: Path) -> dict[str, str]:
    """A bucket and a one-file build (version.txt: "release") in the clone: the release mode variables."""
    bucket = f"lp-artifacts-{suffix}"
    standin.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": standin.region})
    data = b"release\n"
    with tarfile.open(tmp_path / "app.tgz", "w:gz") as archive:
        info = tarfile.TarInfo("version.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return {
        "ARTIFACT": "app.tgz",
        "ARTIFACT_BUCKET": bucket,
        "APP_DIR": "/srv/lp-app",
        "ACTIVATE_COMMANDS": "cat version.txt",
        "BITBUCKET_CLONE_DIR": str(tmp_path),
    }


def release_with(standin: StandIn, role_policy: dict[str, Any], tmp_path: Path) -> PipeRun:
    suffix = uuid.uuid4().hex[:6]
    (instance_id,) = standin.launch(1)
    environment = f"lpr{suffix}"
    release = small_release(standin, suffix, tmp_path)
    ci_keys = ci_user_and_deploy_role(standin, suffix, environment, role_policy)
    with standin.iam_enforced():
        env = standin.pipe_env(
            **ci_keys,
            ENVIRONMENT=environment,
            ROLE_ARN="arn:aws:iam::123456789012:role/deploy-{environment}",
            INSTANCE_IDS=instance_id,
            **release,
        )
        return run_pipe(env)


def with_release(without: str | None = None) -> dict[str, Any]:
    joined = {
        "Statement": DEPLOY_ROLE_POLICY["Statement"] + RELEASE_ADDITIONS["Statement"] + LOCK_ADDITION["Statement"]
    }
    return runnable_in_moto(joined, without)


def test_documented_release_additions_are_enough(standin: StandIn, tmp_path: Path) -> None:
    run = release_with(standin, with_release(), tmp_path)

    assert run.returncode == 0, run.output
    assert "WARNING" not in run.output


@pytest.mark.parametrize("action", sorted(RELEASE_WITHOUT))
def test_each_release_action_is_needed_and_named_when_missing(standin: StandIn, tmp_path: Path, action: str) -> None:
    expected_code, expected_text = RELEASE_WITHOUT[action]
    run = release_with(standin, with_release(without=action), tmp_path)

    assert run.returncode == expected_code, run.output
    assert expected_text in run.output
    assert "Traceback" not in run.output


def test_release_additions_are_each_checked_here_or_said_why_not() -> None:
    documented = actions_of(RELEASE_ADDITIONS) + actions_of(LOCK_ADDITION)
    assert set(documented) - set(RELEASE_WITHOUT) == {"s3:AbortMultipartUpload", "s3:ListBucket"}


# --- behind a load balancer: the README's additions, each needed -----------------------------------

LOAD_BALANCER_ADDITIONS = documented_policy(
    "these statements join the deploy role's policy for a rollout behind a load balancer:"
)
# What a rolling deploy does without each added action: refuse before anything is deregistered or
# sent, fail naming it (RegisterTargets: with the command that registers the instance by hand), or
# finish with a warning (the lock's release). Without the right to list the target groups and read
# their targets the pipe cannot know every group the instances are in: it refuses, never skips one.
LOAD_BALANCER_WITHOUT = {
    "elasticloadbalancing:DescribeTargetGroups": (
        1,
        "TARGET_GROUPS: nothing was sent. the deploy role may not call DescribeTargetGroups, which the pipe needs "
        "to list the Region's target groups and find every one the instances are registered in",
    ),
    "elasticloadbalancing:DescribeTargetGroupAttributes": (1, "TARGET_GROUPS: nothing was sent"),
    "elasticloadbalancing:DescribeTargetHealth": (
        1,
        "TARGET_GROUPS: nothing was sent. the deploy role may not call DescribeTargetHealth, which the pipe needs "
        "to find which target groups the instances are registered in",
    ),
    "elasticloadbalancing:DeregisterTargets": (1, "could not be taken out of the load balancer"),
    "elasticloadbalancing:RegisterTargets": (1, "aws elbv2 register-targets --target-group-arn"),
    "cloudwatch:DescribeAlarms": (1, "ALARMS: nothing was sent"),
    **LOCK_WITHOUT,
}


def rolling_deploy_with(standin: StandIn, role_policy: dict[str, Any]) -> tuple[PipeRun, list[str], list[str]]:
    """A rolling deploy of two instances behind the target group TARGET_GROUPS names and a second one
    it does not name; returns the run, both groups' ARNs and the instances."""
    suffix = uuid.uuid4().hex[:6]
    standin.elb_time_scale = 0.1
    instance_ids = standin.launch(2, name="lb", tags={"Service": f"lb-{suffix}"})
    for instance_id in instance_ids:
        standin.app_up(instance_id)
    group = f"lb-{suffix}"
    arns = [standin.create_target_group(n, instance_ids, deregistration_delay=10) for n in (group, f"lb2-{suffix}")]
    for arn in arns:
        standin.wait_target_states(arn, instance_ids, "healthy", timeout=30)
    alarm = f"lb-{suffix}-5xx"
    standin.create_alarm(alarm)
    environment = f"lb{suffix}"
    ci_keys = ci_user_and_deploy_role(standin, suffix, environment, role_policy)
    with standin.iam_enforced():
        env = standin.pipe_env(
            **ci_keys,
            ENVIRONMENT=environment,
            ROLE_ARN="arn:aws:iam::123456789012:role/deploy-{environment}",
            TARGETS=f"tag:Service=lb-{suffix}",
            TARGET_GROUPS=group,
            BATCH_SIZE="2",  # one batch: what is checked here is each permission, not the pacing
            MIN_HEALTHY="0",
            ALARMS=alarm,
            SERVICE=group,
            COMMANDS="echo deployed",
        )
        run = run_pipe(env, timeout=200)
    return run, arns, instance_ids


def with_load_balancer(without: str | None = None) -> dict[str, Any]:
    joined = {
        "Statement": DEPLOY_ROLE_POLICY["Statement"] + LOAD_BALANCER_ADDITIONS["Statement"] + LOCK_ADDITION["Statement"]
    }
    return runnable_in_moto(joined, without)


def test_documented_load_balancer_additions_are_enough(standin: StandIn) -> None:
    run, arns, _ = rolling_deploy_with(standin, with_load_balancer())

    assert run.returncode == 0, run.output
    assert "WARNING" not in run.output
    assert "batch 1/1 (2 instance(s)): draining from lb-" in run.output and ", lb2-" in run.output
    assert "batch 1/1 (2 instance(s)): healthy in the load balancer" in run.output
    for arn in arns:
        assert set(standin.target_states(arn).values()) == {"healthy"}


@pytest.mark.parametrize("action", sorted(LOAD_BALANCER_WITHOUT))
def test_each_load_balancer_action_is_needed_and_named_when_missing(standin: StandIn, action: str) -> None:
    expected_code, expected_text = LOAD_BALANCER_WITHOUT[action]
    run, arns, instance_ids = rolling_deploy_with(standin, with_load_balancer(without=action))

    assert run.returncode == expected_code, run.output
    assert expected_text in run.output
    assert action in run.output
    assert "Traceback" not in run.output
    if action != "elasticloadbalancing:RegisterTargets":  # nothing is left out of the load balancer
        for arn in arns:
            standin.wait_target_states(arn, instance_ids, "healthy", timeout=30)


def test_load_balancer_additions_are_each_checked_above() -> None:
    assert set(actions_of(LOAD_BALANCER_ADDITIONS) + actions_of(LOCK_ADDITION)) == set(LOAD_BALANCER_WITHOUT)


# --- Auto Scaling groups: the README's additions for both roles, each needed -----------------------

AUTO_SCALING_SECTION = README.split("### For Auto Scaling groups", 1)[1].split("\n### ", 1)[0]
AUTO_SCALING_ADDITIONS, LAUNCH_HOOK_STATEMENT = (
    json.loads(block) for block in re.findall(r"```json\n(.*?)```", AUTO_SCALING_SECTION, flags=re.DOTALL)
)
INSTANCE_ROLE_POLICY = documented_policy("### The instance role")
RELEASE_MODE_ROW = next(line for line in README.splitlines() if line.startswith("| Release mode"))
# The instance role in release mode: its policy, `s3:GetObject` on the artifacts (the IAM table's release
# mode row says so in words), and the launch hook's statement for the association's run on a new instance.
ARTIFACT_READ = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}
GROUP_HOOK = "lp-launch"
DEADLINE = 180.0  # a new instance launched, its install run: generous, the machine is shared
# What a release deploy to a group does without each added action of the deploy role. The reads refuse
# before anything is sent; SuspendProcesses fails before the first batch, having suspended nothing;
# ResumeProcesses leaves the deploy done and the processes suspended, with the command that resumes them;
# the association's writes come after the deploy succeeded and say that new instances still install the
# release live before it.
AUTO_SCALING_WITHOUT = {
    "autoscaling:DescribeAutoScalingInstances": (1, "AUTO_SCALING_GROUPS: nothing was sent"),
    "autoscaling:DescribeAutoScalingGroups": (1, "AUTO_SCALING_GROUPS: nothing was sent"),
    "autoscaling:SuspendProcesses": (1, "Scaling could not be held before the rollout"),
    "autoscaling:ResumeProcesses": (1, "resume them with: aws autoscaling resume-processes --auto-scaling-group-name"),
    "autoscaling:DescribeLifecycleHooks": (1, "AUTO_SCALING_GROUPS: nothing was sent"),
    "ssm:ListAssociations": (1, "AUTO_SCALING_GROUPS: nothing was sent. ListAssociations refused"),
    "ssm:CreateAssociation": (1, "could not be written"),
    "ssm:UpdateAssociation": (1, "could not be written"),
}
NOTHING_SENT = {  # refused before the rollout: no command sent, nothing suspended
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeLifecycleHooks",
    "ssm:ListAssociations",
    "autoscaling:SuspendProcesses",
}


@dataclass
class GroupRelease:
    run: PipeRun
    group: str
    instance_id: str
    association: str


@contextlib.contextmanager
def release_to_group(
    standin: StandIn,
    role_policy: dict[str, Any],
    tmp_path: Path,
    instance_role_policy: dict[str, Any] | None = None,
    association_exists: bool = False,
) -> Iterator[GroupRelease]:
    """A release deploy to an Auto Scaling group of one instance with a launch hook, with IAM enforced
    (for the instances too with ``instance_role_policy``) until the block ends."""
    suffix = uuid.uuid4().hex[:6]
    group, environment, service = f"lpa-{suffix}", f"lpa{suffix}", f"lpa-{suffix}"
    (instance_id,) = standin.create_auto_scaling_group(group, 1)
    standin.client("autoscaling").put_lifecycle_hook(
        AutoScalingGroupName=group,
        LifecycleHookName=GROUP_HOOK,
        LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
        HeartbeatTimeout=HEARTBEAT_MAX,
        DefaultResult="ABANDON",
    )
    release = small_release(standin, suffix, tmp_path)
    association = association_name(service, environment)
    if association_exists:  # an earlier deploy's, targeting nothing now
        standin.client("ssm").create_association(
            Name="AWS-RunShellScript",
            AssociationName=association,
            Targets=[{"Key": "tag:lp-nothing", "Values": [suffix]}],
            Parameters={"commands": ["true"]},
        )
    ci_keys = ci_user_and_deploy_role(standin, suffix, environment, role_policy)
    with standin.iam_enforced(instance_role_policy):
        env = standin.pipe_env(
            **ci_keys,
            ENVIRONMENT=environment,
            SERVICE=service,
            ROLE_ARN="arn:aws:iam::123456789012:role/deploy-{environment}",
            INSTANCE_IDS=instance_id,
            AUTO_SCALING_GROUPS=group,
            **release,
        )
        yield GroupRelease(run_pipe(env, timeout=200), group, instance_id, association)


def with_auto_scaling(without: str | None = None) -> dict[str, Any]:
    joined = (
        DEPLOY_ROLE_POLICY["Statement"]
        + RELEASE_ADDITIONS["Statement"]
        + LOCK_ADDITION["Statement"]
        + AUTO_SCALING_ADDITIONS["Statement"]
    )
    return runnable_in_moto({"Statement": joined}, without)


def instance_role(without: str | None = None) -> dict[str, Any]:
    joined = INSTANCE_ROLE_POLICY["Statement"] + [ARTIFACT_READ, LAUNCH_HOOK_STATEMENT]
    return runnable_in_moto({"Statement": joined}, without)


def associations_named(standin: StandIn, name: str) -> list[dict[str, Any]]:
    listed = standin.client("ssm").list_associations(AssociationFilterList=[{"key": "AssociationName", "value": name}])
    return list(listed["Associations"])


def test_documented_auto_scaling_additions_are_enough(standin: StandIn, tmp_path: Path) -> None:
    with release_to_group(standin, with_auto_scaling(), tmp_path) as deployed:
        pass
    run = deployed.run

    assert run.returncode == 0, run.output
    assert "WARNING" not in run.output
    assert (
        f"Auto Scaling group {deployed.group}: AZRebalance, HealthCheck, ReplaceUnhealthy, InstanceRefresh resumed"
        in (run.output)
    )
    assert f"New instances of {deployed.group} (hook {GROUP_HOOK}) install release" in run.output
    assert standin.suspended_processes(deployed.group) == set()
    assert len(associations_named(standin, deployed.association)) == 1


@pytest.mark.parametrize("action", sorted(AUTO_SCALING_WITHOUT))
def test_each_auto_scaling_action_is_needed_and_named_when_missing(
    standin: StandIn, tmp_path: Path, action: str
) -> None:
    expected_code, expected_text = AUTO_SCALING_WITHOUT[action]
    updating = action == "ssm:UpdateAssociation"
    with release_to_group(
        standin, with_auto_scaling(without=action), tmp_path, association_exists=updating
    ) as deployed:
        pass
    run = deployed.run

    assert run.returncode == expected_code, run.output
    assert expected_text in run.output
    assert action in run.output
    assert "Traceback" not in run.output
    sent = standin.client("ssm").list_commands(InstanceId=deployed.instance_id)["Commands"]
    if action in NOTHING_SENT:
        assert sent == [], "sent anyway"
        assert standin.suspended_processes(deployed.group) == set()
    elif action == "autoscaling:ResumeProcesses":  # left suspended, and the command given resumes them
        resume = re.search(r"resume them with: (aws autoscaling resume-processes [^\n]*)", run.output)
        assert resume and standin.suspended_processes(deployed.group) == set(HELD_PROCESSES)
    else:  # deployed, and the association left as it was: new instances are told nothing new
        assert sent != []
        if updating:
            (row,) = associations_named(standin, deployed.association)
            assert row.get("AssociationVersion") == "1"
        else:
            assert associations_named(standin, deployed.association) == []


def test_auto_scaling_additions_are_each_checked_above() -> None:
    assert set(actions_of(AUTO_SCALING_ADDITIONS)) == set(AUTO_SCALING_WITHOUT)


# The instance role's addition: the association's run on a new instance asks whether a launch hook holds it
# (RecordLifecycleActionHeartbeat) and completes the hook (CompleteLifecycleAction). Without either the
# instance never enters service, and the run fails naming the action.
INSTANCE_ROLE_WITHOUT = {
    "autoscaling:RecordLifecycleActionHeartbeat": "could not tell whether a launch lifecycle hook holds this instance",
    "autoscaling:CompleteLifecycleAction": "when calling the CompleteLifecycleAction operation",
}


def scaled_out_run(standin: StandIn, deployed: GroupRelease) -> tuple[str, dict[str, Any]]:
    """Scale the group out by one; the new instance and its association run's final invocation."""
    standin.client("autoscaling").set_desired_capacity(AutoScalingGroupName=deployed.group, DesiredCapacity=2)
    (new,) = set(standin.group_instances(deployed.group)) - {deployed.instance_id}
    ssm = standin.client("ssm")

    def finished() -> dict[str, Any] | None:
        runs = [r for r in standin.associations.runs if r.instance_id == new]
        if not runs:
            return None
        answer = ssm.get_command_invocation(CommandId=runs[-1].command_id, InstanceId=new)
        return dict(answer) if answer["Status"] in {"Success", "Failed", "TimedOut", "Cancelled"} else None

    wait_until(lambda: finished() is not None, "the association's run on the new instance", DEADLINE, every=0.5)
    invocation = finished()
    assert invocation is not None
    return new, invocation


def group_states(standin: StandIn, group: str) -> dict[str, str]:
    answer = standin.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[group])
    return {i["InstanceId"]: i["LifecycleState"] for i in answer["AutoScalingGroups"][0]["Instances"]}


def test_documented_instance_role_is_enough_for_a_new_instance(standin: StandIn, tmp_path: Path) -> None:
    assert "`s3:GetObject` on the artifacts" in RELEASE_MODE_ROW
    with release_to_group(standin, with_auto_scaling(), tmp_path, instance_role()) as deployed:
        assert deployed.run.returncode == 0, deployed.run.output  # the deploy too ran under the instance role
        new, invocation = scaled_out_run(standin, deployed)
        wait_until(
            lambda: group_states(standin, deployed.group).get(new) == "InService", "InService", DEADLINE, every=0.5
        )

    assert invocation["Status"] == "Success", invocation["StandardOutputContent"] + invocation["StandardErrorContent"]
    assert "lifecycle action completed: CONTINUE" in invocation["StandardOutputContent"]
    assert standin.instance_path(new, "/srv/lp-app/current/version.txt").read_text() == "release\n"


@pytest.mark.parametrize("action", sorted(INSTANCE_ROLE_WITHOUT))
def test_each_instance_role_action_is_needed_and_named_when_missing(
    standin: StandIn, tmp_path: Path, action: str
) -> None:
    with release_to_group(standin, with_auto_scaling(), tmp_path, instance_role(without=action)) as deployed:
        assert deployed.run.returncode == 0, deployed.run.output
        new, invocation = scaled_out_run(standin, deployed)
        state = group_states(standin, deployed.group).get(new)
    said = invocation["StandardOutputContent"] + invocation["StandardErrorContent"]

    assert invocation["Status"] == "Failed", said
    assert INSTANCE_ROLE_WITHOUT[action] in said
    assert action in said
    assert state == "Pending:Wait"  # never in service; the hook's DefaultResult abandons it in time


def test_instance_role_addition_is_each_checked_above() -> None:
    assert set(actions_of({"Statement": [LAUNCH_HOOK_STATEMENT]})) == set(INSTANCE_ROLE_WITHOUT)
