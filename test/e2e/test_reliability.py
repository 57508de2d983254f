"""Faults the pipe must survive or report truthfully, each against the stand-in."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from standin import StandIn
from standin.fleet import NEVER
from support import LivePipe, run_pipe, wait_until


@pytest.fixture
def faults(standin: StandIn) -> Iterator[StandIn]:
    """The stand-in, with every injected fault cleared afterwards."""
    yield standin
    standin.service.clear_faults()


def test_throttling_storm_still_deploys_and_reports_correctly(faults: StandIn) -> None:
    ids = faults.launch(2)
    # every other control-plane call, until 6 were throttled; standard retries back off without the
    # adaptive rate limiter's extra waits (same retries, same outcome, 7 s instead of 15 s)
    faults.service.throttle(failures=1, out_of=2, seconds=60, limit=6)
    before = faults.service.throttled
    env = faults.pipe_env(
        INSTANCE_IDS=" ".join(ids), COMMANDS="echo step-1\nsleep 1\necho step-2", AWS_RETRY_MODE="standard"
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert faults.service.throttled - before >= 5
    for instance_id in ids:
        assert f"{instance_id} | step-1" in run.output
        assert f"{instance_id} | step-2" in run.output
    assert "Deployed to 2 instance(s)" in run.output


def test_invocations_missing_right_after_send_command(faults: StandIn) -> None:
    (instance_id,) = faults.launch(1)
    faults.service.hide_new_invocations(2.0)
    run = run_pipe(faults.pipe_env(INSTANCE_IDS=instance_id, COMMANDS="echo visible-later"))

    assert run.returncode == 0, run.output
    assert "visible-later" in run.output
    assert faults.service.calls["ListCommandInvocations"] > 0


def test_delivery_timeout_fails_as_delivery_timed_out(faults: StandIn) -> None:
    # AWS reports it after DELIVERY_TIMEOUT + EXECUTION_TIMEOUT (60 s); the stand-in after 1.2 s
    (instance_id,) = faults.launch(1, delivery=NEVER, delivery_time_scale=0.02)
    env = faults.pipe_env(
        INSTANCE_IDS=instance_id, DELIVERY_TIMEOUT="30", EXECUTION_TIMEOUT="30", COMMANDS="echo never"
    )
    run = run_pipe(env, timeout=120)

    assert run.returncode == 1, run.output
    assert f"{instance_id}: TimedOut/DeliveryTimedOut" in run.output


def test_instance_lost_mid_run_is_given_up_by_name(faults: StandIn) -> None:
    survivor, doomed = faults.launch(2)
    live = LivePipe(
        faults.pipe_env(
            INSTANCE_IDS=f"{survivor} {doomed}",
            AGENT_LOST_TIMEOUT="2",
            COMMANDS='echo started\nif [ "$(basename "$HOME")" = "' + doomed + '" ]; then sleep 120; fi',
        )
    )
    live.wait_for_line(f"{doomed} | started")
    faults.service.lose_instance(doomed)
    run = live.finish(timeout=60)

    assert run.returncode == 1, run.output
    assert f"{doomed}: giving up, agent ConnectionLost for" in run.output
    assert f"Deploy failed on 1 of 2 instance(s): {doomed}: InProgress, given up: agent ConnectionLost" in run.output
    command = faults.sent_commands()[-1]
    cancels = [action for action, _ in faults.service.callers if action == "CancelCommand"]
    assert cancels, "the lost instance's invocation was not cancelled"
    assert command.runs[doomed].killed


def test_network_resets_for_a_few_seconds_are_retried(faults: StandIn) -> None:
    (instance_id,) = faults.launch(1)
    proxy = faults.flaky_proxy()
    try:
        proxy.reset_from_first_connection(3)  # not from now: the pipe may take seconds to start on a busy machine
        run = run_pipe(faults.pipe_env(AWS_ENDPOINT_URL=proxy.endpoint, INSTANCE_IDS=instance_id, COMMANDS="echo ok"))
    finally:
        proxy.stop()

    assert run.returncode == 0, run.output
    assert proxy.resets > 0
    assert f"{instance_id}" in run.output and "Deployed to 1 instance(s)" in run.output


def test_network_that_stays_down_fails_clearly(faults: StandIn) -> None:
    (instance_id,) = faults.launch(1)
    proxy = faults.flaky_proxy()
    try:
        proxy.refuse_for(120)
        env = faults.pipe_env(
            AWS_ENDPOINT_URL=proxy.endpoint, AWS_MAX_ATTEMPTS="2", INSTANCE_IDS=instance_id, COMMANDS="echo ok"
        )
        run = run_pipe(env)
    finally:
        proxy.stop()

    assert run.returncode == 1, run.output
    assert "Could not reach AWS STS" in run.output
    assert "Traceback" not in run.output


def test_network_lost_while_following_names_the_running_command(faults: StandIn) -> None:
    (instance_id,) = faults.launch(1)
    proxy = faults.flaky_proxy()
    try:
        env = faults.pipe_env(
            AWS_ENDPOINT_URL=proxy.endpoint, AWS_MAX_ATTEMPTS="2", INSTANCE_IDS=instance_id, COMMANDS="sleep 30"
        )
        live = LivePipe(env)
        live.wait_for_line("Sent command")
        proxy.refuse_for(120)
        run = live.finish(timeout=90)
    finally:
        proxy.stop()
    command_id = faults.sent_commands()[-1].command_id
    faults.client("ssm").cancel_command(CommandId=command_id)

    assert run.returncode == 1, run.output
    assert f"Lost contact with AWS while following command {command_id}" in run.output
    assert "may still be running" in run.output
    assert "Traceback" not in run.output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_pipeline_cancels_and_kills_the_remote_process(faults: StandIn, signum: signal.Signals) -> None:
    (instance_id,) = faults.launch(1)
    live = LivePipe(faults.pipe_env(INSTANCE_IDS=instance_id, COMMANDS="echo started\nsleep 60"))
    live.wait_for_line("started")
    live.signal(signum)
    run = live.finish()

    assert run.returncode == 1, run.output
    assert f"Received {signum.name}" in run.output
    assert f"{instance_id}: Cancelled" in run.output
    assert "The command was cancelled" in run.output
    assert faults.sent_commands()[-1].runs[instance_id].killed


def test_stop_before_sending_sends_nothing(faults: StandIn) -> None:
    """SIGINT while botocore retries a throttled preflight call: the pipe stops at the next attempt,
    not after the retry budget (up to 11 attempts with back-off) or the end of the throttling."""
    (instance_id,) = faults.launch(1)
    faults.service.throttle(failures=1, out_of=1, seconds=300, actions={"DescribeInstanceInformation"})
    before = faults.service.calls["DescribeInstanceInformation"]
    live = LivePipe(faults.pipe_env(INSTANCE_IDS=instance_id, COMMANDS="echo never"))
    wait_until(lambda: faults.service.calls["DescribeInstanceInformation"] > before, "a throttled preflight call")
    at_stop = faults.service.calls["DescribeInstanceInformation"]
    live.signal(signal.SIGINT)
    run = live.finish(timeout=60)

    assert run.returncode == 1, run.output
    assert "Received SIGINT: the pipeline was stopped; nothing was sent to the instances." in run.output
    assert "Traceback" not in run.output
    # the attempt already on its way when the signal came may still arrive, but no other
    assert faults.service.calls["DescribeInstanceInformation"] - at_stop <= 1
    assert faults.client("ssm").list_commands(InstanceId=instance_id)["Commands"] == []
