"""The deploy lock end to end, with real pipe processes against the stand-in: a deploy started during
another is refused for the lock alone, even where the other's drained batch would also fail
MIN_HEALTHY (and so is its dry run); the lock is renewed while a long deploy runs; the lock of a
killed build (SIGKILL: nothing released) expires minutes after its last renewal and is then taken
over; a deploy whose lock is deleted while it runs stops. Every time in the lock's messages carries
its date."""

from __future__ import annotations

import datetime
import json
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from e2e.test_load_balancer import make_fleet, rolling_env
from standin import StandIn
from support import LivePipe, PipeRun, run_pipe, undated_times, wait_until

from pipe.config.lock import LOCK_EXPIRY_SECONDS, LOCK_RENEW_SECONDS

BUILDS = "https://bitbucket.org/acme/web-api/pipelines/results/"


def lock_document(standin: StandIn, name: str) -> dict[str, Any] | None:
    found = standin.client("ssm").get_parameters(Names=[name])["Parameters"]
    return json.loads(found[0]["Value"]) if found else None


def moment(document: dict[str, Any], field: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(document[field])


def lock_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "lock" in line.lower()]


def assert_every_lock_time_is_dated(run: PipeRun) -> None:
    lines = lock_lines(run.output)
    assert lines, run.output
    assert [undated for line in lines for undated in undated_times(line)] == [], lines


@contextmanager
def running(env: dict[str, str]) -> Iterator[LivePipe]:
    """A pipe that runs while the block does; stopped with SIGTERM at its end (it then releases)."""
    pipe = LivePipe(env)
    try:
        yield pipe
    finally:
        if pipe.process.poll() is None:
            pipe.signal(signal.SIGTERM)
        pipe.finish(timeout=240)


@pytest.mark.slow
def test_a_deploy_during_a_running_one_hears_only_that_the_lock_is_held(standin: StandIn) -> None:
    fleet = make_fleet(standin, 4)
    name = f"/deploy-lock/{fleet.group_name}/prod"
    # a batch of 1 leaves 3 of 4 healthy: enough for the first deploy, not for a second one while the
    # first one's batch is out of the target group
    rollout = {"BATCH_SIZE": "1", "MIN_HEALTHY": "3", "ENVIRONMENT": "prod"}
    first_env = rolling_env(standin, fleet, COMMANDS="sleep 300", BITBUCKET_BUILD_NUMBER="41", **rollout)
    second_env = rolling_env(standin, fleet, COMMANDS="true", BITBUCKET_BUILD_NUMBER="42", **rollout)
    with running(first_env) as first:
        first.wait_for_line("batch 1/4 (1 instance(s)): drained after", timeout=120)
        first.wait_for_line("Sent command", timeout=60)  # batch 1 deploys, out of the target group
        before = len(standin.sent_commands())
        second = run_pipe(second_env, timeout=120)
        dry_run = run_pipe({**second_env, "DRY_RUN": "true"}, timeout=120)
        assert len(standin.sent_commands()) == before
    released = first.finish(timeout=240)

    for run in (second, dry_run):
        assert run.returncode == 1, run.output
        assert f"LOCK: nothing was sent. Another deploy holds the lock {name}: build {BUILDS}41" in run.output
        assert "MIN_HEALTHY" not in run.output  # the lock, first and only
        assert "Lock /deploy-lock" not in run.output  # never taken, so never released
        assert_every_lock_time_is_dated(run)
    assert f"Lock {name} released" in released.output
    assert lock_document(standin, name) is None


@pytest.mark.slow
def test_the_lock_is_renewed_while_a_long_deploy_runs(standin: StandIn) -> None:
    instance = standin.launch(1)[0]
    service = f"renew-{uuid.uuid4().hex[:8]}"
    name = f"/deploy-lock/{service}/prod"
    env = standin.pipe_env(
        INSTANCE_IDS=instance, COMMANDS="sleep 300", LOCK="true", SERVICE=service, ENVIRONMENT="prod"
    )
    with running(env) as pipe:
        pipe.wait_for_line(f"Lock {name} taken", timeout=90)
        taken = lock_document(standin, name)
        assert taken is not None

        def renewed() -> bool:
            now = lock_document(standin, name)
            return now is not None and moment(now, "expires_at") > moment(taken, "expires_at")

        wait_until(renewed, "the lock's expiry to move forward", timeout=4 * LOCK_RENEW_SECONDS)
        later = lock_document(standin, name)
    run = pipe.finish(timeout=240)

    assert later is not None and later["id"] == taken["id"]  # the same lock, renewed
    assert moment(later, "renewed_at") > moment(taken, "renewed_at")
    assert moment(later, "expires_at") == moment(later, "renewed_at") + datetime.timedelta(seconds=LOCK_EXPIRY_SECONDS)
    assert f"Lock {name} released" in run.output
    assert lock_document(standin, name) is None
    assert_every_lock_time_is_dated(run)


