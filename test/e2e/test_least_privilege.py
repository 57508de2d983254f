"""The README's deploy-role policy is enough for a deploy, and each of its actions is needed.

moto enforces actions and principals, but sees every SSM and Logs resource as "*" and does not
evaluate conditions, so the policy is run with its resources widened to "*" and its conditions
dropped; resource scoping is checked on the document's shape instead.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from standin import StandIn
from support import PipeRun, run_pipe

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
# What a release deploy does without each added action. AbortMultipartUpload only runs when a
# multipart upload fails, which a small artifact never starts. Without s3:ListBucket, S3 answers a
# HeadObject of a missing key with 403 instead of 404 (S3 API Reference, HeadObject); moto answers
# 404 whatever the policy, so that path is covered by a stubbed client in test_unit_release_artifact.py.
RELEASE_WITHOUT = {
    "s3:GetObject": (1, "s3:GetObject"),
    "s3:PutObject": (1, "s3:PutObject"),
    "ssm:GetParameterHistory": (1, "ssm:GetParameterHistory"),
    "ssm:PutParameter": (0, "ssm:PutParameter"),
}


def release_with(standin: StandIn, role_policy: dict[str, Any], tmp_path: Path) -> PipeRun:
    suffix = uuid.uuid4().hex[:6]
    (instance_id,) = standin.launch(1)
    environment = f"lpr{suffix}"
    bucket = f"lp-artifacts-{suffix}"
    standin.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": standin.region})
    data = b"release\n"
    with tarfile.open(tmp_path / "app.tgz", "w:gz") as archive:
        info = tarfile.TarInfo("version.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    ci_keys = ci_user_and_deploy_role(standin, suffix, environment, role_policy)
    with standin.iam_enforced():
        env = standin.pipe_env(
            **ci_keys,
            ENVIRONMENT=environment,
            ROLE_ARN="arn:aws:iam::123456789012:role/deploy-{environment}",
            INSTANCE_IDS=instance_id,
            ARTIFACT="app.tgz",
            ARTIFACT_BUCKET=bucket,
            APP_DIR="/srv/lp-app",
            ACTIVATE_COMMANDS="cat version.txt",
            BITBUCKET_CLONE_DIR=str(tmp_path),
        )
        return run_pipe(env)


def with_release(without: str | None = None) -> dict[str, Any]:
    joined = {"Statement": DEPLOY_ROLE_POLICY["Statement"] + RELEASE_ADDITIONS["Statement"]}
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
    assert set(actions_of(RELEASE_ADDITIONS)) - set(RELEASE_WITHOUT) == {"s3:AbortMultipartUpload", "s3:ListBucket"}


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
    "ssm:PutParameter": (1, "LOCK: nothing was sent"),
    "ssm:GetParameter": (0, "ssm:GetParameter"),
    "ssm:DeleteParameter": (0, "ssm:DeleteParameter"),
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
    joined = {"Statement": DEPLOY_ROLE_POLICY["Statement"] + LOAD_BALANCER_ADDITIONS["Statement"]}
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
    assert set(actions_of(LOAD_BALANCER_ADDITIONS)) == set(LOAD_BALANCER_WITHOUT)
