"""Fleets: many instances, tag targets, rolling deploys, and the result file for later steps."""

from __future__ import annotations

import json
import math
import re
import uuid
from pathlib import Path

import pytest
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
    dotenv = (tmp_path / "out" / "deploy.json.env").read_text()
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


def unique_tag() -> str:
    return f"fleet-{uuid.uuid4().hex[:8]}"


@pytest.mark.slow
def test_tag_targets_roll_out_to_200_instances_ten_percent_at_a_time(standin: StandIn, tmp_path: Path) -> None:
    service = unique_tag()
    ids = standin.launch(200, name="api", tags={"Service": service, "Env": "prod"})
    standin.launch(3, name="other", tags={"Service": service, "Env": "stg"})  # not matched: Env differs
    before = standin.calls_snapshot(include_instances=False)
    env = standin.pipe_env(
        TARGETS=f"tag:Service={service};tag:Env=prod",
        MAX_CONCURRENCY="10%",
        COMMANDS="sleep 0.2\necho deployed",
        RESULT_FILE=str(tmp_path / "r.json"),
    )
    run = run_pipe(env, timeout=300)
    calls = standin.calls_snapshot(include_instances=False) - before

    assert run.returncode == 0, run.output
    assert "TARGETS match 200 running instance(s)" in run.output
    command = standin.sent_commands()[-1]
    assert standin.service.max_running[command.command_id] <= 20
    document = json.loads((tmp_path / "r.json").read_text())
    assert sorted(row["instance_id"] for row in document["instances"]) == sorted(ids)
    assert document["succeeded"] == 200
    # one ListCommands and one ListCommandInvocations page per 50 instances in each poll cycle
    cycles = calls["ssm:ListCommands"]
    assert cycles > 0
    assert calls["ssm:ListCommandInvocations"] <= cycles * math.ceil(200 / 50) + 1  # + the probe before sending
    assert calls["ssm:GetCommandInvocation"] <= 200 + 1  # results read once each at the end (+ the probe)


def test_max_errors_zero_stops_the_rollout_and_names_the_skipped_instances(standin: StandIn) -> None:
    service = unique_tag()
    ids = standin.launch(5, name="api", tags={"Service": service})
    failing = ids[1]
    env = standin.pipe_env(
        TARGETS=f"tag:Service={service}",
        MAX_CONCURRENCY="1",
        MAX_ERRORS="0",
        COMMANDS=f'[ "$(basename "$HOME")" = "{failing}" ] && exit 4 || echo ok',
    )
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert f"Deploy failed on 1 of 5 instance(s): {failing}: Failed (exit 4)." in run.output
    skipped = ids[2:]
    expected = "The rollout stopped at MAX_ERRORS: 3 instance(s) were skipped and still run the old version: "
    assert f"{expected}{', '.join(skipped)}." in run.output
    for instance_id in skipped:
        assert re.search(rf"{instance_id} +Cancelled/Terminated +- ", run.output)


def test_output_of_three_instances_is_attributed_to_each(standin: StandIn) -> None:
    service = unique_tag()
    ids = standin.launch(3, name="api", tags={"Service": service})
    env = standin.pipe_env(
        TARGETS=f"tag:Service={service}",
        COMMANDS='me=$(basename "$HOME")\nfor n in 1 2 3 4 5; do echo "line $n from $me"; sleep 0.1; done',
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    lines = [line for line in run.output.splitlines() if " from i-" in line]
    assert len(lines) == 15
    for line in lines:
        label, _, text = line.partition(" | ")
        assert text.endswith(f"from {label}"), line
    assert {line.partition(" | ")[0] for line in lines} == set(ids)


def test_resource_group_target(standin: StandIn) -> None:
    team = unique_tag()
    ids = standin.launch(2, name="web", tags={"Team": team})
    standin.create_resource_group(f"web-{team}", {"Team": [team]})
    run = run_pipe(standin.pipe_env(TARGETS=f"resource-groups:Name=web-{team}", COMMANDS="echo in-group"))

    assert run.returncode == 0, run.output
    assert "TARGETS match 2 running instance(s)" in run.output
    for instance_id in ids:
        assert f"{instance_id} | in-group" in run.output


def test_targets_matching_nothing_send_nothing(standin: StandIn) -> None:
    before = standin.calls_snapshot()
    run = run_pipe(standin.pipe_env(TARGETS=f"tag:Service={unique_tag()}", COMMANDS="echo never"))

    assert run.returncode == 1, run.output
    assert "match no running instance" in run.output
    assert (standin.calls_snapshot() - before)["ssm:SendCommand"] == 0


def test_a_missing_resource_group_sends_nothing(standin: StandIn) -> None:
    before = standin.calls_snapshot()
    run = run_pipe(standin.pipe_env(TARGETS=f"resource-groups:Name=missing-{unique_tag()}", COMMANDS="echo never"))

    assert run.returncode == 1, run.output
    assert "There is no resource group 'missing-" in run.output
    assert (standin.calls_snapshot() - before)["ssm:SendCommand"] == 0
