"""The control plane at fleet scale: O(1) status calls per poll, results 50 instances a call, and
MAX_CONCURRENCY / MAX_ERRORS meaning what they say across the 50-instance commands of a deploy."""

from __future__ import annotations

import math
import re

import pytest
from standin import StandIn
from support import run_pipe

PROBES = 1  # preflight asks each read API once (a made-up command) to prove the permission


def test_a_120_instance_deploy_polls_with_one_call_and_reads_results_a_page_at_a_time(standin: StandIn) -> None:
    ids = standin.launch(120)
    before = standin.calls_snapshot(include_instances=False)
    env = standin.pipe_env(INSTANCE_IDS="\n".join(ids), COMMANDS='sleep 1.5\necho "done on $AWS_SSM_INSTANCE_ID"')
    run = run_pipe(env, timeout=300)
    calls = standin.calls_snapshot(include_instances=False) - before

    assert run.returncode == 0, run.output
    assert "Progress: 120/120 finished (120 Success)" in run.output
    for instance_id in ids:
        assert f"{instance_id} | done on {instance_id}" in run.output
    polls = calls["ssm:ListCommands"] - PROBES
    assert polls >= 3  # it ran over several polls, each one ListCommands call for all 3 commands
    # no per-poll listing: the results once, a page of 50 each, and no GetCommandInvocation at all
    assert calls["ssm:ListCommandInvocations"] <= math.ceil(120 / 50) + PROBES
    assert calls["ssm:GetCommandInvocation"] == PROBES
    assert calls["ssm:SendCommand"] == 3


@pytest.mark.slow
def test_max_concurrency_holds_across_the_commands_of_a_deploy(standin: StandIn) -> None:
    ids = standin.launch(120)
    env = standin.pipe_env(INSTANCE_IDS="\n".join(ids), MAX_CONCURRENCY="2", COMMANDS="sleep 0.05")
    run = run_pipe(env, timeout=300)

    assert run.returncode == 0, run.output
    sent = standin.sent_commands()[-3:]
    assert sorted(len(command.request["InstanceIds"]) for command in sent) == [20, 50, 50]
    assert all(command.request["MaxConcurrency"] == "1" for command in sent)
    assert standin.service.peak_running([command.command_id for command in sent]) <= 2


def test_max_errors_across_the_commands_stops_what_has_not_started(standin: StandIn) -> None:
    ids = standin.launch(120)
    doomed = ids[0]
    env = standin.pipe_env(
        INSTANCE_IDS="\n".join(ids),
        MAX_CONCURRENCY="2",
        MAX_ERRORS="0",
        COMMANDS=f'[ "$AWS_SSM_INSTANCE_ID" = "{doomed}" ] && exit 4\nsleep 0.2',
    )
    before = standin.calls_snapshot(include_instances=False)
    run = run_pipe(env, timeout=300)
    calls = standin.calls_snapshot(include_instances=False) - before

    assert run.returncode == 1, run.output
    # CancelCommand cannot tell "not started" from "starting now": one of the other lane's instances
    # may have started as the pipe cancelled it, and is then reported (cancelled, not skipped)
    failed = re.search(rf"Deploy failed on ([12]) of 120 instance\(s\): {doomed}: Failed \(exit 4\)[.;]", run.output)
    assert failed, run.output[-3000:]
    assert calls["ssm:SendCommand"] == 2  # the third command is never sent
    assert "The rollout stopped at MAX_ERRORS: " in run.output
    skipped = int(run.output.split("The rollout stopped at MAX_ERRORS: ")[1].split(" ")[0])
    assert skipped >= 120 - 1 - 4  # at most a few had started when the error was seen
    assert re.search(rf"{ids[-1]} +Cancelled/Terminated +- ", run.output)  # never sent: skipped, as SSM shows it
