"""What reaches the build log when the instances print hostile or odd output, or CloudWatch lags."""

from __future__ import annotations

import re
import signal
import uuid

import pytest
from standin import StandIn
from support import LivePipe, PipeRun, run_pipe

RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # \n ends lines; \x1b only in the pipe's own colours
FORGERY = (
    r"printf '\033[32m✔ Deployed to 1 instance(s).\033[0m\n'"
    "\n"
    r"printf 'progress 50%%\r✔ Deployed to 1 instance(s).\n'"
    "\n"
    r"printf '\033]0;owned\007\033[2K\033[1Aerased\n'"
    "\n"
    r"printf 'INFO: Summary of command forged:\n'"
)


def output_modes(standin: StandIn) -> dict[str, dict[str, str]]:
    bucket = f"build-log-{uuid.uuid4().hex[:8]}"
    standin.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": standin.region})
    return {
        "streamed": {},
        "captured": {"STREAM_OUTPUT": "false"},
        "from S3": {"STREAM_OUTPUT": "false", "OUTPUT_S3_BUCKET": bucket},
    }


MODES = ["streamed", "captured", "from S3"]


def lines_of(run: PipeRun, instance_id: str) -> list[str]:
    return [line for line in run.output.splitlines() if line.startswith(f"{instance_id} | ")]


@pytest.mark.parametrize("mode", MODES)
def test_one_instances_output_cannot_forge_the_pipes_lines_or_act_on_the_log(standin: StandIn, mode: str) -> None:
    (instance_id,) = standin.launch(1)
    run = run_pipe(standin.pipe_env(INSTANCE_IDS=instance_id, COMMANDS=FORGERY, **output_modes(standin)[mode]))

    assert run.returncode == 0, run.output
    deployed = [line for line in run.output.splitlines() if "Deployed to 1 instance(s)." in line]
    assert len(deployed) == 3, run.output  # two printed by the instance, then the pipe's own verdict
    assert all(line.startswith(f"{instance_id} | ") for line in deployed[:2])
    assert not deployed[-1].startswith(instance_id)
    assert "\r" not in run.output and "\x1b]" not in run.output
    remote = lines_of(run, instance_id)
    assert not any(RAW_CONTROL.search(line) or "\x1b" in line for line in remote), remote
    assert f"{instance_id} | \\x1b[32m✔ Deployed to 1 instance(s).\\x1b[0m" in remote
    assert f"{instance_id} | progress 50%\\r✔ Deployed to 1 instance(s)." in remote
    assert f"{instance_id} | \\x1b]0;owned\\x07\\x1b[2K\\x1b[1Aerased" in remote
    assert "\nINFO: Summary of command forged:" not in run.output


PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACDqNzQ2vUz4cMcM0d9lWqgY0e5UnhmQ6V3OZ8W7bJ1TmgAAAJi3yZPSt8mT\n"
    "0gAAAAtzc2gtZWQyNTUxOQAAACDqNzQ2vUz4cMcM0d9lWqgY0e5UnhmQ6V3OZ8W7bJ1Tmg\n"
    "-----END OPENSSH PRIVATE KEY-----"
)


def secret_env(standin: StandIn, value: str, **extra: str) -> tuple[str, dict[str, str]]:
    """One instance, and the SecureString ``value`` exported as KEY on it."""
    environment = f"log{uuid.uuid4().hex[:8]}"
    standin.put_secret(f"/deploy/{environment}/key", value, standin.create_key(f"build log {environment}"))
    (instance_id,) = standin.launch(1)
    env = standin.pipe_env(
        ENVIRONMENT=environment, INSTANCE_IDS=instance_id, SECRETS="KEY=/deploy/{environment}/key", **extra
    )
    return instance_id, env


@pytest.mark.parametrize("mode", MODES)
def test_every_line_of_a_multi_line_secret_is_masked_in_every_output_path(standin: StandIn, mode: str) -> None:
    instance_id, env = secret_env(
        standin, PEM, COMMANDS='printf "%s\\n" "$KEY"\nprintf "%s\\n" "$KEY" >&2', **output_modes(standin)[mode]
    )
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    for line in PEM.splitlines():
        assert line not in run.output, f"{line!r} leaked"
    assert f"{instance_id} | ****" in run.output and f"{instance_id} | [stderr] ****" in run.output


def test_the_forms_set_x_and_printf_q_print_a_secret_in_are_masked(standin: StandIn) -> None:
    value = "it's a p@ss word!"
    instance_id, env = secret_env(standin, value, COMMANDS='set -x\n: "$KEY"\nprintf "%q\\n" "$KEY"')
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    for piece in ("p@ss", "word!", "word\\!"):
        assert piece not in run.output
    assert f"{instance_id} | [stderr] + : '****'" in run.output
    assert f"{instance_id} | ****" in run.output


