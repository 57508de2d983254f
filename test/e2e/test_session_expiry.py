"""AWS sessions that end mid-deploy: renewed while they can be, and reported like lost contact
with AWS (the command may still be running) when they cannot, with no traceback and no wrong fix."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from standin import StandIn
from support import LivePipe, run_pipe

ROLE_TEMPLATE = "arn:aws:iam::123456789012:role/deploy-{environment}"
OIDC_ROLE = "arn:aws:iam::123456789012:role/bitbucket-oidc"


def step_token(lifetime: float) -> str:
    """A Bitbucket step OIDC token (a JWT) that expires ``lifetime`` seconds from now."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    claims = {"sub": "{repo}:{env}:{step}", "iat": int(time.time()), "exp": int(time.time() + lifetime)}
    return f"{part({'alg': 'RS256', 'kid': 'bitbucket'})}.{part(claims)}.c2lnbmF0dXJl"


def assert_reported_like_lost_contact(output: str, command_id: str) -> None:
    assert f"while following command {command_id}" in output, output
    assert "The command may still be running on the instances" in output
    assert f"run-command/{command_id}?region=" in output  # its console link
    assert "Traceback" not in output
    assert "trust policy" not in output
    assert "Fix: allow" not in output  # an ended session is not a missing permission


def test_temporary_keys_that_end_mid_follow_name_the_command_that_may_still_run(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    keys = standin.temporary_keys()
    env = standin.pipe_env(INSTANCE_IDS=instance_id, COMMANDS="echo started\nsleep 120", **keys)
    live = LivePipe(env)
    live.wait_for_line("started")
    standin.expire_session(keys["AWS_ACCESS_KEY_ID"])
    run = live.finish(timeout=90)
    command_id = standin.sent_commands()[-1].command_id
    standin.client("ssm").cancel_command(CommandId=command_id)

    assert run.returncode == 1, run.output
    assert "AWS_SESSION_TOKEN is set: these temporary keys cannot be renewed" in run.output  # said up front
    assert "The AWS credentials expired" in run.output
    assert_reported_like_lost_contact(run.output, command_id)


def test_a_deploy_role_session_that_cannot_be_renewed_mid_follow_names_the_command(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    keys = standin.temporary_keys("ci-base")
    env = standin.pipe_env(
        ENVIRONMENT="prod", ROLE_ARN=ROLE_TEMPLATE, INSTANCE_IDS=instance_id, COMMANDS="echo started\nsleep 120", **keys
    )
    with standin.short_sessions(2):  # the deploy role's session is renewed from the base keys every few calls
        live = LivePipe(env)
        live.wait_for_line("started")
        standin.expire_session(keys["AWS_ACCESS_KEY_ID"])
        run = live.finish(timeout=90)
    command_id = standin.sent_commands()[-1].command_id
    standin.client("ssm").cancel_command(CommandId=command_id)

    assert run.returncode == 1, run.output
    assert "could not renew the session of the deploy role" in run.output
    assert_reported_like_lost_contact(run.output, command_id)


def test_the_oidc_session_is_renewed_from_the_step_token_while_it_is_valid(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    env = standin.pipe_env(
        ENVIRONMENT="prod",
        AWS_OIDC_ROLE_ARN=OIDC_ROLE,
        BITBUCKET_STEP_OIDC_TOKEN=step_token(lifetime=120),
        ROLE_ARN=ROLE_TEMPLATE,
        INSTANCE_IDS=instance_id,
        COMMANDS="sleep 5\necho still-followed",
    )
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    standin.create_role("bitbucket-oidc")  # IAM's default maximum session duration: 1 h
    before = standin.calls_snapshot()
    with standin.short_sessions(2):  # both sessions end many times during the deploy
        run = run_pipe(env)
    calls = standin.calls_snapshot() - before

    assert run.returncode == 0, run.output
    assert "still-followed" in run.output
    assert calls["sts:AssumeRoleWithWebIdentity"] >= 2  # the step's token was exchanged again
    # said up front: the token ends long before this deploy's bound (timeouts of 600 s + 3600 s)
    assert "The AWS session may end before this deploy does" in run.output
    assert "AWS refused a 1 h 12 min session: the role's maximum session duration is shorter" in run.output
    assert "Fix: raise the maximum session duration of arn:aws:iam::123456789012:role/bitbucket-oidc" in run.output
    assert "Traceback" not in run.output
