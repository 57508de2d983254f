"""The sixteenth outside attack (b) on the verdict and the audit trail (issue #17, "Done when"), end to end
against the stand-in: hostile zip archives (symlinks in the entries' Unix attributes, duplicate names,
backslashes, a NUL in a name, a huge declared size), pm2 with a rotated secret and a changed VARIABLES value,
and a target group TARGET_GROUPS does not name; after each, the three truths compared: what the instances run
(APP_DIR/current), what the ledger says, what the step said (exit code, result file), and ACTION: status.

Found and fixed: a zip whose files declare more than 5 GiB unpacked (a zip bomb) was uploaded and unpacked on
every instance while it served; a target already unhealthy in a group TARGET_GROUPS does not name failed every
release (waited for after the switch, rolled back)."""

from __future__ import annotations

import stat
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e.release_support import A, B, build
from e2e.test_attack9 import rolling, rolling_b
from e2e.test_attack10 import ship
from e2e.test_attack15 import _status
from e2e.test_attack_held import fleet_on_disk, ledger_fleet, result
from e2e.test_ledger import entries as ledger_entries
from e2e.test_load_balancer import every_target_in_service, make_fleet
from e2e.test_node_pm2 import sha16
from e2e.test_proof_of_serving import README_ECOSYSTEM, RELEASE_A, RELEASE_B, ROTATED, RecipeFleet
from e2e.test_proof_of_serving import fleet_with as fleet_with
from e2e.test_releases import APP_DIR, release_env
from standin import StandIn
from support import run_pipe, wait_until
from unit.release_support import declare_size

FILE, LINK, DIRECTORY = stat.S_IFREG | 0o644, stat.S_IFLNK | 0o777, stat.S_IFDIR | 0o755
DECLARED = 3 * 1024**3  # what each file of the "huge" zip says it unpacks to: two of them, 6 GiB in all


def zipped(clone: Path, entries: list[tuple[str, bytes, int]], name: str = "web-api.zip") -> str:
    """A zip made on Unix (create_system 3) holding ``entries`` (name, bytes, st_mode), deflated."""
    with zipfile.ZipFile(clone / name, "w") as archive:
        for entry_name, data, mode in entries:
            info = zipfile.ZipInfo(entry_name, date_time=(2020, 1, 1, 0, 0, 0))
            info.create_system, info.external_attr, info.compress_type = 3, mode << 16, zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return name


def uploaded(standin: StandIn, bucket: str) -> list[str]:
    listed = standin.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])
    return [item["Key"] for item in listed if item["Key"].endswith(".zip")]


def _assert_a_still_live(standin: StandIn, ids: list[str], clone: Path, bucket: str, service: str) -> None:
    """Every instance runs A, the ledger's newest version is A live on all of them, status finds no drift."""
    disk = fleet_on_disk(standin, ids)
    assert disk == dict.fromkeys(ids, A), disk
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == (A, "succeeded"), entry
    assert ledger_fleet(entry) == disk, entry
    check = _status(standin, ids, clone, bucket, service)
    assert check.returncode == 0, check.output
    assert f"No drift: {len(ids)} instance(s) run {A}, the live release" in check.output, check.output


def _ship_a(standin: StandIn, ids: list[str], clone: Path, bucket: str, service: str) -> None:
    ship(release_env(standin, ids, clone, bucket, service, ARTIFACT=build(clone, "A"), BITBUCKET_BUILD_NUMBER="1"))


