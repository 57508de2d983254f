"""The pipe as a separate process against the stand-in: what a user sees in the build log."""

from __future__ import annotations

import hashlib
import re
import uuid

import pytest
from standin import StandIn
from standin.fleet import UNDELIVERABLE
from support import LivePipe, run_pipe

SECRET = "pr0d-Db-Pa55word!"
ROLE_TEMPLATE = "arn:aws:iam::123456789012:role/deploy-{environment}"


@pytest.fixture
def secret_path(standin: StandIn) -> str:
    """A fresh SecureString under /deploy/<unique>/db_password, encrypted with its own key."""
    environment = f"env{uuid.uuid4().hex[:8]}"
    key = standin.create_key(f"deploy key for {environment}")
    standin.put_secret(f"/deploy/{environment}/db_password", SECRET, key)
    return environment


def commands_sent_to(standin: StandIn, instance_ids: list[str]) -> int:
    ssm = standin.client("ssm")
    return sum(len(ssm.list_commands(InstanceId=i)["Commands"]) for i in instance_ids)


def test_deploys_to_two_instances_and_resolves_the_secret_on_them(standin: StandIn, secret_path: str) -> None:
    ids = standin.launch(2)
    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    env = standin.pipe_env(
        ENVIRONMENT=secret_path,
        ROLE_ARN=ROLE_TEMPLATE,
        INSTANCE_IDS=f"{ids[0]},\n{ids[1]}",
        SECRETS="DB_PASSWORD=/deploy/{environment}/db_password",
        VARIABLES="DEPLOY_ENV={environment}\nGREETING=it's $HOME",
        COMMANDS=(
            'echo "deploying $DEPLOY_ENV"\n'
            "printf '%s' \"$DB_PASSWORD\" | sha256sum | cut -c1-64\n"
            'echo "greeting: $GREETING"\n'
            "echo warn-line >&2"
        ),
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    for instance_id in ids:
        assert f"{instance_id} | deploying {secret_path}" in run.output
        assert f"{instance_id} | {digest}" in run.output  # the instance read the real value
        assert f"{instance_id} | greeting: it's $HOME" in run.output  # quoted, not expanded
        assert f"{instance_id} | [stderr] warn-line" in run.output
    assert "Deployed to 2 instance(s)" in run.output
    assert SECRET not in run.output
    assert "Traceback" not in run.output


def test_one_instance_exiting_3_fails_the_step_and_names_it(standin: StandIn) -> None:
    good, bad = standin.launch(2)
    env = standin.pipe_env(
        INSTANCE_IDS=f"{good} {bad}",
        COMMANDS=f'echo "on $(basename "$HOME")"\nif [ "$(basename "$HOME")" = "{bad}" ]; then exit 3; fi',
    )
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert f"Deploy failed on 1 of 2 instance(s): {bad}: Failed (exit 3)" in run.output
    assert re.search(rf"{good} +Success +0 ", run.output)
    assert re.search(rf"{bad} +Failed +3 ", run.output)
    assert "Traceback" not in run.output


def test_execution_timeout_fails_with_timed_out_and_kills_the_process(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    env = standin.pipe_env(INSTANCE_IDS=instance_id, EXECUTION_TIMEOUT="1", COMMANDS="echo started\nsleep 30")
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert f"{instance_id}: TimedOut/ExecutionTimedOut" in run.output
    command_id = standin.sent_commands()[-1].command_id
    assert standin.sent_command(command_id).runs[instance_id].killed


def test_undeliverable_instance_fails_the_step(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1, delivery=UNDELIVERABLE)
    run = run_pipe(standin.pipe_env(INSTANCE_IDS=instance_id, COMMANDS="echo hi"))

    assert run.returncode == 1, run.output
    assert f"{instance_id}: Failed/Undeliverable" in run.output


def test_offline_agent_is_refused_before_anything_is_sent(standin: StandIn) -> None:
    online, offline = standin.launch(2)
    standin.instance(offline).ping_status = "ConnectionLost"
    unmanaged = "i-0123456789abcdef0"
    run = run_pipe(standin.pipe_env(INSTANCE_IDS=f"{online} {offline} {unmanaged}", COMMANDS="echo hi"))

    assert run.returncode == 1, run.output
    assert f"SSM Agent not online: {offline} (ConnectionLost)" in run.output
    assert f"not managed by SSM in {standin.region}: {unmanaged}" in run.output
    assert "nothing was sent" in run.output
    assert commands_sent_to(standin, [online, offline]) == 0


def test_missing_parameter_is_refused_before_anything_is_sent(standin: StandIn, secret_path: str) -> None:
    ids = standin.launch(1)
    env = standin.pipe_env(
        ENVIRONMENT=secret_path,
        INSTANCE_IDS=ids[0],
        SECRETS="DB_PASSWORD=/deploy/{environment}/db_password\nAPI_KEY=/deploy/{environment}/api_key",
        COMMANDS="echo hi",
    )
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert f"Parameter(s) not found: /deploy/{secret_path}/api_key (for API_KEY)" in run.output
    assert commands_sent_to(standin, ids) == 0


def test_kms_denial_names_the_key_policy_fix_and_sends_nothing(standin: StandIn) -> None:
    ids = standin.launch(1)
    key = standin.create_key("locked key")
    standin.put_secret("/deploy/locked/token", "locked-value-123", key)
    standin.service.deny_decrypt(key, caller_contains="assumed-role/deploy-locked/")
    env = standin.pipe_env(
        ENVIRONMENT="locked",
        ROLE_ARN=ROLE_TEMPLATE,
        INSTANCE_IDS=ids[0],
        SECRETS="TOKEN=/deploy/{environment}/token",
        COMMANDS="echo hi",
    )
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert "cannot decrypt them: KMS denied kms:Decrypt" in run.output
    assert "key policy" in run.output
    assert commands_sent_to(standin, ids) == 0


def test_role_arn_follows_the_environment(standin: StandIn) -> None:
    ids = standin.launch(1)
    env = standin.pipe_env(
        BITBUCKET_DEPLOYMENT_ENVIRONMENT="staging",
        ROLE_ARN=ROLE_TEMPLATE,
        INSTANCE_IDS=ids[0],
        COMMANDS="true",
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    sent = standin.sent_commands()[-1]
    assert sent.caller_arn == "arn:aws:sts::123456789012:assumed-role/deploy-staging/ssm-deploy-web-api-42"
    assert "Deploying as arn:aws:sts::123456789012:assumed-role/deploy-staging/" in run.output


def test_oidc_then_environment_role(standin: StandIn) -> None:
    ids = standin.launch(1)
    env = standin.pipe_env(
        ENVIRONMENT="prod",
        AWS_OIDC_ROLE_ARN="arn:aws:iam::123456789012:role/bitbucket-oidc",
        BITBUCKET_STEP_OIDC_TOKEN="eyJhbGciOiJSUzI1NiJ9.oidc-token-value.signature",
        ROLE_ARN=ROLE_TEMPLATE,
        INSTANCE_IDS=ids[0],
        COMMANDS="true",
    )
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert "Authenticating with a OpenID Connect (OIDC) Web Identity Provider" in run.output
    assert "from arn:aws:sts::123456789012:assumed-role/bitbucket-oidc/" in run.output
    assert "/deploy-prod/" in standin.sent_commands()[-1].caller_arn
    assert "oidc-token-value" not in run.output


def test_oidc_without_token_warns_and_uses_static_keys(standin: StandIn) -> None:
    ids = standin.launch(1)
    env = standin.pipe_env(
        AWS_OIDC_ROLE_ARN="arn:aws:iam::123456789012:role/bitbucket-oidc",
        INSTANCE_IDS=ids[0],
        COMMANDS="true",
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert "BITBUCKET_STEP_OIDC_TOKEN is missing: add `oidc: true`" in run.output
    assert standin.sent_commands()[-1].caller_arn.endswith(":user/AKIASTANDINADMIN0000")


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"INSTANCE_IDS": "i-123 web-1"}, "INSTANCE_IDS:\n- 'i-123', 'web-1' are not instance ids"),
        ({"COMMANDS": ""}, "COMMANDS:\n- is empty: give the shell commands to run on the instances (or SCRIPT)"),
        ({"EXECUTION_TIMEOUT": "ten"}, "EXECUTION_TIMEOUT:\n- must be a whole number"),
        ({"ROLE_ARN": "deploy-{stage}"}, "ROLE_ARN:\n- unknown placeholder {stage}"),
        ({"SECRETS": "DB_PASSWORD"}, "SECRETS:\n- entry 'DB_PASSWORD' has no '='"),
        ({"DEBUG": "sometimes"}, "DEBUG:\n- must be true or false"),
    ],
)
def test_bad_variables_are_refused_by_name_without_traceback(
    standin: StandIn, variables: dict[str, str], expected: str
) -> None:
    (instance_id,) = standin.launch(1)
    env = standin.pipe_env(INSTANCE_IDS=instance_id, COMMANDS="echo hi")
    env.update(variables)
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert "Validation errors:" in run.output
    assert expected in run.output
    assert "Traceback" not in run.output
    assert commands_sent_to(standin, [instance_id]) == 0


