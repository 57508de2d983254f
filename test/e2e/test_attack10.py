"""The tenth outside attack on the verdict and the audit trail (issue #17, "Done when"), end to end against
the stand-in, on what earlier attacks left untried: a health check that times out and a deploy cancelled
after its switch inside the STAGE_FIRST batches, ``RELEASE: <id>`` naming a release pruned from some
instances only, and ledger versions of valid JSON but the wrong shape under ``RELEASE: <id>`` and
``ACTION: status``. Each test asserts what should hold; the disk (``current``), the ledger, the result file
and the load balancer must agree."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from app_fixture import ACTIVATE as PM2_ACTIVATE
from app_fixture import pack_release
from e2e import test_auto_scaling_new_instances as scaling
from e2e import test_node_pm2 as pm2
from e2e import test_proof_of_serving as serving
from e2e.release_support import A, B, build
from e2e.test_attack9 import ACTIVATE, rolling
from e2e.test_attack_held import fleet_on_disk, ledger_fleet, result, stop_at
from e2e.test_auto_scaling_new_instances import GroupFleet
from e2e.test_ledger import entries as ledger_entries
from e2e.test_load_balancer import Fleet, every_target_in_service, make_fleet
from e2e.test_node_pm2 import NodeFleet, sha16
from e2e.test_proof_of_serving import FIRST, README_ECOSYSTEM, ROTATED, WITHOUT_CWD, RecipeFleet
from e2e.test_releases import APP_DIR, live, release_env
from standin import StandIn
from support import LivePipe, PipeRun, run_pipe, wait_until

HOLD_B = "/srv/hold-deploy"  # on an instance: the activation of B hangs there
# the fixtures: an Auto Scaling group in a target group; two instances running A under pm2 (the README's
# recipe; or a recipe of the test's own)
group_fleet, node_fleet, fleet_with = scaling.group_fleet, pm2.node_fleet, serving.fleet_with
KNOWN = "/srv/known-instance"  # on the group's first instances: elsewhere the launch install hangs


def ship(env: dict[str, str]) -> str:
    done = run_pipe(env, timeout=300)
    assert done.returncode == 0, done.output
    assert "Traceback" not in done.output
    return done.output


def a_then_b_env(
    standin: StandIn, fleet: Fleet, clone: Path, bucket: str, service: str, **extra: str
) -> dict[str, str]:
    """A shipped to the 2 instances of ``fleet``; the environment of B, one instance per batch, staged first."""
    ship(rolling(standin, fleet, clone, bucket, service, ARTIFACT=build(clone, "A"), BITBUCKET_BUILD_NUMBER="1"))
    variables = {"ARTIFACT": build(clone, "B"), "BITBUCKET_BUILD_NUMBER": "2", "BATCH_SIZE": "1"} | extra
    return rolling(standin, fleet, clone, bucket, service, **variables)


def dotenv(clone: Path) -> str:
    return (clone / "ssm-deploy-result.json.env").read_text()


def assert_all_back_on_a(standin: StandIn, fleet: Fleet, clone: Path, service: str, output: str, sick: str) -> None:
    disk = fleet_on_disk(standin, fleet.ids)
    assert disk == dict.fromkeys(fleet.ids, A), output
    assert [live(standin, i) for i in fleet.ids] == ["A", "A"]
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == (B, "rolled back"), entry
    assert ledger_fleet(entry) == disk
    assert result(clone)["fleet"] == disk
    env_file = dotenv(clone)
    assert f"SSM_DEPLOY_FAILED_INSTANCES='{sick}'" in env_file, env_file
    assert "SSM_DEPLOY_FAILED='1'" in env_file, env_file
    assert "Traceback" not in output
    wait_until(lambda: every_target_in_service(standin, fleet), "every target back in service", 120)


def test_a_health_check_that_times_out_in_a_staged_batch_rolls_every_instance_back_and_counts_it_failed(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    fleet = make_fleet(standin, 2)
    _first, second = fleet.ids
    env = a_then_b_env(
        standin,
        fleet,
        tmp_path,
        bucket,
        service,
        HEALTHCHECK_COMMANDS=f'if [ "$AWS_SSM_INSTANCE_ID" = "{second}" ]; then echo checking-forever; sleep 600; fi',
        HEALTHCHECK_RETRIES="1",
        HEALTHCHECK_TIMEOUT="15",
    )
    run = run_pipe(env, timeout=400)

    assert run.returncode == 1, run.output
    assert "Staging release" in run.output
    assert_all_back_on_a(standin, fleet, tmp_path, service, run.output, second)


@pytest.mark.parametrize("where", ["activation", "health check"])
def test_a_deploy_cancelled_after_its_switch_in_a_staged_batch_is_switched_back(
    standin: StandIn, tmp_path: Path, bucket: str, service: str, where: str
) -> None:
    """Someone cancels the second batch's command in the console (CancelCommand) while its activation, or
    its health check, hangs: that instance fails, and both go back to A."""
    fleet = make_fleet(standin, 2)
    _first, second = fleet.ids
    hold = f'if [ "$SSM_DEPLOY_RELEASE" = {B} ] && [ -e {HOLD_B} ]; then echo holding; sleep 600; fi'
    commands = (
        {"ACTIVATE_COMMANDS": f"{ACTIVATE}\n{hold}"}
        if where == "activation"
        else {"HEALTHCHECK_COMMANDS": hold, "HEALTHCHECK_RETRIES": "1"}
    )
    env = a_then_b_env(standin, fleet, tmp_path, bucket, service, **commands)
    standin.instance_path(second, HOLD_B).touch()
    pipe = LivePipe(env)
    pipe.wait_for_line(f"{second} | holding", timeout=240)
    command_id = standin.sent_commands()[-1].command_id
    standin.client("ssm").cancel_command(CommandId=command_id, InstanceIds=[second])
    run = pipe.finish(timeout=400)

    assert run.returncode == 1, run.output
    assert "Cancelled" in run.output, run.output
    assert_all_back_on_a(standin, fleet, tmp_path, service, run.output, second)


def test_release_previous_after_a_stopped_deploy_brings_back_the_live_release_not_the_one_before_it(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """Z, then A live on 2 instances; B stopped during its first batch's bake (the first instance on B, the
    second on A: the ledger says so). RELEASE: previous must go back to what served before B, A, on both;
    not to Z, a release older than anything the fleet ran before the stopped deploy."""
    fleet = make_fleet(standin, 2)
    first, second = fleet.ids
    z = "000000-0123456"
    ship(rolling(standin, fleet, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "Z"), BITBUCKET_BUILD_NUMBER="0"))
    env = a_then_b_env(standin, fleet, tmp_path, bucket, service, BAKE_TIME="600")
    code, output = stop_at(env, "baking 600 s")
    assert code == 1, output
    assert fleet_on_disk(standin, fleet.ids) == {first: B, second: A}
    stopped = ledger_entries(standin, service)[-1]
    assert (stopped["release"], stopped["status"]) == (B, "stopped")

    env = rolling(
        standin, fleet, tmp_path, bucket, service, RELEASE="previous", BITBUCKET_BUILD_NUMBER="3", BATCH_SIZE="1"
    )
    run = run_pipe(env, timeout=300)

    assert run.returncode == 0, run.output
    assert fleet_on_disk(standin, fleet.ids) == {first: A, second: A}, run.output  # not Z
    assert [live(standin, i) for i in fleet.ids] == ["A", "A"]
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == (A, "succeeded"), entry
    assert z not in run.output.rsplit("Now ", 1)[-1]
    wait_until(lambda: every_target_in_service(standin, fleet), "every target back in service", 120)


def prune(standin: StandIn, instance_id: str, release: str) -> None:
    """What KEEP_RELEASES does to a release on an instance: its directory, readiness mark and manifest go."""
    for path in ("releases", ".ssm-deploy/ready", ".ssm-deploy/files"):
        target = standin.instance_path(instance_id, f"{APP_DIR}/{path}/{release}")
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


@pytest.mark.parametrize("staged", [True, False], ids=["staged", "not-staged"])
def test_release_by_id_pruned_from_one_instance_only_goes_live_on_both(
    standin: StandIn, tmp_path: Path, bucket: str, service: str, staged: bool
) -> None:
    fleet = make_fleet(standin, 2)
    first, second = fleet.ids
    ship(a_then_b_env(standin, fleet, tmp_path, bucket, service))
    prune(standin, second, A)
    env = rolling(standin, fleet, tmp_path, bucket, service, RELEASE=A, BITBUCKET_BUILD_NUMBER="3", BATCH_SIZE="1")
    if not staged:
        env["STAGE_FIRST"] = "false"
    output = ship(env)

    assert fleet_on_disk(standin, fleet.ids) == {first: A, second: A}
    assert [live(standin, i) for i in fleet.ids] == ["A", "A"]
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"], entry["action"]) == (A, "succeeded", "rollback"), entry
    assert ledger_fleet(entry) == {first: A, second: A}
    assert f"Rollback to {A}" in output
    assert every_target_in_service(standin, fleet)


def _shape(**changes: object) -> str:
    """A schema-2 entry of a failed deploy of 000009-0123456, with ``changes`` applied (None deletes a key):
    read or skipped, it never changes what is live."""
    document: dict[str, object] = {
        "v": 2,
        "action": "deploy",
        "status": "failed",
        "release": "000009-0123456",
        "commit": "0123456",
        "build": "9",
        "artifact": "x/" + "a" * 64 + ".tar.gz",
        "sha256": "a" * 64,
        "previous": A,
        "run": {"build": "9", "commit": "0123456", "build_url": "", "triggered_by": ""},
        "time": "2026-12-01T21:50:33Z",
        "fleet": {"000009-0123456": {"count": 1, "ids": []}},
        "instances": {"succeeded": {"count": 1, "ids": []}},
    }
    for key, value in changes.items():
        if value is None:
            del document[key]
        else:
            document[key] = value
    return json.dumps(document)


WRONG_SHAPES = {
    "list": json.dumps([_shape()]),
    "run-list": _shape(run=[]),
    "no-fleet": _shape(fleet=None),
    "count-huge": _shape(fleet={"000009-0123456": {"count": 10**300, "ids": []}}),
    "count-float": _shape(instances={"succeeded": {"count": 1.0, "ids": []}}),
    "build-number": _shape(build=9),
    "v-huge": _shape(v=10**300),
    "v-true": _shape(v=True),
    "null": "null",
}


def test_wrong_shaped_ledger_versions_are_skipped_by_release_by_id_and_by_status(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    ids = standin.launch(1)
    name = f"/release-ledger/{service}/prod/release"
    ship(
        release_env(standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "A"), BITBUCKET_BUILD_NUMBER="1")
    )
    ship(
        release_env(standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "B"), BITBUCKET_BUILD_NUMBER="2")
    )
    written = [
        standin.client("ssm").put_parameter(Name=name, Value=junk, Type="String", Overwrite=True)["Version"]
        for junk in WRONG_SHAPES.values()
    ]
    status = run_pipe(release_env(standin, ids, tmp_path, bucket, service, ACTION="status"))
    assert "Traceback" not in status.output
    assert status.returncode == 0, status.output  # the instance runs B, the live release: no drift
    for shape, version in zip(WRONG_SHAPES, written, strict=True):
        if shape != "count-huge":  # a whole number, however large, is a count
            assert f"version {version} skipped" in status.output, (shape, version, status.output)

    output = ship(release_env(standin, ids, tmp_path, bucket, service, RELEASE=A, BITBUCKET_BUILD_NUMBER="3"))
    assert f"live before: {B}" in output
    assert live(standin, ids[0]) == "A"
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"], entry["action"]) == (A, "succeeded", "rollback"), entry


def test_an_artifact_replaced_in_s3_before_a_later_batch_installs_it_is_refused_and_the_first_batch_goes_back(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """STAGE_FIRST 'false': each batch downloads the artifact in its own window. Replaced in S3 once the
    first batch runs B, it fails the second batch's checksum (82) and the first batch is switched back."""
    fleet = make_fleet(standin, 2)
    first, second = fleet.ids
    env = a_then_b_env(standin, fleet, tmp_path, bucket, service, STAGE_FIRST="false")
    s3 = standin.client("s3")
    before = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    pipe = LivePipe(env)
    pipe.wait_for_line(f"{first} | activated B", timeout=240)
    (key,) = (
        {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
        - before
        - {k for k in {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]} if "/ledger/" in k}
    )
    s3.put_object(Bucket=bucket, Key=key, Body=(tmp_path / build(tmp_path, "C")).read_bytes())
    run = pipe.finish(timeout=400)

    assert run.returncode == 1, run.output
    assert "82" in run.output, run.output
    assert fleet_on_disk(standin, fleet.ids) == {first: A, second: A}, run.output
    assert [live(standin, i) for i in fleet.ids] == ["A", "A"]
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == (B, "rolled back"), entry
    assert not standin.instance_path(second, f"{APP_DIR}/releases/{B}").exists()
    wait_until(lambda: every_target_in_service(standin, fleet), "every target back in service", 120)


