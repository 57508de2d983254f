"""The ninth outside attack on the verdict and the audit trail (issue #17, "Done when"), end to end against
the stand-in, on the newest paths: ROLLBACK_BATCH_SIZE (joined rollback batches), STAGE_FIRST 'false',
re-deploys of the live release, target groups TARGET_GROUPS does not name. Each test asserts what should
hold; the disk (``current``), the ledger, the result file and the load balancer must agree."""

from __future__ import annotations

import io
import tarfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from e2e.release_support import A, B, build
from e2e.test_attack_held import fleet_on_disk, ledger_fleet, result, stop_at
from e2e.test_ledger import entries as ledger_entries
from e2e.test_load_balancer import Fleet, every_target_in_service, make_fleet
from e2e.test_releases import APP_DIR, live, release_env
from fakes.bitbucket_reports import fake_bitbucket, proxy_env
from standin import StandIn
from support import run_pipe, wait_until

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # the stand-in's BITBUCKET_COMMIT
HOLD = "/srv/hold-rollback"  # on an instance: its switch back to A hangs in the activation
# the activation says what it activates; the switch back to A hangs where HOLD exists
ACTIVATE = (
    'echo "activated $(cat version.txt)"\n'
    f'if [ "$(cat version.txt)" = A ] && [ -e {HOLD} ]; then echo holding-rollback; sleep 600; fi'
)


def rolling(standin: StandIn, fleet: Fleet, clone: Path, bucket: str, service: str, **extra: str) -> dict[str, str]:
    variables = {"TARGET_GROUPS": fleet.group_name, "ACTIVATE_COMMANDS": ACTIVATE, "MIN_HEALTHY": "0", **extra}
    return release_env(standin, fleet.ids, clone, bucket, service, **variables)


def rolling_b(standin: StandIn, fleet: Fleet, clone: Path, bucket: str, service: str, **extra: str) -> dict[str, str]:
    """B (build 2) to ``fleet`` one instance a batch: the rolling deploy the attacks cut into."""
    b = {"ARTIFACT": build(clone, "B"), "BITBUCKET_BUILD_NUMBER": "2", "BATCH_SIZE": "1"}
    return rolling(standin, fleet, clone, bucket, service, **b, **extra)


def ship_a(standin: StandIn, fleet: Fleet, clone: Path, bucket: str, service: str) -> None:
    env = rolling(standin, fleet, clone, bucket, service, ARTIFACT=build(clone, "A"), BITBUCKET_BUILD_NUMBER="1")
    done = run_pipe(env, timeout=300)
    assert done.returncode == 0, done.output


@pytest.fixture
def a_live(standin: StandIn, tmp_path: Path, bucket: str, service: str) -> Fleet:
    """Three instances behind a target group, release A live on them."""
    fleet = make_fleet(standin, 3)
    ship_a(standin, fleet, tmp_path, bucket, service)
    return fleet


def unnamed_group(standin: StandIn, ids: list[str]) -> tuple[str, str]:
    """A second target group holding ``ids``, which TARGET_GROUPS does not name: its name and ARN."""
    name = f"admin-{uuid.uuid4().hex[:8]}"
    arn = standin.create_target_group(name, ids, deregistration_delay=20)
    standin.wait_target_states(arn, ids, "healthy", timeout=60)
    return name, arn


def b_failing_on(
    standin: StandIn, fleet: Fleet, clone: Path, bucket: str, service: str, unhealthy: str, **extra: str
) -> dict[str, str]:
    """B, one instance per batch, its health check failing on ``unhealthy`` (the last batch); the
    batches before it go back together (ROLLBACK_BATCH_SIZE max)."""
    return rolling(
        standin,
        fleet,
        clone,
        bucket,
        service,
        ARTIFACT=build(clone, "B"),
        BITBUCKET_BUILD_NUMBER="2",
        BATCH_SIZE="1",
        MIN_HEALTHY="0",
        ROLLBACK_BATCH_SIZE="max",
        HEALTHCHECK_COMMANDS=f'[ "$AWS_SSM_INSTANCE_ID" != "{unhealthy}" ]',
        HEALTHCHECK_RETRIES="1",
        **extra,
    )


def test_a_stop_during_a_joined_rollback_batch_is_recorded_as_it_is_on_disk(
    standin: StandIn, a_live: Fleet, tmp_path: Path, bucket: str, service: str
) -> None:
    fleet = a_live
    _first, second, third = fleet.ids
    standin.instance_path(second, HOLD).touch()
    env = b_failing_on(standin, fleet, tmp_path, bucket, service, third)
    code, output = stop_at(env, f"{second} | holding-rollback")

    disk = fleet_on_disk(standin, fleet.ids)
    assert code == 1, output
    assert "Switching 2 instance(s) back" in output, output  # batches 2 and 1 joined
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == (B, "stopped"), entry
    assert ledger_fleet(entry) == disk, (entry, disk)
    document = result(tmp_path)
    assert document["fleet"] == disk
    assert document["rollback"] == "interrupted"
    wait_until(lambda: every_target_in_service(standin, fleet), "every target back in service", 120)