def test_working_directory_and_yaml_list_of_instances(standin: StandIn) -> None:
    ids = standin.launch(2)
    for instance_id in ids:  # the folder exists on each instance (its own /srv)
        standin.instance_path(instance_id, "/srv/web-api").mkdir()
    env = standin.pipe_env(
        INSTANCE_IDS_COUNT="2",
        INSTANCE_IDS_0=ids[0],
        INSTANCE_IDS_1=ids[1],
        WORKING_DIRECTORY="/srv/web-api",
        COMMANDS="pwd",
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert f"{ids[0]} | /srv/web-api" in run.output
    assert f"{ids[1]} | /srv/web-api" in run.output


def test_output_beyond_the_ssm_field_limit_arrives_complete_through_cloudwatch(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    env = standin.pipe_env(INSTANCE_IDS=instance_id, COMMANDS="head -c 30000 /dev/zero | tr '\\0' 'x'; echo; echo end")
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert "x" * 30000 + "\n" in run.output
    assert "end\n" in run.output
    assert "character limit" not in run.output


def test_without_streaming_the_capped_output_is_flagged(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    env = standin.pipe_env(
        INSTANCE_IDS=instance_id,
        STREAM_OUTPUT="false",
        COMMANDS="head -c 30000 /dev/zero | tr '\\0' 'x'; echo",
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert "x" * 24000 in run.output and "x" * 24001 not in run.output
    assert "reached SSM's 24,000-character limit" in run.output
    assert "Streaming output" not in run.output


def test_output_lines_appear_while_the_command_still_runs(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    flag = standin.instance(instance_id).home / "release"
    live = LivePipe(
        standin.pipe_env(
            INSTANCE_IDS=instance_id,
            COMMANDS=f"echo step-one\nwhile [ ! -e {flag} ]; do sleep 0.05; done\necho step-two",
        )
    )
    live.wait_for_line("step-one")
    assert "step-two" not in live.output
    flag.touch()  # only now may the remote command finish
    run = live.finish()

    assert run.returncode == 0, run.output
    # Live Tail may deliver the last second of output after the final status line, never after the summary
    assert run.output.index("step-one") < run.output.index("step-two") < run.output.index("Summary of command")


def test_without_streaming_the_full_output_comes_from_s3(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    bucket = f"deploy-output-{uuid.uuid4().hex[:8]}"
    standin.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": standin.region})
    env = standin.pipe_env(
        INSTANCE_IDS=instance_id,
        STREAM_OUTPUT="false",
        OUTPUT_S3_BUCKET=bucket,
        OUTPUT_S3_PREFIX="web-api/{environment}",
        ENVIRONMENT="prod",
        COMMANDS="head -c 30000 /dev/zero | tr '\\0' 'x'; echo; echo last-line; echo warn >&2",
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert f"(from s3://{bucket})" in run.output
    assert "x" * 30000 + "\n" in run.output
    assert "last-line" in run.output and "[stderr] warn" in run.output
    assert "character limit" not in run.output
    sent = standin.sent_commands()[-1].request
    assert (sent["OutputS3BucketName"], sent["OutputS3KeyPrefix"]) == (bucket, "web-api/prod")


def test_missing_working_directory_fails_fast_with_the_agents_message(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    run = run_pipe(standin.pipe_env(INSTANCE_IDS=instance_id, WORKING_DIRECTORY="/nonexistent/app", COMMANDS="pwd"))

    assert run.returncode == 1, run.output
    assert "[stderr] failed to run commands:" in run.output and "/nonexistent/app" in run.output
    assert "CloudWatch did not deliver" not in run.output  # the message was streamed: no wait for it