@pytest.mark.slow
def test_a_zip_with_a_symlink_out_a_duplicate_and_a_backslash_is_refused_before_upload_and_a_stays_live(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on one instance. B is a zip whose entries are a symlink leaving the release (its type only in
    the entry's Unix attributes), a name stored twice, a name with backslashes and a directory symlink with a
    file below it: the pipe refuses it naming each entry, uploads nothing, switches nothing; the ledger
    still calls A live, the result file says the deploy failed, and ACTION: status finds no drift."""
    ids = standin.launch(1)
    _ship_a(standin, ids, tmp_path, bucket, service)
    hostile = zipped(
        tmp_path,
        [
            ("version.txt", b"B\n", FILE),
            ("etc", b"../../../etc", LINK),
            ("version.txt", b"B2\n", FILE),
            ("..\\..\\root\\x", b"x", FILE),
            ("s/", b".", LINK),
            ("s/y", b"y", FILE),
        ],
    )

    run = run_pipe(
        release_env(standin, ids, tmp_path, bucket, service, ARTIFACT=hostile, BITBUCKET_BUILD_NUMBER="2"), timeout=300
    )

    assert run.returncode == 1, run.output
    assert "Traceback" not in run.output
    for named in ("etc is a symlink to ../../../etc", "version.txt appears twice", "backslash", "s/y is inside s"):
        assert named in run.output, (named, run.output)
    assert uploaded(standin, bucket) == [], uploaded(standin, bucket)
    assert result(tmp_path)["status"] != "succeeded", result(tmp_path)
    _assert_a_still_live(standin, ids, tmp_path, bucket, service)


@pytest.mark.slow
def test_a_zip_with_an_inside_symlink_and_a_nul_in_a_name_goes_live_as_python_reads_it(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A zip with a symlink inside the release (its type in the Unix attributes) and a name holding a NUL
    (python's zipfile, on both sides, stops the name there: "tail\\0../../x" is "tail") deploys: current
    points at B, the link is a link, nothing is written outside the release; ledger, result and status agree."""
    ids = standin.launch(1)
    name = zipped(
        tmp_path,
        [
            ("version.txt", b"000002-0123456\n", FILE),
            ("assets/", b"", DIRECTORY),
            ("assets/app.js", b"1", FILE),
            ("app.js", b"assets/app.js", LINK),
            ("tail\0../../escaped", b"t", FILE),
        ],
    )

    run = run_pipe(
        release_env(standin, ids, tmp_path, bucket, service, ARTIFACT=name, BITBUCKET_BUILD_NUMBER="2"), timeout=300
    )

    assert run.returncode == 0, run.output
    release = fleet_on_disk(standin, ids)[ids[0]]
    root = standin.instance_path(ids[0], f"{APP_DIR}/releases/{release}")
    assert (root / "app.js").is_symlink() and (root / "app.js").read_text() == "1"
    assert (root / "tail").read_text() == "t"
    assert not standin.instance_path(ids[0], f"{APP_DIR}/escaped").exists()
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == (release, "succeeded"), entry
    assert result(tmp_path)["status"] == "succeeded", result(tmp_path)
    assert _status(standin, ids, tmp_path, bucket, service).returncode == 0


@pytest.mark.slow
def test_a_zip_declaring_more_than_five_gib_unpacked_is_refused_before_upload(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on one instance. B is a small zip whose two files declare 3 GiB each unpacked (a zip bomb's
    header; the real bytes stay small so the stand-in's shared disk is never filled): the pipe refuses it
    before uploading, naming the entry and the bound, and A stays live in every truth."""
    ids = standin.launch(1)
    _ship_a(standin, ids, tmp_path, bucket, service)
    name = zipped(tmp_path, [("version.txt", b"B\n", FILE), ("big.bin", b"\0" * 4096, FILE)])
    declare_size(tmp_path / name, DECLARED)

    run = run_pipe(
        release_env(standin, ids, tmp_path, bucket, service, ARTIFACT=name, BITBUCKET_BUILD_NUMBER="2"), timeout=300
    )

    assert run.returncode == 1, run.output
    assert "Traceback" not in run.output
    assert "6.0 GiB" in run.output and "5.0 GiB" in run.output, run.output
    assert uploaded(standin, bucket) == [], uploaded(standin, bucket)
    _assert_a_still_live(standin, ids, tmp_path, bucket, service)


# --- pm2 with stale values ---


def held_value(standin: StandIn, instance_id: str, pid: int, name: str) -> str | None:
    """``name``'s value in the environment of the instance's process ``pid`` (its own number: each instance
    has its own PID namespace; the process is one of this machine's)."""
    host_pid = standin.host_pid(instance_id, pid)
    assert host_pid is not None, f"{instance_id} runs no process {pid}"
    for pair in Path(f"/proc/{host_pid}/environ").read_bytes().split(b"\0"):
        key, _, value = pair.partition(b"=")
        if key.decode(errors="replace") == name:
            return value.decode(errors="replace")
    return None


WITH_FEATURE = README_ECOSYSTEM.replace(
    "env_prod: { NODE_ENV: 'production', DB_PASSWORD: process.env.DB_PASSWORD }",
    "env_prod: { NODE_ENV: 'production', DB_PASSWORD: process.env.DB_PASSWORD, FEATURE: process.env.FEATURE }",
)


def _status_agrees(fleet: RecipeFleet, build: int) -> None:
    check = run_pipe(fleet.env(build, ACTION="status"), timeout=300)
    assert check.returncode == 0, check.output


@pytest.mark.slow
def test_a_secret_rotated_and_a_variables_value_changed_in_one_pm2_deploy_both_reach_the_app(
    fleet_with: Callable[[str], RecipeFleet],
) -> None:
    """The README's pm2 recipe with FEATURE listed in env_prod too. B introduces VARIABLES FEATURE=one; then C
    rotates DB_PASSWORD and changes FEATURE to two in the same deploy: Deployed, and every app of C holds the
    rotated secret and FEATURE=two (read from its /proc environ); the ledger calls C live; status agrees."""
    fleet = fleet_with(WITH_FEATURE)
    b = fleet.ship_with("B", 3, VARIABLES="FEATURE=one-value")
    assert b.returncode == 0, b.output
    fleet.standin.put_secret(fleet.secret, ROTATED, fleet.key_id)

    run = fleet.ship_with("C", 4, VARIABLES="FEATURE=two-value")

    assert run.returncode == 0, run.output
    assert "one-value" not in run.output and "two-value" not in run.output and ROTATED not in run.output
    for instance_id, document in fleet.served().items():
        assert document["release"] == "C", document
        assert document["db_password_sha256"] == sha16(ROTATED), document
        assert held_value(fleet.standin, instance_id, document["pid"], "FEATURE") == "two-value", document
    c = "000004-0123456"
    assert {fleet.live_release_dir(i) for i in fleet.ids} == {f"{APP_DIR}/releases/{c}"}
    entry = ledger_entries(fleet.standin, fleet.service)[-1]
    assert (entry["release"], entry["status"]) == (c, "succeeded"), entry
    _status_agrees(fleet, 5)


@pytest.mark.slow
def test_a_variables_name_the_readme_ecosystem_does_not_list_fails_the_pm2_deploy_and_a_stays_live(
    fleet_with: Callable[[str], RecipeFleet],
) -> None:
    """The README's pm2 recipe as is (its env block lists secrets, not VARIABLES); B adds VARIABLES FEATURE and
    rotates DB_PASSWORD. pm2 keeps the first start's environment: the deploy fails (exit 90) naming FEATURE,
    never a value; every instance runs and serves A; the ledger does not call B live; status agrees."""
    fleet = fleet_with(README_ECOSYSTEM)
    fleet.standin.put_secret(fleet.secret, ROTATED, fleet.key_id)

    run = fleet.ship_with("B", 2, VARIABLES="FEATURE=two-value")

    assert run.returncode == 1, run.output
    assert "without FEATURE, which this deploy exported" in run.output, run.output
    assert "two-value" not in run.output and ROTATED not in run.output
    assert {document["release"] for document in fleet.served().values()} == {"A"}
    assert {fleet.live_release_dir(i) for i in fleet.ids} == {f"{APP_DIR}/releases/{RELEASE_A}"}
    entry = ledger_entries(fleet.standin, fleet.service)[-1]
    assert entry["release"] == RELEASE_B and entry["status"] != "succeeded", entry
    assert ledger_fleet(entry) == dict.fromkeys(fleet.ids, RELEASE_A), entry
    _status_agrees(fleet, 3)


# --- other target groups ---


@pytest.mark.slow
def test_a_group_not_named_whose_health_check_never_passed_neither_blocks_nor_fails_a_good_release(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on two instances behind the named group. Both are also registered in a group TARGET_GROUPS does
    not name, whose health check path the app does not serve (404: unhealthy since long before the deploy).
    B is a good release: it goes live (drained from and registered back in both groups, a warning naming the
    other group's unhealthy targets), or the deploy is refused before anything is drained naming that group.
    Never: B switched, then rolled back as if it had made the targets unhealthy. Every truth agrees."""
    fleet = make_fleet(standin, 2)
    ship(rolling(standin, fleet, tmp_path, bucket, service, ARTIFACT=build(tmp_path, "A"), BITBUCKET_BUILD_NUMBER="1"))
    other = f"admin-{uuid.uuid4().hex[:8]}"
    other_arn = standin.create_target_group(other, fleet.ids, deregistration_delay=20, health_check_path="/nope")
    standin.wait_target_states(other_arn, fleet.ids, "unhealthy", timeout=60)
    env = rolling_b(standin, fleet, tmp_path, bucket, service, HEALTHY_TIMEOUT="20")

    run = run_pipe(env, timeout=600)

    assert "Traceback" not in run.output
    assert other in run.output, run.output
    disk = fleet_on_disk(standin, fleet.ids)
    entry = ledger_entries(standin, service)[-1]
    if run.returncode == 0:
        assert disk == dict.fromkeys(fleet.ids, B), disk
        assert (entry["release"], entry["status"]) == (B, "succeeded"), entry
    else:
        assert "draining" not in run.output, run.output
        assert disk == dict.fromkeys(fleet.ids, A), disk
    assert ledger_fleet(entry) == disk, entry
    assert result(tmp_path)["fleet"] == disk
    wait_until(lambda: every_target_in_service(standin, fleet), "every target back in service", 120)
    check = _status(standin, fleet.ids, tmp_path, bucket, service)
    assert check.returncode == 0, check.output


@pytest.mark.slow
def test_an_app_renamed_in_the_ecosystem_file_fails_naming_the_old_app_and_leaves_only_a_serving(
    fleet_with: Callable[[str], RecipeFleet],
) -> None:
    """A runs as pm2 app web-api (the README's file). B's ecosystem file renames it api: pm2 starts api next to
    web-api, which keeps running release A's code. The deploy must fail (exit 90) naming the process that runs
    A; every instance is switched back and serves A, no process runs B; ledger and status agree."""
    fleet = fleet_with(README_ECOSYSTEM)
    fleet.ecosystem = README_ECOSYSTEM.replace("name: 'web-api'", "name: 'api'")

    run = fleet.ship("B", 2)

    assert run.returncode == 1, run.output
    assert f"runs release {RELEASE_A}, not {RELEASE_B}" in run.output, run.output
    assert {document["release"] for document in fleet.served().values()} == {"A"}
    assert {fleet.live_release_dir(i) for i in fleet.ids} == {f"{APP_DIR}/releases/{RELEASE_A}"}
    for instance in fleet.ids:
        listed = fleet.standin.run_on_instance(instance, f"ls -l /proc/*/cwd 2>/dev/null | grep {RELEASE_B} || true")
        assert listed.stdout.strip() == "", listed.stdout
    entry = ledger_entries(fleet.standin, fleet.service)[-1]
    assert entry["release"] == RELEASE_B and entry["status"] != "succeeded", entry
    assert ledger_fleet(entry) == dict.fromkeys(fleet.ids, RELEASE_A), entry
    _status_agrees(fleet, 3)
