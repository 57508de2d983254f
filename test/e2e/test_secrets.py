"""No secret value or session credential in anything the pipe emits, whatever happens."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest
from standin import StandIn
from support import LivePipe, PipeRun, run_pipe

SECRET = "s3cret-Value-#" + uuid.uuid4().hex[:8]
OIDC_TOKEN = "eyJraWQiOiJ0ZXN0In0.oidc-" + uuid.uuid4().hex + ".sig"
LEAK = 'echo "password is $DB_PASSWORD"; printf "%s\\n" "$DB_PASSWORD" >&2'

SCENARIOS = {
    "success": ({}, LEAK, 0),
    "remote failure": ({}, LEAK + "\nexit 7", 1),
    # long enough for the instance's AWS CLI to read the secret on a loaded machine, then the sleep times out
    "execution timeout": ({"EXECUTION_TIMEOUT": "8"}, LEAK + "\nsleep 60", 1),
    "debug on": ({"DEBUG": "true"}, LEAK, 0),
    "debug on and failure": ({"DEBUG": "true", "STREAM_OUTPUT": "false"}, LEAK + "\nexit 3", 1),
}


@pytest.fixture(scope="module")
def secret_environment(standin: StandIn) -> str:
    environment = f"sec{uuid.uuid4().hex[:6]}"
    standin.put_secret(f"/deploy/{environment}/db_password", SECRET, standin.create_key("secrets matrix"))
    return environment


def deploy_env(standin: StandIn, environment: str, instance_id: str, **extra: str) -> dict[str, str]:
    env = standin.pipe_env(
        ENVIRONMENT=environment,
        ROLE_ARN="arn:aws:iam::123456789012:role/deploy-{environment}",
        AWS_OIDC_ROLE_ARN="arn:aws:iam::123456789012:role/bitbucket-oidc",
        BITBUCKET_STEP_OIDC_TOKEN=OIDC_TOKEN,
        INSTANCE_IDS=instance_id,
        SECRETS="DB_PASSWORD=/deploy/{environment}/db_password",
        **extra,
    )
    return env


def assert_nothing_leaked(standin: StandIn, run: PipeRun, instance_id: str) -> None:
    emitted = run.output
    assert SECRET not in emitted
    assert OIDC_TOKEN not in emitted
    assert standin.admin_keys["aws_secret_access_key"] not in emitted  # the static keys in the environment
    for _, secret_key, token in standin.issued_credentials():
        assert secret_key not in emitted
        assert token not in emitted
    history = standin.client("ssm").list_commands(InstanceId=instance_id)["Commands"]
    assert history, "the command was not sent"
    for command in history:
        assert SECRET not in str(command["Parameters"])
        assert SECRET not in str(command.get("Comment", ""))
    for sent in standin.sent_commands():
        assert SECRET not in str(sent.request)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_secret_never_emitted(standin: StandIn, secret_environment: str, scenario: str) -> None:
    extra, commands, expected_code = SCENARIOS[scenario]
    (instance_id,) = standin.launch(1)
    run = run_pipe(deploy_env(standin, secret_environment, instance_id, COMMANDS=commands, **extra))

    assert run.returncode == expected_code, run.output
    assert "password is ****" in run.output  # the instance really had the value; the log masks it
    if extra.get("DEBUG") == "true":
        assert "DEBUG:" in run.output  # debug output really was on
    history = str(standin.client("ssm").list_commands(InstanceId=instance_id)["Commands"])
    assert f"/deploy/{secret_environment}/db_password" in history  # the parameter travels by name
    assert_nothing_leaked(standin, run, instance_id)


def test_secret_never_emitted_when_cancelled(standin: StandIn, secret_environment: str) -> None:
    (instance_id,) = standin.launch(1)
    live = LivePipe(deploy_env(standin, secret_environment, instance_id, DEBUG="true", COMMANDS=LEAK + "\nsleep 60"))
    live.wait_for_line("password is ****")  # printed by the instance, masked
    live.signal(signal.SIGTERM)
    run = live.finish()

    assert run.returncode == 1, run.output
    assert "The command was cancelled" in run.output
    assert_nothing_leaked(standin, run, instance_id)


def test_no_credential_file_is_left_behind(standin: StandIn, secret_environment: str, tmp_path: Path) -> None:
    (instance_id,) = standin.launch(1)
    env = deploy_env(
        standin, secret_environment, instance_id, COMMANDS="true", TMPDIR=str(tmp_path), HOME=str(tmp_path)
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and OIDC_TOKEN in p.read_text(errors="ignore")]
    assert leftovers == []
