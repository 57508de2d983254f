"""The fifteenth outside attack on the verdict and the audit trail (issue #17, "Done when"), end to end
against the stand-in, on what is new since attack 14 and what earlier attacks left untried: a release
deploy killed without target groups (LOCK now on by default in release mode), then a re-run of the same
build once the lock expired; a target group whose deregistration delay exceeds DRAIN_TIMEOUT; a stop between
the end of staging and the first drain; PARAMETERS_PATH entries changed and added between batches; a first
release that fails to stage; ACTION: status while a deploy holds the lock; and after each, what ACTION:
status says. All held: each test asserts what should hold; the disk (``current``), the ledger, the load
balancer and ACTION: status agree."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e.release_support import A, B, build
from e2e.test_attack9 import rolling, rolling_b
from e2e.test_attack10 import a_then_b_env, ship
from e2e.test_attack12 import _age_the_lock, _kill_at
from e2e.test_attack_held import fleet_on_disk, ledger_fleet, stop_at
from e2e.test_ledger import entries as ledger_entries
from e2e.test_load_balancer import Fleet, every_target_in_service, make_fleet
from e2e.test_releases import release_env
from standin import StandIn
from support import LivePipe, PipeRun, run_pipe, wait_until

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
    env = a_then_b_env(standin, fleet, tmp_path, bucket, service, DRAIN_TIMEOUT="2")

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
    env = a_then_b_env(standin, fleet, tmp_path, bucket, service)

    code, output = stop_at(env, f"Staged release {B}")

    assert code != 0, output
    assert "Traceback" not in output
    wait_until(lambda: every_target_in_service(standin, fleet), "every target back in service", 120)
    _assert_on_a_and_status_agrees(standin, fleet.ids, tmp_path, bucket, service, "stopped")


@pytest.mark.slow
def test_parameters_added_or_changed_under_parameters_path_between_batches_do_not_split_the_fleet(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """PARAMETERS_PATH is read once, each parameter pinned to the version listed then ("each read at the
    version listed now, on every instance"). A parameter changed and one added under the path while the first
    batch activates must reach neither batch: both instances run B with the same values."""
    path = f"/{service}/prod/"
    ssm = standin.client("ssm")
    ssm.put_parameter(Name=f"{path}db_password", Value="first-value", Type="SecureString")
    fleet = make_fleet(standin, 2)
    activate = 'echo "activated $(cat version.txt) pw-len=${#DB_PASSWORD} new=${NEW_ONE:+yes}"'
    common = {"PARAMETERS_PATH": path, "ACTIVATE_COMMANDS": activate}
    ship(
        rolling(
            standin,
            fleet,
            tmp_path,
            bucket,
            service,
            ARTIFACT=build(tmp_path, "A"),
            BITBUCKET_BUILD_NUMBER="1",
            **common,
        )
    )
    env = rolling_b(standin, fleet, tmp_path, bucket, service, **common)
    pipe = LivePipe(env)
    pipe.wait_for_line("activated B", timeout=240)
    ssm.put_parameter(Name=f"{path}db_password", Value="second-value-longer", Type="SecureString", Overwrite=True)
    ssm.put_parameter(Name=f"{path}new_one", Value="added", Type="SecureString")
    run = pipe.finish(timeout=400)

    assert run.returncode == 0, run.output
    assert run.output.count("activated B pw-len=11 new=") == 2, run.output
    assert "new=yes" not in run.output and "second-value" not in run.output, run.output
    assert fleet_on_disk(standin, fleet.ids) == dict.fromkeys(fleet.ids, B)
    check = _status(standin, fleet.ids, tmp_path, bucket, service)
    assert check.returncode == 0, check.output


@pytest.mark.slow
def test_a_first_release_that_fails_to_stage_is_recorded_failed_and_status_finds_no_drift(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """The first release of a service fails to stage (COMMANDS fail on one instance): the ledger records it
    'failed', live nowhere; its fleet names no instance on it; ACTION: status finds no live release and no
    instance running one (exit 0); the next deploy goes live and says nothing was live before."""
    fleet = make_fleet(standin, 2)
    sick = fleet.ids[0]
    standin.instance_path(sick, "/srv/fail-commands").touch()
    commands = "if [ -e /srv/fail-commands ]; then echo cannot-install; exit 3; fi"
    env = rolling(
        standin,
        fleet,
        tmp_path,
        bucket,
        service,
        ARTIFACT=build(tmp_path, "A"),
        BITBUCKET_BUILD_NUMBER="1",
        COMMANDS=commands,
    )

    run = run_pipe(env, timeout=300)

    assert run.returncode == 1, run.output
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == (A, "failed"), entry
    assert A not in entry["fleet"], entry
    check = _status(standin, fleet.ids, tmp_path, bucket, service)
    assert check.returncode == 0, check.output
    standin.instance_path(sick, "/srv/fail-commands").unlink()
    again = ship(env)
    assert "live before: nothing" in again, again
    assert fleet_on_disk(standin, fleet.ids) == dict.fromkeys(fleet.ids, A)


@pytest.mark.slow
def test_status_while_a_release_deploy_holds_the_lock_neither_passes_nor_disturbs_it(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """ACTION: status while a release deploy (LOCK on by default) activates B on the only instance: status
    must not pass (the instance is mid-switch: drift or unknown, exit 1), must leave the deploy's lock alone,
    and the deploy then ends live on B, after which status passes."""
    ids = standin.launch(1)
    hold = standin.instance_path(ids[0], HOLD)
    activate = f'echo "activated $(cat version.txt)"\nwhile [ -e {HOLD} ]; do sleep 0.2; done'
    env = {"ACTIVATE_COMMANDS": activate}
    ship(
        release_env(
            standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "A"), BITBUCKET_BUILD_NUMBER="1", **env
        )
    )
    hold.touch()
    pipe = LivePipe(
        release_env(
            standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "B"), BITBUCKET_BUILD_NUMBER="2", **env
        )
    )
    pipe.wait_for_line("activated B", timeout=240)
    lock = f"/deploy-lock/{service}/prod"
    held = standin.client("ssm").get_parameter(Name=lock)["Parameter"]["Value"]

    during = _status(standin, ids, tmp_path, bucket, service)

    assert during.returncode == 1, during.output
    assert "Traceback" not in during.output
    assert held.split('"renewed_at"')[0] in standin.client("ssm").get_parameter(Name=lock)["Parameter"]["Value"]
    hold.unlink()
    run = pipe.finish(timeout=300)
    assert run.returncode == 0, run.output
    after = _status(standin, ids, tmp_path, bucket, service)
    assert after.returncode == 0, after.output
    assert f"No drift: 1 instance(s) run {B}, the live release" in after.output, after.output