def test_a_switch_back_that_times_out_in_a_joined_rollback_batch_leaves_both_groups_serving_the_old_release(
    standin: StandIn, a_live: Fleet, tmp_path: Path, bucket: str, service: str
) -> None:
    fleet = a_live
    first, second, third = fleet.ids
    other, other_arn = unnamed_group(standin, [first, second])
    standin.instance_path(second, HOLD).touch()
    env = b_failing_on(standin, fleet, tmp_path, bucket, service, third, EXECUTION_TIMEOUT="30")
    run = run_pipe(env, timeout=400)

    disk = fleet_on_disk(standin, fleet.ids)
    assert run.returncode == 1, run.output
    assert disk == dict.fromkeys(fleet.ids, A), run.output  # the timed-out switch back did switch
    joined = "batches 2, 1 of 3 (2 instance(s))"
    assert f"{joined}: draining from {fleet.group_name}, {other}" in run.output, run.output
    assert f"{joined}: registered again in {fleet.group_name}, {other}" in run.output
    assert f"{second}: TimedOut/ExecutionTimedOut" in run.output
    entry = ledger_entries(standin, service)[-1]
    assert entry["release"] == B and entry["status"] != "succeeded", entry
    assert ledger_fleet(entry) == disk
    assert result(tmp_path)["fleet"] == disk
    assert f"run {A} (the release live before)" in run.output.rsplit("Now ", 1)[1]
    wait_until(lambda: every_target_in_service(standin, fleet), "every target back in service", 120)
    standin.wait_target_states(other_arn, [first, second], "healthy", timeout=120)


def test_rollback_batch_size_max_is_not_bounded_by_a_small_group_only_one_instance_going_back_is_in(
    standin: StandIn, a_live: Fleet, tmp_path: Path, bucket: str, service: str
) -> None:
    fleet = a_live
    first, _second, third = fleet.ids
    other, other_arn = unnamed_group(standin, [first])
    run = run_pipe(b_failing_on(standin, fleet, tmp_path, bucket, service, third), timeout=400)

    assert run.returncode == 1, run.output
    assert fleet_on_disk(standin, fleet.ids) == dict.fromkeys(fleet.ids, A), run.output
    assert f"Switching 2 instance(s) back to the release that was live before, {A}" in run.output, run.output
    assert f"batches 2, 1 of 3 (2 instance(s)): draining from {fleet.group_name}, {other}" in run.output
    wait_until(lambda: every_target_in_service(standin, fleet), "every target back in service", 120)
    standin.wait_target_states(other_arn, [first], "healthy", timeout=120)


def test_a_failed_redeploy_of_the_live_release_with_joined_rollback_batches_stays_on_it(
    standin: StandIn, a_live: Fleet, tmp_path: Path, bucket: str, service: str
) -> None:
    fleet = a_live
    first, second, third = fleet.ids
    env = rolling(standin, fleet, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "B"), BITBUCKET_BUILD_NUMBER="2")
    assert run_pipe(env, timeout=300).returncode == 0
    env = b_failing_on(standin, fleet, tmp_path, bucket, service, third)
    del env["ARTIFACT"]
    run = run_pipe(env | {"RELEASE": B}, timeout=300)  # the live release again, by its id

    assert run.returncode == 1, run.output
    assert fleet_on_disk(standin, fleet.ids) == dict.fromkeys(fleet.ids, B), run.output  # never back to A
    assert [live(standin, i) for i in fleet.ids] == ["B", "B", "B"]
    assert f"back to the release that was live before, {A}" not in run.output
    assert f"Now {first}, {second}, {third} run {B} (the release live before, deployed again)." in run.output
    assert result(tmp_path)["fleet"] == dict.fromkeys(fleet.ids, B)
    entry = ledger_entries(standin, service)[-1]
    assert ledger_fleet(entry) == dict.fromkeys(fleet.ids, B)
    wait_until(lambda: every_target_in_service(standin, fleet), "every target back in service", 120)


