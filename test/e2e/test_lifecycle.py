"""Deploy lifecycle options: dry run, fire-and-forget, a script from the repository."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert "--name /deploy/dry/db_password" in run.output and "    bash deploy.sh" in run.output
    assert "dry-run-secret-value" not in run.output
    assert "Dry run: all checks passed; nothing was sent." in run.output
    assert calls["ssm:SendCommand"] == 0
    assert calls["ssm:GetParameters"] == 1 and calls["ssm:DescribeInstanceInformation"] >= 1  # the checks ran
    assert json.loads((tmp_path / "ssm-deploy-result.json").read_text())["status"] == "dry run"


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


def test_script_outside_the_clone_dir_or_too_big_is_refused(standin: StandIn, tmp_path: Path) -> None:
    (instance_id,) = standin.launch(1)
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "big.sh").write_text("echo x\n" * 20000)
    (clone / "escape.sh").symlink_to("/etc/hostname")
    for script, expected in (
        ("../outside.sh", "is outside the clone directory"),
        ("escape.sh", "is outside the clone directory"),
        ("missing.sh", "is not a file in the clone directory"),
        ("big.sh", "140,000 bytes; at most 65,536 can be sent"),
    ):
        env = standin.pipe_env(INSTANCE_IDS=instance_id, SCRIPT=script, BITBUCKET_CLONE_DIR=str(clone))
        run = run_pipe(env)
        assert run.returncode == 1, run.output
        assert "SCRIPT:" in run.output and expected in run.output, run.output
    assert standin.client("ssm").list_commands(InstanceId=instance_id)["Commands"] == []
