"""Fleets: many instances, tag targets, rolling deploys, and the result file for later steps."""

from __future__ import annotations

import json
import re
from pathlib import Path

from standin import StandIn
from support import run_pipe


def test_more_than_fifty_instances_are_sent_in_commands_of_fifty(standin: StandIn, tmp_path: Path) -> None:
    ids = standin.launch(60)
    result = tmp_path / "result.json"
    env = standin.pipe_env(
        INSTANCE_IDS="\n".join(ids), COMMANDS='echo "on $(basename "$HOME")"', RESULT_FILE=str(result)
    )
    run = run_pipe(env, timeout=300)

    assert run.returncode == 0, run.output
    sent = standin.sent_commands()[-2:]
    assert [len(command.request["InstanceIds"]) for command in sent] == [50, 10]
    for instance_id in ids:
        assert f"| on {instance_id}" in run.output
    assert "Progress: 60/60 finished (60 Success)" in run.output
    document = json.loads(result.read_text())
    assert document["status"] == "succeeded"
    assert document["succeeded"] == 60 and document["failed"] == 0
    assert document["command_ids"] == [command.command_id for command in sent]


def test_result_files_describe_a_failed_deploy(standin: StandIn, tmp_path: Path) -> None:
    good, bad = standin.launch(2)
    result = tmp_path / "out" / "deploy.json"
    env = standin.pipe_env(
        INSTANCE_IDS=f"{good} {bad}",
        COMMANDS=f'[ "$(basename "$HOME")" = "{bad}" ] && exit 9 || true',
        RESULT_FILE=str(result),
    )
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    document = json.loads(result.read_text())
    rows = {row["instance_id"]: row for row in document["instances"]}
    assert document["status"] == "failed"
    assert (rows[bad]["status"], rows[bad]["exit_code"]) == ("Failed", 9)
    assert (rows[good]["status"], rows[good]["exit_code"]) == ("Success", 0)
    assert re.search(r"\d", rows[good]["duration"])
    assert document["message"].startswith("Deploy failed on 1 of 2 instance(s)")
    dotenv = (tmp_path / "out" / "deploy.env").read_text()
    assert "SSM_DEPLOY_STATUS='failed'" in dotenv
    assert f"SSM_DEPLOY_FAILED_INSTANCES='{bad}'" in dotenv
    assert "SSM_DEPLOY_CONSOLE_URL='https://" in dotenv


def test_result_file_says_nothing_was_sent_when_preflight_refuses(standin: StandIn, tmp_path: Path) -> None:
    (instance_id,) = standin.launch(1)
    standin.instance(instance_id).ping_status = "ConnectionLost"
    env = standin.pipe_env(INSTANCE_IDS=instance_id, COMMANDS="true", BITBUCKET_CLONE_DIR=str(tmp_path))
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    document = json.loads((tmp_path / "ssm-deploy-result.json").read_text())
    assert document["status"] == "not sent"
    assert document["command_ids"] == []
    assert "SSM Agent not online" in document["message"]


def test_instance_output_is_coloured_per_instance_unless_no_color(standin: StandIn) -> None:
    ids = standin.launch(2)
    env = standin.pipe_env(INSTANCE_IDS=" ".join(ids), COMMANDS="echo hello")
    coloured = run_pipe(env, colour=True)

    assert coloured.returncode == 0, coloured.output
    labels = {re.search(rf"(\x1b\[[0-9;]+m){instance_id}\x1b\[0m \| hello", coloured.output) for instance_id in ids}
    assert None not in labels
    assert len({match.group(1) for match in labels if match}) == 2  # one colour each