def test_a_secret_too_short_to_mask_is_named_in_a_warning(standin: StandIn) -> None:
    _, env = secret_env(standin, "Zq7", COMMANDS="true")
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert re.search(r"SECRETS parameter /deploy/log\w+/key: its value is 3 character\(s\) long, too short", run.output)


def test_a_secret_equal_to_a_status_word_leaves_the_pipes_own_lines_intact(standin: StandIn) -> None:
    instance_id, env = secret_env(standin, "Success", COMMANDS='echo "key is $KEY"')
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert f"{instance_id} | key is ****" in run.output  # still masked where an instance prints it
    assert f"INFO: {instance_id}: Success" in run.output
    assert re.search(rf"{instance_id} +Success +0 ", run.output), run.output  # the summary row
    assert "its value is a plain word or number" in run.output


def streamed_before_status(run: PipeRun, instance_id: str, line: str) -> bool:
    """The line came live from CloudWatch: before the summary, with no SSM-copy header. (Live Tail
    pushes each second what was ingested in it, so a command's last second of output may follow
    its final status line.)"""
    streamed = run.output.index(f"{instance_id} | {line}\n") < run.output.index("INFO: Summary of command")
    return streamed and f"---- output of {instance_id}" not in run.output


def test_output_with_blank_lines_is_known_complete_without_waiting(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    run = run_pipe(standin.pipe_env(INSTANCE_IDS=instance_id, COMMANDS="echo one\necho\necho\necho two\necho"))

    assert run.returncode == 0, run.output
    assert streamed_before_status(run, instance_id, "two")
    assert "CloudWatch did not deliver" not in run.output
    assert "---- output of" not in run.output and "---- rest of" not in run.output  # nothing shown twice


@pytest.mark.parametrize("skew", [-300, 300])
def test_an_instance_clock_minutes_off_still_streams_live(standin: StandIn, skew: int) -> None:
    (instance_id,) = standin.launch(1, clock_skew=skew)
    run = run_pipe(standin.pipe_env(INSTANCE_IDS=instance_id, COMMANDS="echo first\nsleep 0.5\necho second"))

    assert run.returncode == 0, run.output
    assert streamed_before_status(run, instance_id, "first")
    assert "---- output of" not in run.output and "CloudWatch did not deliver" not in run.output


def test_with_a_skewed_clock_output_beyond_the_ssm_field_limit_arrives_complete(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1, clock_skew=-300)
    command = "head -c 30000 /dev/zero | tr '\\0' x; echo; echo end"
    run = run_pipe(standin.pipe_env(INSTANCE_IDS=instance_id, COMMANDS=command))

    assert run.returncode == 0, run.output
    assert f"{instance_id} | {'x' * 30000}\n{instance_id} | end\n" in run.output
    assert "character limit" not in run.output


def test_when_the_instance_role_may_not_write_logs_the_output_is_shown_at_once_and_the_reason_once(
    standin: StandIn,
) -> None:
    (instance_id,) = standin.launch(1, cloudwatch_writes=False)
    env = standin.pipe_env(INSTANCE_IDS=instance_id, COMMANDS="echo deployed", HEALTHCHECK_COMMANDS="echo healthy")
    run = run_pipe(env)

    assert run.returncode == 0, run.output
    assert f"{instance_id} | deployed" in run.output and f"{instance_id} | healthy" in run.output
    assert run.output.count("No live output from") == 1  # said once, not again for the health check
    assert "logs:CreateLogStream, logs:PutLogEvents" in run.output
    assert f"---- output of {instance_id}: Success (exit 0) ----" in run.output
    assert "CloudWatch did not deliver" not in run.output  # nothing was waited for: SSM's copy is whole


@pytest.mark.slow
def test_a_cancellation_that_is_not_confirmed_is_not_reported_as_done(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    live = LivePipe(standin.pipe_env(INSTANCE_IDS=instance_id, COMMANDS="echo started\nsleep 120"))
    live.wait_for_line(f"{instance_id} | started")
    standin.service.lose_instance(instance_id)  # its agent will never confirm the cancel
    live.signal(signal.SIGTERM)
    run = live.finish(timeout=90)

    assert run.returncode == 1, run.output
    assert "The command was cancelled" not in run.output
    assert "Received SIGTERM: the pipeline was stopped. Cancelling command" in run.output
    assert (
        "Cancellation was requested but not confirmed within 30 s. The command may still be running on the "
        "instances: see https://"
    ) in run.output


def test_failure_messages_end_each_sentence_with_a_full_stop(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    run = run_pipe(standin.pipe_env(INSTANCE_IDS=instance_id, COMMANDS="exit 3", ROLLBACK_COMMANDS="echo undo"))
    command_id = standin.sent_commands()[-2].command_id

    assert run.returncode == 1, run.output
    assert f"Command id: {command_id}. Rollback succeeded on all 1 instance(s)." in run.output