def stop_a_group_rollout(fleet: GroupFleet, hang: str, line: str) -> tuple[PipeRun, str]:
    """A (build 1) then B (build 2, one instance at a time) to the group's instances, ``hang`` in front of
    the activation (it hangs where KNOWN is missing); the group scales out to 3 once the first batch runs
    B; a stop once ``line`` is in the output. The run of B, and the instance the group launched."""
    standin = fleet.standin
    for instance_id in fleet.ids:
        standin.instance_path(instance_id, KNOWN).touch()
    activate = f"{hang}\n{PM2_ACTIVATE}"

    def ship_group(release: str, build_number: int, *, rolling: bool) -> LivePipe:
        artifact = pack_release(fleet.clone, release)
        env = fleet.env(
            build_number,
            rolling=rolling,
            ARTIFACT=os.path.relpath(artifact, fleet.clone),
            TARGETS=f"tag:aws:autoscaling:groupName={fleet.group_name}",
            AUTO_SCALING_GROUPS="auto",
            ACTIVATE_COMMANDS=activate,
        )
        env.pop("INSTANCE_IDS", None)
        return LivePipe(env)

    first = ship_group("A", 1, rolling=False).finish(timeout=300)
    assert first.returncode == 0, first.output
    standin.wait_target_states(fleet.group_arn, fleet.ids, "healthy", timeout=60)
    on_b = standin.instance_path(fleet.ids[0], f"{APP_DIR}/current")

    def scale_out_once_the_first_batch_runs_b() -> None:
        wait_until(lambda: os.readlink(on_b).startswith(f"releases/{B}"), "the first batch switched to B", 180)
        standin.client("autoscaling").set_desired_capacity(AutoScalingGroupName=fleet.group_name, DesiredCapacity=3)

    scaler = threading.Thread(target=scale_out_once_the_first_batch_runs_b, daemon=True)
    scaler.start()
    pipe = ship_group("B", 2, rolling=True)
    pipe.wait_for_line(line, timeout=300)
    pipe.signal(signal.SIGTERM)
    run = pipe.finish(timeout=300)
    scaler.join(60)
    group = standin.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[fleet.group_name])
    (new,) = {i["InstanceId"] for i in group["AutoScalingGroups"][0]["Instances"]} - set(fleet.ids)
    return run, new


