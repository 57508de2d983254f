"""Deploy lifecycle options: dry run, fire-and-forget, a script from the repository."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from standin import StandIn
from support import run_pipe


def test_dry_run_checks_everything_prints_the_plan_and_sends_nothing(standin: StandIn, tmp_path: Path) -> None:
    ids = standin.launch(2)
    standin.put_secret("/deploy/dry/db_password", "dry-run-secret-value", standin.create_key("dry"))
    before = standin.calls_snapshot()
    env = standin.pipe_env(
        DRY_RUN="true",
        ENVIRONMENT="dry",
        ROLE_ARN="arn:aws:iam::123456789012:role/deploy-{environment}",
        INSTANCE_IDS=" ".join(ids),
        SECRETS="DB_PASSWORD=/deploy/{environment}/db_password",
        COMMANDS="bash deploy.sh",
        BITBUCKET_CLONE_DIR=str(tmp_path),
    )
    run = run_pipe(env)
    calls = standin.calls_snapshot() - before

    assert run.returncode == 0, run.output
    assert "Dry run: nothing is sent. The plan:" in run.output
    assert "role:      arn:aws:sts::123456789012:assumed-role/deploy-dry/" in run.output
    assert f"targets:   2 instance(s): {ids[0]}, {ids[1]}" in run.output
    assert "    bash deploy.sh" in run.output  # the COMMANDS as given; the generated script only with DEBUG
    assert "--name /deploy/dry/db_password" not in run.output and "DEBUG: 'true' prints it" in run.output
    assert "dry-run-secret-value" not in run.output
    assert "Dry run: all checks passed; nothing was sent." in run.output
    assert calls["ssm:SendCommand"] == 0
    assert calls["ssm:GetParameters"] == 1 and calls["ssm:DescribeInstanceInformation"] >= 1  # the checks ran
    assert json.loads((tmp_path / "ssm-deploy-result.json").read_text())["status"] == "dry run"

    debug = run_pipe({**env, "DEBUG": "true"})

    assert debug.returncode == 0, debug.output
    assert debug.output.count("--name /deploy/dry/db_password") == 1  # the script, printed once
    assert "dry-run-secret-value" not in debug.output


def test_dry_run_still_fails_on_what_a_deploy_would_fail_on(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    standin.instance(instance_id).ping_status = "ConnectionLost"
    run = run_pipe(standin.pipe_env(DRY_RUN="true", INSTANCE_IDS=instance_id, COMMANDS="true"))

    assert run.returncode == 1, run.output
    assert "SSM Agent not online" in run.output


def test_wait_false_sends_and_returns_with_the_command_id(standin: StandIn, tmp_path: Path) -> None:
    (instance_id,) = standin.launch(1)
    run = run_pipe(
        standin.pipe_env(WAIT="false", INSTANCE_IDS=instance_id, COMMANDS="sleep 5", BITBUCKET_CLONE_DIR=str(tmp_path))
    )
    command_id = standin.sent_commands()[-1].command_id

    assert run.returncode == 0, run.output
    assert f"Sent command {command_id}; not waiting for it (WAIT: 'false')." in run.output
    assert f"run-command/{command_id}?region=" in run.output
    assert standin.client("ssm").get_command_invocation(CommandId=command_id, InstanceId=instance_id)["Status"] in (
        "Pending",
        "InProgress",
    )
    document = json.loads((tmp_path / "ssm-deploy-result.json").read_text())
    assert (document["status"], document["command_ids"]) == ("sent", [command_id])
    standin.client("ssm").cancel_command(CommandId=command_id)


def test_script_from_the_repository_is_the_command_body(standin: StandIn, tmp_path: Path) -> None:
    (instance_id,) = standin.launch(1)
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "release.sh").write_text('#!/usr/bin/env bash\necho "release $RELEASE from repo script"\n')
    env = standin.pipe_env(
        INSTANCE_IDS=instance_id, SCRIPT="deploy/release.sh", VARIABLES="RELEASE=42", BITBUCKET_CLONE_DIR=str(tmp_path)
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert "release 42 from repo script" in run.output


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("../outside.sh", "is outside the clone directory"),
        ("escape.sh", "is outside the clone directory"),
        ("missing.sh", "is not a file in the clone directory"),
        ("big.sh", "140,000 bytes; at most 65,536 can be sent"),
    ],
)
def test_script_outside_the_clone_dir_or_too_big_is_refused(
    standin: StandIn, tmp_path: Path, script: str, expected: str
) -> None:
    (instance_id,) = standin.launch(1)
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "big.sh").write_text("echo x\n" * 20000)
    (clone / "escape.sh").symlink_to("/etc/hostname")
    env = standin.pipe_env(INSTANCE_IDS=instance_id, SCRIPT=script, BITBUCKET_CLONE_DIR=str(clone))
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert "SCRIPT:" in run.output and expected in run.output, run.output
    assert standin.client("ssm").list_commands(InstanceId=instance_id)["Commands"] == []


def marker(standin: StandIn, instance_id: str, name: str) -> Path:
    return standin.instance(instance_id).home / name


def test_passing_health_check_completes_the_deploy(standin: StandIn, tmp_path: Path) -> None:
    ids = standin.launch(2)
    env = standin.pipe_env(
        INSTANCE_IDS=" ".join(ids),
        COMMANDS='cd "$HOME" && touch deployed',
        HEALTHCHECK_COMMANDS='cd "$HOME" && test -e deployed && echo healthy',
        ROLLBACK_COMMANDS="touch rolled-back",
        BITBUCKET_CLONE_DIR=str(tmp_path),
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert "Health check on 2 instance(s)" in run.output
    assert "Deployed to 2 instance(s) and passed the health check." in run.output
    for instance_id in ids:
        assert f"{instance_id} | healthy" in run.output
        assert not marker(standin, instance_id, "rolled-back").exists()
    document = json.loads((tmp_path / "ssm-deploy-result.json").read_text())
    assert (document["health_check"], document["rollback"]) == ("passed", "not run")


def test_failing_health_check_on_one_instance_rolls_back_both(standin: StandIn, tmp_path: Path) -> None:
    healthy, sick = standin.launch(2)
    env = standin.pipe_env(
        INSTANCE_IDS=f"{healthy} {sick}",
        COMMANDS='cd "$HOME" && echo v2 > version',
        HEALTHCHECK_COMMANDS=f'[ "$(basename "$HOME")" != "{sick}" ] || {{ echo "503 from /health"; exit 1; }}',
        HEALTHCHECK_RETRIES="2",
        HEALTHCHECK_INTERVAL="0",
        ROLLBACK_COMMANDS='cd "$HOME" && echo v1 > version && echo "rolled back to v1"',
        BITBUCKET_CLONE_DIR=str(tmp_path),
    )
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert "health check attempt 1 failed (exit 1); retrying in 0 s" in run.output
    assert f"the health check failed on 1 of 2 instance(s): {sick}: Failed (exit 1)" in run.output
    assert "Rollback on the 2 instance(s) that received the deploy" in run.output
    assert "Rollback succeeded on all 2 instance(s)." in run.output
    for instance_id in (healthy, sick):
        assert f"{instance_id} | rolled back to v1" in run.output
        assert marker(standin, instance_id, "version").read_text() == "v1\n"
    document = json.loads((tmp_path / "ssm-deploy-result.json").read_text())
    assert (document["status"], document["health_check"], document["rollback"]) == ("failed", "failed", "succeeded")
    assert len(document["rollback_command_ids"]) == 1


def test_failed_deploy_rolls_back_only_where_it_ran_and_reports_a_failed_rollback(standin: StandIn) -> None:
    service = f"rb-{uuid.uuid4().hex[:6]}"
    first, second, third = standin.launch(3, name="api", tags={"Service": service})
    env = standin.pipe_env(
        TARGETS=f"tag:Service={service}",
        MAX_CONCURRENCY="1",
        MAX_ERRORS="0",
        COMMANDS=f'cd "$HOME" && touch deployed && [ "$(basename "$HOME")" != "{second}" ]',
        ROLLBACK_COMMANDS=f'cd "$HOME" && touch rolled-back && [ "$(basename "$HOME")" != "{first}" ]',
    )
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert f"Deploy failed on 1 of 3 instance(s): {second}: Failed (exit 1)." in run.output
    assert "Rollback on the 2 instance(s) that received the deploy" in run.output
    assert marker(standin, first, "rolled-back").exists() and marker(standin, second, "rolled-back").exists()
    assert not marker(standin, third, "rolled-back").exists()  # skipped at MAX_ERRORS: nothing to undo
    assert f"ROLLBACK FAILED on 1 of 2 instance(s): {first}: Failed (exit 1); they need attention." in run.output


def test_dry_run_plan_shows_health_check_and_rollback(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    env = standin.pipe_env(
        DRY_RUN="true",
        INSTANCE_IDS=instance_id,
        COMMANDS="deploy",
        HEALTHCHECK_COMMANDS="curl -fsS localhost:3000/health",
        ROLLBACK_COMMANDS="rollback",
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert "then a health check (3 attempt(s), 5 s apart):\n    curl -fsS localhost:3000/health" in run.output
    assert "on failure, a rollback on the instances that received the deploy:\n    rollback" in run.output


def test_parameters_path_exports_every_parameter_under_it(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    environment = f"pp{uuid.uuid4().hex[:6]}"
    key = standin.create_key("path")
    standin.put_secret(f"/deploy/{environment}/db_password", "path-db-value", key)
    standin.put_secret(f"/deploy/{environment}/stripe-api.key", "path-stripe-value", key)
    env = standin.pipe_env(
        ENVIRONMENT=environment,
        INSTANCE_IDS=instance_id,
        PARAMETERS_PATH="/deploy/{environment}",
        COMMANDS='echo "db=${#DB_PASSWORD} stripe=${#STRIPE_API_KEY}"; echo "leak $STRIPE_API_KEY"',
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert f"PARAMETERS_PATH /deploy/{environment}/: DB_PASSWORD <- /deploy/{environment}/db_password" in run.output
    assert "db=13 stripe=17" in run.output  # read on the instance
    assert "leak ****" in run.output
    assert "path-db-value" not in run.output and "path-stripe-value" not in run.output
    sent = str(standin.sent_commands()[-1].request["Parameters"])
    assert f"/deploy/{environment}/stripe-api.key" in sent and "path-stripe-value" not in sent


def test_parameters_path_name_collisions_are_refused(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    environment = f"pc{uuid.uuid4().hex[:6]}"
    key = standin.create_key("collide")
    standin.put_secret(f"/deploy/{environment}/db-password", "a-value", key)
    standin.put_secret(f"/deploy/{environment}/db_password", "b-value", key)
    standin.put_secret(f"/deploy/{environment}/token", "c-value", key)
    env = standin.pipe_env(
        ENVIRONMENT=environment,
        INSTANCE_IDS=instance_id,
        PARAMETERS_PATH="/deploy/{environment}/",
        VARIABLES="TOKEN=plain",
        COMMANDS="true",
    )
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert "PARAMETERS_PATH: nothing was sent. Names collide: DB_PASSWORD from" in run.output
    assert f"TOKEN from /deploy/{environment}/token is also set by SECRETS or VARIABLES" in run.output
    assert standin.client("ssm").list_commands(InstanceId=instance_id)["Commands"] == []


def create_document(standin: StandIn) -> str:
    name = f"Acme-Deploy-{uuid.uuid4().hex[:6]}"
    content = {
        "schemaVersion": "2.2",
        "description": "Deploy a release of web-api",
        "parameters": {"release": {"type": "String"}, "channel": {"type": "String", "default": "stable"}},
        "mainSteps": [
            {
                "action": "aws:runShellScript",
                "name": "deploy",
                "inputs": {"runCommand": ["echo 'deploying {{ release }} from {{ channel }}'"]},
            }
        ],
    }
    standin.client("ssm").create_document(Content=json.dumps(content), Name=name, DocumentType="Command")
    return name


def test_a_custom_document_runs_with_its_parameters(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    document = create_document(standin)
    env = standin.pipe_env(
        INSTANCE_IDS=instance_id,
        DOCUMENT_NAME=document,
        DOCUMENT_VERSION="1",
        DOCUMENT_PARAMETERS='{"release": "2026.11.25"}',
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert "deploying 2026.11.25 from stable" in run.output
    sent = standin.sent_commands()[-1].request
    assert (sent["DocumentName"], sent["DocumentVersion"], sent["Parameters"]) == (
        document,
        "1",
        {"release": ["2026.11.25"]},
    )


def test_an_unknown_document_is_refused_clearly(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    run = run_pipe(standin.pipe_env(INSTANCE_IDS=instance_id, DOCUMENT_NAME="Acme-Missing"))

    assert run.returncode == 1, run.output
    assert "DOCUMENT_NAME: SSM refused Acme-Missing (Document with name Acme-Missing does not exist.)" in run.output


def test_custom_document_refuses_the_script_variables_by_name(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    env = standin.pipe_env(INSTANCE_IDS=instance_id, DOCUMENT_NAME="Acme-Deploy", COMMANDS="echo", SECRETS="A=/a/b")
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert "COMMANDS:\n- works only with DOCUMENT_NAME AWS-RunShellScript or AWS-RunPowerShellScript" in run.output
    assert "SECRETS:\n- works only with DOCUMENT_NAME" in run.output


def test_powershell_commands_are_wrapped_for_windows(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    standin.put_secret("/deploy/win/db_password", "windows-secret-value", standin.create_key("win"))
    env = standin.pipe_env(
        INSTANCE_IDS=instance_id,
        ENVIRONMENT="win",
        DOCUMENT_NAME="AWS-RunPowerShellScript",
        DOCUMENT_PARAMETERS='{"workingDirectory": "C:\\\\apps\\\\web"}',
        SECRETS="DB_PASSWORD=/deploy/{environment}/db_password",
        VARIABLES="GREETING=it's $HOME",
        COMMANDS="& C:\\deploy\\deploy.ps1",
    )
    run = run_pipe(env)
    sent = standin.sent_commands()[-1].request

    assert sent["DocumentName"] == "AWS-RunPowerShellScript"
    script = "\n".join(sent["Parameters"]["commands"])
    assert (
        # pinned to the version the pipe read before sending (one value for every instance of the deploy)
        "$ssm_deploy_secret_1 = (Get-SSMParameter -Name '/deploy/win/db_password:1' -WithDecryption $true "
        "-Region 'eu-west-1' -ErrorAction Stop).Value"
    ) in script
    assert "$env:DB_PASSWORD = $ssm_deploy_secret_1" in script
    assert "$env:GREETING = 'it''s $HOME'" in script
    assert script.endswith("& C:\\deploy\\deploy.ps1")
    assert sent["Parameters"]["workingDirectory"] == ["C:\\apps\\web"]
    assert "windows-secret-value" not in str(sent) and "windows-secret-value" not in run.output
    # the stand-in runs no PowerShell: the invocation fails, and the step with it
    assert run.returncode == 1, run.output
    assert f"{instance_id}: Failed (exit 1)" in run.output