@pytest.mark.slow
def test_the_lock_of_a_killed_build_is_taken_over_once_its_short_expiry_has_passed(standin: StandIn) -> None:
    killed_instance, next_instance = standin.launch(2)
    service = f"killed-{uuid.uuid4().hex[:8]}"
    name = f"/deploy-lock/{service}/prod"

    def env(instance: str, build: str, commands: str) -> dict[str, str]:
        return standin.pipe_env(
            INSTANCE_IDS=instance,
            COMMANDS=commands,
            LOCK="true",
            SERVICE=service,
            ENVIRONMENT="prod",
            BITBUCKET_BUILD_NUMBER=build,
        )

    killed = LivePipe(env(killed_instance, "41", "sleep 300"))
    killed.wait_for_line(f"Lock {name} taken", timeout=90)
    killed.signal(signal.SIGKILL)  # the build is killed: nothing is released
    killed.finish(timeout=60)
    left = lock_document(standin, name)
    assert left is not None
    now = datetime.datetime.now(datetime.UTC)
    assert moment(left, "expires_at") <= now + datetime.timedelta(seconds=LOCK_EXPIRY_SECONDS)

    held = run_pipe(env(next_instance, "43", "true"), timeout=120)
    assert held.returncode == 1, held.output
    assert f"Another deploy holds the lock {name}: build {BUILDS}41" in held.output
    assert_every_lock_time_is_dated(held)

    # the expiry passes: the lock as Parameter Store shows it once its last renewal is that long ago
    aged = datetime.timedelta(seconds=LOCK_EXPIRY_SECONDS + 60)
    times = {
        field: (moment(left, field) - aged).strftime("%Y-%m-%dT%H:%M:%SZ") for field in left if field.endswith("_at")
    }
    standin.client("ssm").put_parameter(Name=name, Value=json.dumps({**left, **times}), Type="String", Overwrite=True)
    taker = run_pipe(env(next_instance, "44", "true"), timeout=120)

    for command in standin.sent_commands():  # the killed build's command, if it was sent
        if killed_instance in command.request.get("InstanceIds", []):
            standin.client("ssm").cancel_command(CommandId=command.command_id)
    assert taker.returncode == 0, taker.output
    assert f"Lock {name} was stale: build {BUILDS}41" in taker.output
    assert "Taken over." in taker.output
    assert f"Lock {name} released" in taker.output
    assert lock_document(standin, name) is None
    assert_every_lock_time_is_dated(taker)


@pytest.mark.slow
def test_a_deploy_whose_lock_is_deleted_while_it_runs_stops_and_says_why(standin: StandIn) -> None:
    instance = standin.launch(1)[0]
    service = f"lost-{uuid.uuid4().hex[:8]}"
    name = f"/deploy-lock/{service}/prod"
    env = standin.pipe_env(
        INSTANCE_IDS=instance, COMMANDS="sleep 300", LOCK="true", SERVICE=service, ENVIRONMENT="prod"
    )
    with running(env) as pipe:
        pipe.wait_for_line("Sent command", timeout=90)
        standin.client("ssm").delete_parameter(Name=name)  # as if freed by hand while the build still runs
        pipe.wait_for_line(f"Lock {name} lost: it was deleted", timeout=4 * LOCK_RENEW_SECONDS)
        run = pipe.finish(timeout=120)  # stopped by the lost lock, not by the block's SIGTERM

    assert run.returncode == 1, run.output
    assert f"The deploy lock {name} was lost (it was deleted" in run.output
    assert "so the deploy was stopped. The command was cancelled." in run.output
    assert "Received SIGTERM" not in run.output
    assert f"{instance}: Cancelled" in run.output
    sent = next(c for c in reversed(standin.sent_commands()) if instance in c.request["InstanceIds"])
    assert sent.runs[instance].killed
    assert lock_document(standin, name) is None  # not created again