def assert_stopped_as_on_disk(fleet: GroupFleet, run: PipeRun, ids: list[str]) -> dict[str, str]:
    """The stop is recorded as the disk of ``ids`` says, in the ledger and the result file; the group's
    processes are resumed. Returns the disk."""
    standin = fleet.standin
    assert run.returncode != 0, run.output
    assert "Traceback" not in run.output
    disk = fleet_on_disk(standin, ids)
    entry = ledger_entries(standin, fleet.service)[-1]
    assert entry["release"] == B and entry["status"] == "stopped", entry
    assert {i: r for i, r in ledger_fleet(entry).items() if i in ids} == disk, (entry, disk)
    assert {i: r for i, r in result(fleet.clone)["fleet"].items() if i in ids} == disk, disk
    assert standin.suspended_processes(fleet.group_name) == set(), run.output  # resumed
    return disk


def test_a_stop_while_the_pipe_waits_for_an_instance_the_group_launches_records_it_and_resumes_the_group(
    group_fleet: Callable[..., GroupFleet],
) -> None:
    """The new instance's launch install (release A, the live one) hangs, so after its planned batches
    the pipe waits for it; a stop then."""
    fleet = group_fleet(True)
    hang = f"[ -e {KNOWN} ] || {{ echo launch-held; sleep 900; }}"
    run, _new = stop_a_group_rollout(fleet, hang, "for instances the group is still launching")

    disk = assert_stopped_as_on_disk(fleet, run, fleet.ids)
    assert disk == dict.fromkeys(fleet.ids, B), run.output
    fleet.standin.wait_target_states(fleet.group_arn, fleet.ids, "healthy", timeout=60)