def hostile(clone: Path) -> str:
    """A .tgz with a setuid file, a hard link to /etc/passwd and a device node, besides version.txt."""
    with tarfile.open(clone / "hostile.tgz", "w:gz") as archive:
        data = b"C\n"
        info = tarfile.TarInfo("version.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
        suid = tarfile.TarInfo("bin/tool")
        suid.size, suid.mode = len(data), 0o4755
        archive.addfile(suid, io.BytesIO(data))
        link = tarfile.TarInfo("passwd")
        link.type, link.linkname = tarfile.LNKTYPE, "/etc/passwd"
        archive.addfile(link)
        device = tarfile.TarInfo("null")
        device.type, device.devmajor, device.devminor = tarfile.CHRTYPE, 1, 3
        archive.addfile(device)
    return "hostile.tgz"


def test_a_hostile_archive_without_staging_is_refused_before_anything_is_sent(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    fleet = make_fleet(standin, 2)
    ship_a(standin, fleet, tmp_path, bucket, service)
    env = rolling(standin, fleet, tmp_path, bucket, service, ARTIFACT=hostile(tmp_path), BITBUCKET_BUILD_NUMBER="3") | {
        "STAGE_FIRST": "false",
        "BATCH_SIZE": "1",
    }
    run = run_pipe(env, timeout=300)

    assert run.returncode == 1, run.output
    for name in ("bin/tool", "passwd", "null"):
        assert name in run.output, run.output
    assert "Traceback" not in run.output
    assert "draining from" not in run.output
    assert [live(standin, i) for i in fleet.ids] == ["A", "A"]
    for instance_id in fleet.ids:
        releases = standin.instance_path(instance_id, f"{APP_DIR}/releases")
        assert sorted(p.name for p in releases.iterdir()) == [A]
    assert every_target_in_service(standin, fleet)


def test_no_secret_leaks_from_a_failed_release_previous_in_joined_batches_with_debug_and_code_insights(
    standin: StandIn, a_live: Fleet, tmp_path: Path, bucket: str, service: str
) -> None:
    fleet = a_live
    first, second, third = fleet.ids
    secret = "att9-Pa55-" + uuid.uuid4().hex[:10]
    path = f"/attack9/{uuid.uuid4().hex[:8]}/db_password"
    standin.put_secret(path, secret, standin.create_key("attack 9"))
    leak = 'echo "pw $DB_PASSWORD"; printf "%s\\n" "$DB_PASSWORD" >&2'
    with_secret = {"SECRETS": f"DB_PASSWORD={path}", "ACTIVATE_COMMANDS": f"{ACTIVATE}\n{leak}"}
    env = rolling(standin, fleet, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "B"), BITBUCKET_BUILD_NUMBER="2")
    assert run_pipe(env | with_secret, timeout=300).returncode == 0
    with fake_bitbucket() as bitbucket:
        env = b_failing_on(standin, fleet, tmp_path, bucket, service, third)
        del env["ARTIFACT"]
        env |= with_secret | {
            "BITBUCKET_BUILD_NUMBER": "3",
            "RELEASE": "previous",
            "DEBUG": "true",
            "CODE_INSIGHTS": "true",
        }
        env["HEALTHCHECK_COMMANDS"] = f"{leak}\n{env['HEALTHCHECK_COMMANDS']}"
        run = run_pipe(env | proxy_env(bitbucket, str(urlsplit(standin.endpoint).hostname)), timeout=400)

    assert run.returncode == 1, run.output
    assert "DEBUG:" in run.output and "pw ****" in run.output  # debug was on, the commands echoed it
    assert [live(standin, i) for i in fleet.ids] == ["B", "B", "B"], run.output
    assert f"RELEASE: previous is {A}" in run.output
    assert bitbucket.report("acme/web-api", COMMIT).body["result"] == "FAILED"
    emitted = {
        "output": run.output,
        "result file": (tmp_path / "ssm-deploy-result.json").read_text(),
        "result .env": (tmp_path / "ssm-deploy-result.json.env").read_text(),
        "Code Insights": str(bitbucket.requests),
        "ledger": str(ledger_entries(standin, service)),
        "sent commands": str([sent.request for sent in standin.sent_commands()]),
    }
    assert [where for where, text in emitted.items() if secret in text] == []
    assert {first, second} <= set(result(tmp_path)["fleet"])


def test_a_stop_while_a_joined_rollback_batch_drains_leaves_it_on_the_new_release_and_says_so(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    fleet = make_fleet(standin, 3, deregistration_delay=600)  # 30 s of draining at the stand-in's scale
    first, second, third = fleet.ids
    env = rolling(standin, fleet, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "A"), BITBUCKET_BUILD_NUMBER="1")
    assert run_pipe(env | {"BATCH_SIZE": "3", "DRAIN_TIMEOUT": "120"}, timeout=300).returncode == 0
    env = b_failing_on(standin, fleet, tmp_path, bucket, service, third, DRAIN_TIMEOUT="120")
    code, output = stop_at(env, "batches 2, 1 of 3 (2 instance(s)): draining from")

    disk = fleet_on_disk(standin, fleet.ids)
    assert code == 1, output
    assert disk == {first: B, second: B, third: A}, output
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == (B, "stopped"), entry
    assert ledger_fleet(entry) == disk
    document = result(tmp_path)
    assert document["fleet"] == disk
    assert [batch["outcome"] for batch in document["batches"]][:2] != ["rolled back", "rolled back"]
    now = output.rsplit("Now ", 1)[1]
    assert f"{first}, {second} run {B}" in now or f"{second}, {first} run {B}" in now, now
    wait_until(lambda: every_target_in_service(standin, fleet), "every target back in service", 120)
