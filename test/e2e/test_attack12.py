"""The twelfth outside attack on the verdict and the audit trail (issue #17, "Done when"), end to end
against the stand-in, on what earlier attacks left untried: a build killed (SIGKILL: no cleanup at all)
while a batch is out of its target group and the Auto Scaling group's processes are held, then the next
deploy, which takes the stale lock over; RELEASE: previous after a release deploy killed mid-rollout
(the ledger has no version for it); a secret deleted between two batches (its pinned version gone).
Each test asserts what should hold."""

from __future__ import annotations

import datetime
import json
import signal
from pathlib import Path

import pytest
from e2e.release_support import A, B, build
from e2e.test_attack9 import rolling
from e2e.test_attack10 import a_then_b_env, ship
from e2e.test_attack_held import fleet_on_disk, ledger_fleet
from e2e.test_auto_scaling import HELD, group_env, make_group
from e2e.test_ledger import entries as ledger_entries
from e2e.test_load_balancer import make_fleet
from e2e.test_releases import live
from standin import StandIn
from standin.instance_app import RESTART
from support import LivePipe, run_pipe

from pipe.config.lock import LOCK_EXPIRY_SECONDS

BUILDS = "https://bitbucket.org/acme/web-api/pipelines/results/"


def _age_the_lock(standin: StandIn, name: str) -> None:
    """The lock as Parameter Store shows it once the killed build's last renewal is long past (as
    test_deploy_lock.py does: the test does not wait the 3 minutes)."""
    ssm = standin.client("ssm")
    left = json.loads(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    aged = datetime.timedelta(seconds=LOCK_EXPIRY_SECONDS + 60)
    times = {
        field: (datetime.datetime.fromisoformat(left[field]) - aged).strftime("%Y-%m-%dT%H:%M:%SZ")
        for field in left
        if field.endswith("_at")
    }
    ssm.put_parameter(Name=name, Value=json.dumps({**left, **times}), Type="String", Overwrite=True)


@pytest.mark.slow
def test_the_deploy_that_takes_over_a_killed_builds_lock_puts_back_what_the_killed_build_took_out(
    standin: StandIn,
) -> None:
    group = make_group(standin, 2)
    name = f"/deploy-lock/{group.name}/_"
    killed = LivePipe(
        group_env(standin, group, COMMANDS="echo deploy-is-running\nsleep 600", BITBUCKET_BUILD_NUMBER="41")
    )
    try:
        killed.wait_for_line("deploy-is-running", timeout=180)
    finally:
        killed.signal(signal.SIGKILL)  # the build is killed: nothing is cleaned up
    killed.finish(timeout=60)
    for command in standin.sent_commands():  # its command dies with the runner's session, as on AWS after a while
        standin.client("ssm").cancel_command(CommandId=command.command_id)
    serving = [i for i, state in standin.target_states(group.target_group_arn).items() if state == "healthy"]
    assert len(serving) == 1, standin.target_states(group.target_group_arn)  # the killed batch is out of service
    (out,) = set(group.ids) - set(serving)
    assert standin.suspended_processes(group.name) == HELD  # and scaling is held
    _age_the_lock(standin, name)

    run = run_pipe(group_env(standin, group, COMMANDS=RESTART, BITBUCKET_BUILD_NUMBER="42"), timeout=300)

    assert f"Lock {name} was stale" in run.output, run.output
    assert run.returncode == 0, run.output
    # what should hold: the fleet serves whole again and Auto Scaling is back as the team left it
    states = standin.target_states(group.target_group_arn)
    assert all(states.get(i) in ("healthy", "initial") for i in group.ids), (states, run.output)
    assert standin.suspended_processes(group.name) == set(), run.output
    # and the log says what the killed build had left out
    assert f"Build {BUILDS}41 took {out} out of {group.name} and never put them back" in run.output
    assert f"Build {BUILDS}41 suspended {', '.join(sorted(HELD))} of the Auto Scaling group {group.name}" in run.output
    assert standin.client("ssm").get_parameters(Names=[f"{name}/out-of-service"])["Parameters"] == []


def _kill_at(env: dict[str, str], line: str) -> None:
    pipe = LivePipe(env)
    try:
        pipe.wait_for_line(line, timeout=240)
    finally:
        pipe.signal(signal.SIGKILL)  # the build is killed: no ledger version, nothing cleaned up
    pipe.finish(timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize("stage_first", ["true", "false"])
def test_release_previous_after_a_killed_deploy_brings_back_the_live_release_not_the_one_before_it(
    standin: StandIn, tmp_path: Path, bucket: str, service: str, stage_first: str
) -> None:
    """Z, then A live on 2 instances; the build of B is killed while its first batch bakes (first instance on
    B, second on A; the ledger knows nothing of B). RELEASE: previous must not take the fleet past what served
    before B (A) to Z on the ledger's word alone: its staging reads each instance's current, and it is refused
    before anything is drained or switched, naming the instance on B and RELEASE: 'A' as the way back (which
    then brings both to A). Before the fix it went to Z and ended Deployed. Without staging (STAGE_FIRST
    'false') a read of each instance's current comes first instead: before that fix too, it went to Z."""
    fleet = make_fleet(standin, 2)
    first, second = fleet.ids
    z = "000000-0123456"
    ship(rolling(standin, fleet, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "Z"), BITBUCKET_BUILD_NUMBER="0"))
    env = a_then_b_env(standin, fleet, tmp_path, bucket, service, BAKE_TIME="600")
    _kill_at(env, "baking 600 s")
    for command in standin.sent_commands():
        standin.client("ssm").cancel_command(CommandId=command.command_id)
    assert fleet_on_disk(standin, fleet.ids) == {first: B, second: A}
    assert ledger_entries(standin, service)[-1]["release"] == A  # nothing recorded of B
    _age_the_lock(standin, f"/deploy-lock/{service}/prod")

    back = rolling(
        standin,
        fleet,
        tmp_path,
        bucket,
        service,
        RELEASE="previous",
        BITBUCKET_BUILD_NUMBER="3",
        BATCH_SIZE="1",
        STAGE_FIRST=stage_first,
    )
    run = run_pipe(back, timeout=300)

    assert run.returncode == 1, run.output
    assert f"{first} runs {B}: a deploy the release ledger does not record" in run.output
    assert f"run the step with RELEASE: '{A}'; RELEASE: previous then goes to {z}" in run.output
    assert "every one still serves" not in run.output
    assert fleet_on_disk(standin, fleet.ids) == {first: B, second: A}, run.output  # nothing switched, none to Z
    newest = ledger_entries(standin, service)[-1]
    if stage_first == "true":  # the refused attempt staged Z: on the record, naming no release live
        assert (newest["release"], newest["action"], newest["status"]) == (z, "rollback", "partial"), newest
        assert ledger_fleet(newest) == {first: B, second: A}
    else:  # only read: nothing reached the fleet, no version
        assert (newest["release"], newest["status"]) == (A, "succeeded"), newest

    again = rolling(standin, fleet, tmp_path, bucket, service, RELEASE=A, BITBUCKET_BUILD_NUMBER="4", BATCH_SIZE="1")
    run = run_pipe(again, timeout=300)
    assert run.returncode == 0, run.output
    assert fleet_on_disk(standin, fleet.ids) == {first: A, second: A}, run.output
    assert [live(standin, i) for i in fleet.ids] == ["A", "A"]
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == (A, "succeeded"), entry


@pytest.mark.slow
def test_a_secret_deleted_between_two_batches_is_named_as_gone_and_the_ledger_says_where_each_instance_is(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """B rolls out one instance at a time with SECRETS pinned to the version the pipe read; while the first
    batch bakes, the parameter is deleted (as Parameter Store also drops a version 100 rotations later). The
    second batch cannot read it, nor can the switch back of the first (it reads the same pinned version): the
    deploy fails, the ledger and the message say which instance runs which release, the value never shows,
    and the failure names the missing parameter as what it is, not as a permission to add."""
    fleet = make_fleet(standin, 2)
    _first, second = fleet.ids
    secret = f"/deploy/prod/{service}-db"
    value = "s3cr3t-value-attack12"
    standin.put_secret(secret, value, standin.create_key("attack 12"))
    env = a_then_b_env(standin, fleet, tmp_path, bucket, service, BAKE_TIME="20", SECRETS=f"DB_PASSWORD={secret}")
    pipe = LivePipe(env)
    pipe.wait_for_line("baking 20 s", timeout=240)
    standin.client("ssm").delete_parameter(Name=secret)
    run = pipe.finish(timeout=400)

    assert run.returncode != 0, run.output
    assert value not in run.output
    assert "Traceback" not in run.output
    disk = fleet_on_disk(standin, fleet.ids)
    entry = ledger_entries(standin, service)[-1]
    assert entry["release"] == B and entry["status"] != "succeeded", entry
    assert ledger_fleet(entry) == disk, (entry, disk)  # the audit trail is the disk, whatever it is
    assert disk[second] == A
    lines = [line for line in run.output.splitlines() if f"cannot read {secret}:1" in line]
    assert lines, run.output
    assert all("no longer exists" in line for line in lines), lines
