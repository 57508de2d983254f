"""The eleventh outside attack on the verdict and the audit trail (issue #17, "Done when"), end to end
against the stand-in, on what earlier attacks left untried: a secret rotated in Parameter Store between
two batches of one rollout, a deploy batch that SSM ends TimedOut (EXECUTION_TIMEOUT) after its switch,
staged and not, and a re-deploy of the live release whose health check fails in a later batch. Each test
asserts what should hold; the disk (``current``), the served process, the ledger and the result file
must agree."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest
from app_fixture import pack_release
from e2e import test_node_pm2 as pm2
from e2e.release_support import A, B, build
from e2e.test_attack9 import ACTIVATE, rolling
from e2e.test_attack10 import HOLD_B, a_then_b_env, assert_all_back_on_a
from e2e.test_attack_held import fleet_on_disk, ledger_fleet, result, stop_at
from e2e.test_ledger import entries as ledger_entries
from e2e.test_load_balancer import Fleet, every_target_in_service, make_fleet
from e2e.test_node_pm2 import NodeFleet, sha16
from e2e.test_proof_of_serving import FIRST, ROTATED
from e2e.test_releases import APP_DIR, live
from standin import StandIn
from support import LivePipe, run_pipe, wait_until

node_fleet = pm2.node_fleet  # two instances running A under pm2 (the README's recipe) behind a group


def test_a_secret_rotated_between_two_batches_of_one_rollout_leaves_every_instance_on_one_value(
    node_fleet: NodeFleet,
) -> None:
    """B rolls out one instance at a time; while the first batch bakes, DB_PASSWORD is rotated. The deploy
    ships one configuration: every instance must end on the same value (the one the deploy started with),
    or the verdict must say the fleet is split. Today the second batch reads the rotated value, the first
    keeps the old one, and the run ended Deployed: each instance read the parameter when its command ran;
    now each reads the version the pipe read before sending."""
    artifact = pack_release(node_fleet.clone, "B")
    env = node_fleet.env(2, ARTIFACT=str(Path(artifact).relative_to(node_fleet.clone)), BAKE_TIME="20")
    pipe = LivePipe(env)
    pipe.wait_for_line("baking 20 s", timeout=240)
    node_fleet.standin.put_secret(node_fleet.secret, ROTATED, node_fleet.key_id)
    run = pipe.finish(timeout=400)

    served = node_fleet.served()
    values = {i: document["db_password_sha256"] for i, document in served.items()}
    assert ROTATED not in run.output and FIRST not in run.output
    assert [document["release"] for document in served.values()] == ["B", "B"], run.output
    if run.returncode == 0:  # Deployed: then the fleet runs one configuration, the one the deploy read
        assert set(values.values()) == {sha16(FIRST)}, (values, run.output)


@pytest.mark.parametrize("stage_first", ["true", "false"])
def test_a_deploy_batch_timed_out_by_execution_timeout_after_its_switch_is_switched_back(
    standin: StandIn, tmp_path: Path, bucket: str, service: str, stage_first: str
) -> None:
    """The second batch's activation of B hangs until SSM ends the command (EXECUTION_TIMEOUT,
    TimedOut/ExecutionTimedOut) after its switch: that instance fails, and both go back to A."""
    fleet = make_fleet(standin, 2)
    _first, second = fleet.ids
    hold = f'if [ "$SSM_DEPLOY_RELEASE" = {B} ] && [ -e {HOLD_B} ]; then echo holding; sleep 600; fi'
    env = a_then_b_env(
        standin,
        fleet,
        tmp_path,
        bucket,
        service,
        ACTIVATE_COMMANDS=f"{ACTIVATE}\n{hold}",
        EXECUTION_TIMEOUT="40",
        STAGE_FIRST=stage_first,
    )
    standin.instance_path(second, HOLD_B).touch()
    run = run_pipe(env, timeout=400)

    assert run.returncode == 1, run.output
    assert "TimedOut" in run.output, run.output
    assert_all_back_on_a(standin, fleet, tmp_path, service, run.output, second)


def test_a_redeploy_of_the_live_release_failing_its_health_check_in_a_later_batch_stays_on_it(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """Z, then A live on 2 instances; A's step is run again (same build, same release id) and its health
    check fails on the second instance, in the second batch. Going back means A, the live release, on
    both: never Z; and the ledger still says A is live."""
    fleet = make_fleet(standin, 2)
    first, second = fleet.ids
    z = "000000-0123456"
    for version, number in (("Z", "0"), ("A", "1")):
        shutil.copy(tmp_path / build(tmp_path, version), tmp_path / f"{version}.tgz")  # the same bytes each time
        env = rolling(standin, fleet, tmp_path, bucket, service, ARTIFACT=f"{version}.tgz")
        done = run_pipe(env | {"BITBUCKET_BUILD_NUMBER": number}, timeout=300)
        assert done.returncode == 0, done.output
    check = f'[ "$AWS_SSM_INSTANCE_ID" != "{second}" ]'
    env = rolling(
        standin,
        fleet,
        tmp_path,
        bucket,
        service,
        ARTIFACT="A.tgz",
        BITBUCKET_BUILD_NUMBER="1",
        BATCH_SIZE="1",
        HEALTHCHECK_COMMANDS=check,
        HEALTHCHECK_RETRIES="1",
    )
    run = run_pipe(env, timeout=400)

    assert run.returncode == 1, run.output
    disk = fleet_on_disk(standin, fleet.ids)
    assert disk == {first: A, second: A}, run.output
    assert [live(standin, i) for i in fleet.ids] == ["A", "A"]
    entries = ledger_entries(standin, service)
    assert entries[-1]["release"] == A, entries[-1]
    assert ledger_fleet(entries[-1]) == disk
    assert result(tmp_path)["fleet"] == disk, run.output
    assert z not in run.output.rsplit("Now ", 1)[-1], run.output
    # the release the ledger calls live is still A: RELEASE: previous goes to Z, the one before it
    env = rolling(standin, fleet, tmp_path, bucket, service, RELEASE="previous", BITBUCKET_BUILD_NUMBER="3")
    back = run_pipe(env, timeout=300)
    assert back.returncode == 0, back.output
    assert fleet_on_disk(standin, fleet.ids) == {first: z, second: z}, back.output
    wait_until(lambda: every_target_in_service(standin, fleet), "every target back in service", 120)


def z_then_a_live(standin: StandIn, fleet: Fleet, tmp_path: Path, bucket: str, service: str) -> None:
    """Release Z (build 0), then A (build 1), each a rolling deploy that must succeed."""
    for version, number in (("Z", "0"), ("A", "1")):
        env = rolling(standin, fleet, tmp_path, bucket, service, ARTIFACT=build(tmp_path, version))
        done = run_pipe(env | {"BITBUCKET_BUILD_NUMBER": number}, timeout=300)
        assert done.returncode == 0, done.output


def test_release_previous_run_again_after_it_was_stopped_finishes_going_back(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """Z, then A live on 2 instances. RELEASE: previous (back to Z) is stopped during its first batch's
    bake: the first instance on Z, the second on A. The step run again must finish going back, to Z on
    both, not bring the first instance forward to A, the release the rollback was leaving."""
    fleet = make_fleet(standin, 2)
    first, second = fleet.ids
    z = "000000-0123456"
    z_then_a_live(standin, fleet, tmp_path, bucket, service)
    back = {"RELEASE": "previous", "BITBUCKET_BUILD_NUMBER": "3", "BATCH_SIZE": "1"}
    code, output = stop_at(rolling(standin, fleet, tmp_path, bucket, service, BAKE_TIME="600", **back), "baking 600 s")
    assert code == 1, output
    assert fleet_on_disk(standin, fleet.ids) == {first: z, second: A}
    stopped = ledger_entries(standin, service)[-1]
    assert (stopped["release"], stopped["status"], stopped["action"]) == (z, "stopped", "rollback"), stopped

    run = run_pipe(rolling(standin, fleet, tmp_path, bucket, service, **back), timeout=300)

    assert run.returncode == 0, run.output
    assert fleet_on_disk(standin, fleet.ids) == {first: z, second: z}, run.output
    assert [live(standin, i) for i in fleet.ids] == ["Z", "Z"]
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == (z, "succeeded"), entry
    wait_until(lambda: every_target_in_service(standin, fleet), "every target back in service", 120)


HOLD_Z = "/srv/hold-z"  # on an instance: the activation of Z hangs there


@pytest.mark.parametrize("line", ["draining from", "holding-z", "baking 600 s"])
def test_a_stop_at_each_stage_of_a_release_previous_in_one_joined_batch_is_recorded_as_on_disk_and_finished_by_a_rerun(
    standin: StandIn, tmp_path: Path, bucket: str, service: str, line: str
) -> None:
    """Z, then A live on 2 instances; RELEASE: previous with ROLLBACK_BATCH_SIZE max (one batch of both,
    MIN_HEALTHY 0), stopped (SIGTERM) while it drains, while the activation of Z hangs, or during the bake.
    The ledger, the result file and the disk agree; every target serves again; the step run again ends
    with Z on both."""
    fleet = make_fleet(standin, 2)
    first, second = fleet.ids
    z = "000000-0123456"
    z_then_a_live(standin, fleet, tmp_path, bucket, service)
    hold = f'if [ "$(cat version.txt)" = Z ] && [ -e {HOLD_Z} ]; then echo holding-z; sleep 600; fi'
    back = {"RELEASE": "previous", "BITBUCKET_BUILD_NUMBER": "3", "ROLLBACK_BATCH_SIZE": "max", "BATCH_SIZE": "1"}
    standin.instance_path(second, HOLD_Z).touch()
    env = rolling(standin, fleet, tmp_path, bucket, service, BAKE_TIME="600", **back)
    env["ACTIVATE_COMMANDS"] = f"{ACTIVATE}\n{hold if line == 'holding-z' else ''}"
    code, output = stop_at(env, line)

    assert code == 1, output
    assert "Traceback" not in output
    disk = fleet_on_disk(standin, fleet.ids)
    entry = ledger_entries(standin, service)[-1]
    if entry["release"] == A:  # stopped before anything reached the instances: no version, nothing switched
        assert (entry["status"], disk) == ("succeeded", dict.fromkeys(fleet.ids, A)), (entry, disk, output)
    else:
        assert entry["release"] == z and entry["status"] != "succeeded", entry
        assert ledger_fleet(entry) == disk, (entry, disk, output)
        assert result(tmp_path)["fleet"] == disk, output
    wait_until(lambda: every_target_in_service(standin, fleet), "every target back in service", 180)

    standin.instance_path(second, HOLD_Z).unlink()
    run = run_pipe(rolling(standin, fleet, tmp_path, bucket, service, **back), timeout=300)
    assert run.returncode == 0, run.output
    assert fleet_on_disk(standin, fleet.ids) == {first: z, second: z}, run.output
    assert [live(standin, i) for i in fleet.ids] == ["Z", "Z"]


ODD_NAMES = ("new\nline.txt", "back\\slash.txt", " lead and trail ", "tab\there.txt", "-dash.txt", "ünï.txt")


def test_a_release_with_odd_file_names_is_staged_checked_and_switched_whole_or_refused_by_name(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """File names Linux allows but line-based tools trip on (a newline, a backslash, a tab, spaces, a
    leading dash, non-ASCII) in a release staged first behind a target group: either every file arrives
    as it was and the release goes live, or the deploy is refused naming the entry; never a failure
    that names neither, nor a release missing a file."""
    fleet = make_fleet(standin, 2)
    ship_env = rolling(standin, fleet, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "A"))
    assert run_pipe(ship_env | {"BITBUCKET_BUILD_NUMBER": "1"}, timeout=300).returncode == 0
    with tarfile.open(tmp_path / "odd.tgz", "w:gz") as archive:
        for name, text in (("version.txt", "B\n"), ("index.html", "<p>B</p>\n"), *((n, n) for n in ODD_NAMES)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    env = rolling(standin, fleet, tmp_path, bucket, service, ARTIFACT="odd.tgz", BITBUCKET_BUILD_NUMBER="2")
    run = run_pipe(env | {"BATCH_SIZE": "1"}, timeout=300)

    assert "Traceback" not in run.output
    if run.returncode == 0:
        for instance_id in fleet.ids:
            for name in ODD_NAMES:
                path = standin.instance_path(instance_id, f"{APP_DIR}/releases/{B}/{name}")
                assert path.read_text() == name, (instance_id, name)
        assert fleet_on_disk(standin, fleet.ids) == dict.fromkeys(fleet.ids, B)
    else:
        assert "refused" in run.output.lower() or "may not hold" in run.output, run.output
        assert fleet_on_disk(standin, fleet.ids) == dict.fromkeys(fleet.ids, A), run.output