def test_a_stop_while_the_batch_of_an_instance_the_group_launched_runs_reads_it_and_puts_it_back(
    group_fleet: Callable[..., GroupFleet],
) -> None:
    """The new instance installs A and enters service; the pipe deploys B to it in a batch of its own,
    whose activation (as RUN_AS) hangs there; a stop then. SSM answers throughout: the pipe reads where
    ``current`` points there, as it does after any stop, and records what it found."""
    fleet = group_fleet(True)
    hang = f'[ -e {KNOWN} ] || [ "$(cat release.txt)" != B ] || {{ echo joined-held; sleep 900; }}'
    run, new = stop_a_group_rollout(fleet, hang, "| joined-held")

    assert "AWS is out of reach" not in run.output, run.output  # it never was
    assert f"---- Reading {APP_DIR}/current on 1 instance(s)" in run.output, run.output
    disk = assert_stopped_as_on_disk(fleet, run, [*fleet.ids, new])
    assert disk == {**dict.fromkeys(fleet.ids, B), new: B}, run.output  # switched before its activation hung
    fleet.standin.wait_target_states(fleet.group_arn, [*fleet.ids, new], "healthy", timeout=120)


# --- real pm2, the README's recipe (test_node_pm2.py, test_proof_of_serving.py) ---


def served_on_disk(fleet: NodeFleet) -> dict[str, tuple[str, str]]:
    """{instance: (the release directory its app runs in, the one current points to)}."""
    return {i: (document["cwd"], fleet.live_release_dir(i)) for i, document in fleet.served().items()}


