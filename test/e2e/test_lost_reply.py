"""SendCommand has no idempotency token: a reply lost after AWS accepted the command must not
make the deploy (or the health check, or the rollback) run twice, and the pipe must follow the
command that runs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from standin import StandIn
from standin.network import FlakyProxy
from support import run_pipe

RUNS = 'echo "$PHASE" >> "$HOME/runs"'


@pytest.fixture
def proxy(standin: StandIn) -> Iterator[FlakyProxy]:
    running = standin.flaky_proxy()
    yield running
    running.stop()


def runs(standin: StandIn, instance_id: str) -> list[str]:
    """Each line a script run on the instance wrote: how many times each phase really ran."""
    path: Path = standin.instance(instance_id).home / "runs"
    return path.read_text().split() if path.exists() else []


def commands_to(standin: StandIn, instance_id: str) -> list[str]:
    return [sent.command_id for sent in standin.sent_commands() if instance_id in sent.runs]


def sent_ids(output: str) -> list[str]:
    return re.findall(r"Sent command ([0-9a-f-]{36})", output)


def test_a_lost_send_command_reply_runs_the_deploy_once_and_follows_it(standin: StandIn, proxy: FlakyProxy) -> None:
    (instance_id,) = standin.launch(1)
    proxy.drop_response_to("SendCommand")
    env = standin.pipe_env(
        AWS_ENDPOINT_URL=proxy.endpoint,
        INSTANCE_IDS=instance_id,
        COMMANDS=f"PHASE=deploy\n{RUNS}\necho deployed-once",
    )
    run = run_pipe(env)

    assert proxy.dropped_responses == ["SendCommand"]
    assert run.returncode == 0, run.output
    assert runs(standin, instance_id) == ["deploy"]
    (command_id,) = commands_to(standin, instance_id)
    assert sent_ids(run.output) == [command_id]
    assert "deployed-once" in run.output
    assert "Deployed to 1 instance(s)" in run.output
    assert "Traceback" not in run.output


def test_a_lost_reply_to_the_failing_deploy_still_fails_it_once(standin: StandIn, proxy: FlakyProxy) -> None:
    (instance_id,) = standin.launch(1)
    proxy.drop_response_to("SendCommand")
    env = standin.pipe_env(
        AWS_ENDPOINT_URL=proxy.endpoint, INSTANCE_IDS=instance_id, COMMANDS=f"PHASE=deploy\n{RUNS}\nexit 3"
    )
    run = run_pipe(env)

    assert run.returncode == 1, run.output
    assert runs(standin, instance_id) == ["deploy"]
    (command_id,) = commands_to(standin, instance_id)
    assert f"Deploy failed on 1 of 1 instance(s): {instance_id}: Failed (exit 3). Command id: {command_id}" in (
        run.output
    )


def test_lost_replies_to_the_health_check_and_the_rollback_run_each_once(standin: StandIn, proxy: FlakyProxy) -> None:
    (instance_id,) = standin.launch(1)
    proxy.drop_response_to("SendCommand", times=2, after=1)  # the health check's and the rollback's
    env = standin.pipe_env(
        AWS_ENDPOINT_URL=proxy.endpoint,
        INSTANCE_IDS=instance_id,
        COMMANDS=f"PHASE=deploy\n{RUNS}",
        HEALTHCHECK_COMMANDS=f"PHASE=check\n{RUNS}\nexit 1",
        HEALTHCHECK_RETRIES="1",
        ROLLBACK_COMMANDS=f"PHASE=rollback\n{RUNS}",
    )
    run = run_pipe(env)

    assert proxy.dropped_responses == ["SendCommand", "SendCommand"]
    assert run.returncode == 1, run.output
    assert runs(standin, instance_id) == ["deploy", "check", "rollback"]
    assert sent_ids(run.output) == commands_to(standin, instance_id)
    assert "the health check failed on 1 of 1 instance(s)" in run.output
    assert "Rollback succeeded on all 1 instance(s)" in run.output


@pytest.mark.slow
def test_a_send_command_that_never_reached_aws_is_sent_again(standin: StandIn, proxy: FlakyProxy) -> None:
    (instance_id,) = standin.launch(1)
    proxy.reset_request_to("SendCommand")
    env = standin.pipe_env(AWS_ENDPOINT_URL=proxy.endpoint, INSTANCE_IDS=instance_id, COMMANDS=f"PHASE=deploy\n{RUNS}")
    run = run_pipe(env)

    assert proxy.reset_requests == ["SendCommand"]
    assert run.returncode == 0, run.output
    assert runs(standin, instance_id) == ["deploy"]
    assert sent_ids(run.output) == commands_to(standin, instance_id)
    assert "Deployed to 1 instance(s)" in run.output
