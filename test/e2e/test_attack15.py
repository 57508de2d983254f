"""The fifteenth outside attack on the verdict and the audit trail (issue #17, "Done when"), end to end
against the stand-in, on what is new since attack 14 and what earlier attacks left untried: a release
deploy killed without target groups (LOCK now on by default in release mode), then a re-run of the same
build once the lock expired; a target group whose deregistration delay exceeds DRAIN_TIMEOUT; a stop between
the end of staging and the first drain; and after each, what ACTION: status says. Each test asserts what
should hold: the disk (``current``), the ledger, the load balancer and ACTION: status must agree."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e.test_attack9 import rolling
from e2e.test_attack10 import A, B, ship
from e2e.test_attack12 import _age_the_lock, _kill_at
from e2e.test_attack_held import build, fleet_on_disk, ledger_fleet, stop_at
from e2e.test_ledger import entries as ledger_entries
from e2e.test_load_balancer import Fleet, every_target_in_service, make_fleet
from e2e.test_releases import release_env
from standin import StandIn
from support import PipeRun, run_pipe, wait_until

HOLD = "/srv/hold-activation"  # on an instance: the activation of B hangs there
ACTIVATE = 'echo "activated $(cat version.txt)"\n' + (
    f'if [ "$(cat version.txt)" = B ] && [ -e {HOLD} ]; then echo holding-activation; sleep 600; fi'
)


def _status(standin: StandIn, ids: list[str], clone: Path, bucket: str, service: str) -> PipeRun:
    env = release_env(standin, ids, clone, bucket, service, ACTION="status", BITBUCKET_BUILD_NUMBER="99")
    return run_pipe(env, timeout=300)


def _assert_on_a_and_status_agrees(
    standin: StandIn, ids: list[str], clone: Path, bucket: str, service: str, status: str
) -> None:
    """Every instance runs A; the ledger's newest version is B with that fleet and ``status``; ACTION:
    status finds no drift (exit 0) and names A live."""
    disk = fleet_on_disk(standin, ids)
    assert disk == dict.fromkeys(ids, A), disk
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == (B, status), entry
    assert ledger_fleet(entry) == disk, entry
    check = _status(standin, ids, clone, bucket, service)
    assert check.returncode == 0, check.output
    assert f"No drift: {len(ids)} instance(s) run {A}, the live release" in check.output, check.output


@pytest.mark.slow
def test_a_rerun_of_a_killed_release_deploy_without_target_groups_that_fails_goes_back_to_the_live_release(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on two instances (no target group: LOCK is on by default in release mode). The build of B is
    killed while both instances activate B (switched, the ledger knows nothing of B); its commands die with
    the runner. Once the lock expired, the same build is run again and fails its health check: it must take
    the lock over, bring every instance back to A (the ledger's live release, what served before B), record
    B 'rolled back' with the fleet on A, and ACTION: status must then find no drift."""
    ids = standin.launch(2)
    env = {"ACTIVATE_COMMANDS": ACTIVATE}
    ship(
        release_env(
            standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "A"), BITBUCKET_BUILD_NUMBER="1", **env
        )
    )
    for instance in ids:
        standin.instance_path(instance, HOLD).touch()
    b_env = release_env(
        standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "B"), BITBUCKET_BUILD_NUMBER="2", **env
    )
    _kill_at(b_env, "holding-activation")
    for command in standin.sent_commands():  # its command dies with the runner's session, as on AWS after a while
        standin.client("ssm").cancel_command(CommandId=command.command_id)
    wait_until(lambda: set(fleet_on_disk(standin, ids).values()) == {B}, "both instances switched to B", 120)
    for instance in ids:
        standin.instance_path(instance, HOLD).unlink()
    _age_the_lock(standin, f"/deploy-lock/{service}/prod")

    again = run_pipe(b_env | {"HEALTHCHECK_COMMANDS": "false"}, timeout=400)

    assert again.returncode == 1, again.output
    assert "took over" in again.output.lower() or "expired" in again.output, again.output
    assert "Traceback" not in again.output
    _assert_on_a_and_status_agrees(standin, ids, tmp_path, bucket, service, "rolled back")


@pytest.mark.slow
def test_a_drain_longer_than_drain_timeout_fails_the_first_batch_and_leaves_the_fleet_serving_the_live_release(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on two instances behind a group whose deregistration delay (200 s, 10 s scaled) exceeds
    DRAIN_TIMEOUT (2 s). B is staged on both, then the first batch never drains in time: the deploy fails,
    every target is registered again, nothing switched; the ledger records B 'failed' with the fleet on A
    and ACTION: status finds no drift."""
    fleet = make_fleet(standin, 2, deregistration_delay=200)
    ship(rolling(standin, fleet, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "A"), BITBUCKET_BUILD_NUMBER="1"))
    env = rolling(
        standin,
        fleet,
        tmp_path,
        bucket,
        service,
        ARTIFACT=build(tmp_path, "B"),
        BITBUCKET_BUILD_NUMBER="2",
        BATCH_SIZE="1",
        DRAIN_TIMEOUT="2",
    )

    run = run_pipe(env, timeout=400)

    assert run.returncode == 1, run.output
    assert "Traceback" not in run.output
    wait_until(lambda: every_target_in_service(standin, fleet), "every target back in service", 120)
    _assert_on_a_and_status_agrees(standin, fleet.ids, tmp_path, bucket, service, "failed")


@pytest.mark.slow
def test_a_stop_right_after_staging_leaves_the_fleet_serving_the_live_release_and_status_agrees(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on two instances behind a group; B is staged on both and the pipeline is stopped as the log
    says the staging ended, before (or as) the first batch drains: every target serves again, nothing
    switched, the ledger records B 'stopped' with the fleet on A, and ACTION: status finds no drift."""
    fleet: Fleet = make_fleet(standin, 2)
    ship(rolling(standin, fleet, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "A"), BITBUCKET_BUILD_NUMBER="1"))
    env = rolling(
        standin,
        fleet,
        tmp_path,
        bucket,
        service,
        ARTIFACT=build(tmp_path, "B"),
        BITBUCKET_BUILD_NUMBER="2",
        BATCH_SIZE="1",
    )

    code, output = stop_at(env, f"Staged release {B}")

    assert code != 0, output
    assert "Traceback" not in output
    wait_until(lambda: every_target_in_service(standin, fleet), "every target back in service", 120)
    _assert_on_a_and_status_agrees(standin, fleet.ids, tmp_path, bucket, service, "stopped")