def test_release_previous_after_a_secret_rotation_brings_the_old_release_back_with_the_current_secret(
    node_fleet: NodeFleet,
) -> None:
    second = node_fleet.ship("B", 2)
    assert second.returncode == 0, second.output
    node_fleet.standin.put_secret(node_fleet.secret, ROTATED, node_fleet.key_id)
    run = run_pipe(node_fleet.env(3, RELEASE="previous"), timeout=300)

    assert run.returncode == 0, run.output
    assert ROTATED not in run.output and FIRST not in run.output
    for document in node_fleet.served().values():
        assert (document["release"], document["db_password_sha256"]) == ("A", sha16(ROTATED))
    assert all(cwd == on_disk for cwd, on_disk in served_on_disk(node_fleet).values())


@pytest.mark.parametrize("how", ["release-previous", "automatic-rollback"])
def test_b_started_without_cwd_then_going_back_to_a_never_reports_a_while_b_serves(
    fleet_with: Callable[[str], RecipeFleet], how: str
) -> None:
    """A runs with the README's recipe; B's ecosystem file drops ``cwd`` (pm2 then takes the physical
    directory of the reload, releases/B). Going back to A, by RELEASE: previous or by the rollback of a
    failed health check, either brings A's code back or fails saying what still runs B."""
    fleet = fleet_with(README_ECOSYSTEM)
    fleet.ecosystem = WITHOUT_CWD
    if how == "release-previous":
        second = fleet.ship("B", 2)
        assert second.returncode == 0, second.output
        fleet.ecosystem = README_ECOSYSTEM
        run = run_pipe(fleet.env(3, RELEASE="previous"), timeout=300)
    else:
        run = fleet.ship("B", 2, broken=True)

    entry = ledger_entries(fleet.standin, fleet.service)[-1]
    where = served_on_disk(fleet)
    if run.returncode == 0 or entry["status"] in ("succeeded", "rolled back"):
        # the verdict says every instance runs A: A's code must serve everywhere
        assert all(cwd == on_disk == f"{APP_DIR}/releases/{A}" for cwd, on_disk in where.values()), (
            where,
            entry,
            run.output,
        )
    else:
        stale = [i for i, (cwd, on_disk) in where.items() if cwd != on_disk]
        assert all(f"runs release {B}" in run.output and i in run.output for i in stale), (where, run.output)


def test_a_deploy_the_ledger_cannot_record_does_not_end_as_a_plain_success(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live; the ledger parameter holds 100 versions and its oldest has a label, so Parameter Store refuses
    the next version (ParameterMaxVersionLimitExceeded). B then goes live on the instance but the ledger still
    names A live: the next deploy's failure would go back to A, RELEASE: previous would skip B. The step must
    not end as a plain success."""
    ids = standin.launch(1)
    name = f"/release-ledger/{service}/prod/release"
    ship(
        release_env(standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "A"), BITBUCKET_BUILD_NUMBER="1")
    )
    ssm = standin.client("ssm")
    ssm.label_parameter_version(Name=name, ParameterVersion=1, Labels=["first"])
    value = ssm.get_parameter(Name=name)["Parameter"]["Value"]
    for _ in range(99):
        ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)
    env = release_env(
        standin, ids, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "B"), BITBUCKET_BUILD_NUMBER="2"
    )
    run = run_pipe(env, timeout=300)

    assert "Traceback" not in run.output
    assert run.returncode != 0, run.output
    assert "first" in run.output and name in run.output, run.output  # the label to move, the parameter
    if live(standin, ids[0]) == "B":  # deployed, and the ledger does not say so
        assert run.returncode != 0, run.output
        assert "✔" not in run.output, run.output
