"""The thirty-third outside attack (issue #17), on the ledger and ACTION: status across sequences of deploys
and mixed fleets: a deploy that fails on some instances only, then RELEASE: previous, then the same build
again, then status; a fleet whose instances differ at the start (one launched since the last deploy, one
switched by hand); KEEP_RELEASES along the way. At each step the three truths are compared: what each
instance runs (``current`` on disk), what the ledger says, what the step said (exit code, last line, result
file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from e2e.release_support import A, B, C, build
from e2e.test_attack_held import fleet_on_disk, ledger_fleet, result
from e2e.test_ledger import entries as ledger_entries
from e2e.test_releases import APP_DIR, release_env, releases
from standin import StandIn
from support import PipeRun, run_pipe


def last_line(run: PipeRun) -> str:
    lines = [line for line in run.output.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def status(standin: StandIn, ids: list[str], clone: Path, bucket: str, service: str) -> tuple[PipeRun, dict[str, Any]]:
    env = release_env(standin, ids, clone, bucket, service, ACTION="status", BITBUCKET_BUILD_NUMBER="99")
    done = run_pipe(env, timeout=300)
    return done, result(clone)


def ship(
    standin: StandIn, ids: list[str], clone: Path, bucket: str, service: str, number: int, **extra: str
) -> PipeRun:
    env = release_env(standin, ids, clone, bucket, service, BITBUCKET_BUILD_NUMBER=str(number), **extra)
    return run_pipe(env, timeout=300)


def agree(standin: StandIn, ids: list[str], clone: Path, service: str) -> dict[str, str]:
    """What each instance runs; asserts the newest ledger version and the result file say the same."""
    disk = fleet_on_disk(standin, ids)
    entry = ledger_entries(standin, service)[-1]
    assert ledger_fleet(entry) == disk, (entry, disk)
    assert result(clone)["fleet"] == disk, (result(clone), disk)
    return disk


# --- 2: a mixed fleet at the start: one on the live release, one switched by hand, one launched since ----


@pytest.mark.slow
def test_a_failed_deploy_over_a_mixed_fleet_records_what_each_instance_runs_and_status_names_the_rest(  # held
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A then B live on two instances; an operator switches the second back to A by hand; a third is launched
    since (no release). C to all three fails its health check everywhere: the switch back goes to the ledger's
    live release B (README: the ledger's, not what the instance ran); the new instance never had B (exit 87,
    it stays on C). The ledger, the result file and status must say what each instance runs, and RELEASE:
    previous must then bring every instance to B, fetching it where it lacks it."""
    on_b, by_hand = old = standin.launch(2)
    for version, number in (("A", 1), ("B", 2)):
        first = ship(standin, old, tmp_path, bucket, service, number, ARTIFACT=build(tmp_path, version))
        assert first.returncode == 0, first.output
    switched = standin.run_on_instance(
        by_hand, f"ln -sfn releases/{A} {APP_DIR}/current.tmp && mv -T {APP_DIR}/current.tmp {APP_DIR}/current"
    )
    assert switched.returncode == 0, switched.stderr
    (fresh,) = standin.launch(1)
    ids = [on_b, by_hand, fresh]

    failed = ship(
        standin, ids, tmp_path, bucket, service, 3,
        ARTIFACT=build(tmp_path, "C"), HEALTHCHECK_COMMANDS="false", HEALTHCHECK_RETRIES="1",
    )  # fmt: skip

    assert failed.returncode == 1, failed.output
    assert "Traceback" not in failed.output
    disk = agree(standin, ids, tmp_path, service)
    assert disk[on_b] == B and disk[by_hand] == B, (disk, failed.output[-4000:])
    entry = ledger_entries(standin, service)[-1]
    assert entry["status"] != "succeeded" and entry["release"] == C, entry
    # the new instance never had B: exit 87, it stays on C and is named, the ledger says partial
    assert disk[fresh] == C, disk
    assert entry["status"] == "partial", entry
    assert f"ROLLBACK FAILED on 1 of 3 instance(s): {fresh}: Failed (exit 87)" in last_line(failed), failed.output
    assert f"{fresh} runs {C} (the new release: rollback Failed (exit 87))" in last_line(failed), failed.output

    seen, said = status(standin, ids, tmp_path, bucket, service)
    assert said["fleet"] == disk, said
    assert seen.returncode == 1 and "No drift" not in seen.output, seen.output
    assert f"Drift on 1 of 3 instance(s) ({fresh})" in last_line(seen), seen.output

    back = ship(standin, ids, tmp_path, bucket, service, 4, RELEASE="previous")
    assert "Traceback" not in back.output
    assert back.returncode == 0, back.output[-4000:]
    assert agree(standin, ids, tmp_path, service) == dict.fromkeys(ids, B)
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"]) == (B, "succeeded"), entry
    seen, said = status(standin, ids, tmp_path, bucket, service)
    assert seen.returncode == 0 and f"No drift: 3 instance(s) run {B}" in seen.output, seen.output


# --- 1 and 3: a deploy failing on one instance only, RELEASE: previous, the same build again, KEEP_RELEASES --


@pytest.mark.slow
def test_a_partly_failed_deploy_then_release_previous_then_the_same_build_again_keep_every_truth_in_step(  # held
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A then B live on three instances (KEEP_RELEASES 2). C, one instance a batch, fails its health check on
    the third only: every instance goes back to B. RELEASE: previous goes to A. The same C build again goes
    live. At each step the ledger, the result file, status and the disk agree, and pruning never removes
    the release RELEASE: previous would go to."""
    ids = standin.launch(3)
    keep = {"KEEP_RELEASES": "2"}
    for version, number in (("A", 1), ("B", 2)):
        done = ship(standin, ids, tmp_path, bucket, service, number, ARTIFACT=build(tmp_path, version), **keep)
        assert done.returncode == 0, done.output
    artifact_c = build(tmp_path, "C")

    failed = ship(
        standin, ids, tmp_path, bucket, service, 3, ARTIFACT=artifact_c, BATCH_SIZE="1", HEALTHCHECK_RETRIES="1",
        HEALTHCHECK_COMMANDS=f'[ "$AWS_SSM_INSTANCE_ID" != "{ids[2]}" ]', **keep,
    )  # fmt: skip
    assert failed.returncode == 1, failed.output
    assert agree(standin, ids, tmp_path, service) == dict.fromkeys(ids, B), failed.output[-4000:]
    assert ledger_entries(standin, service)[-1]["status"] == "rolled back"
    seen, _ = status(standin, ids, tmp_path, bucket, service)
    assert seen.returncode == 0 and f"No drift: 3 instance(s) run {B}" in seen.output, seen.output

    back = ship(standin, ids, tmp_path, bucket, service, 4, RELEASE="previous", BATCH_SIZE="1", **keep)
    assert back.returncode == 0, back.output[-4000:]
    assert agree(standin, ids, tmp_path, service) == dict.fromkeys(ids, A)
    entry = ledger_entries(standin, service)[-1]
    assert (entry["action"], entry["release"], entry["status"]) == ("rollback", A, "succeeded"), entry
    for i in ids:
        assert B in releases(standin, i), (i, releases(standin, i))  # RELEASE: previous now goes to B
    seen, _ = status(standin, ids, tmp_path, bucket, service)
    assert seen.returncode == 0 and f"No drift: 3 instance(s) run {A}" in seen.output, seen.output

    again = ship(standin, ids, tmp_path, bucket, service, 5, RELEASE=C, BATCH_SIZE="1", **keep)  # C pruned since
    assert again.returncode == 0, again.output[-4000:]
    assert agree(standin, ids, tmp_path, service) == dict.fromkeys(ids, C)
    entry = ledger_entries(standin, service)[-1]
    assert (entry["release"], entry["status"], entry["previous"]) == (C, "succeeded", A), entry
    seen, said = status(standin, ids, tmp_path, bucket, service)
    assert seen.returncode == 0 and f"No drift: 3 instance(s) run {C}" in seen.output, seen.output
    assert said["live_release"] == C

    previous = ship(standin, ids, tmp_path, bucket, service, 6, RELEASE="previous", **keep)
    assert previous.returncode == 0, previous.output[-4000:]
    assert agree(standin, ids, tmp_path, service) == dict.fromkeys(ids, A)


def test_a_deploy_that_fails_its_health_check_does_not_prune_the_release_release_previous_goes_to(
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """Found by attack 33 (fixed: the plan's back_now): each instance prunes as its own install succeeds,
    before the health check and the later batches, so a deploy that then failed and went back to the live B
    had already removed A, where RELEASE: previous goes (fetched again from S3, slower, and only while the
    artifact is there)."""
    ids = standin.launch(1)
    for version, number in (("A", 1), ("B", 2)):
        done = ship(
            standin, ids, tmp_path, bucket, service, number, ARTIFACT=build(tmp_path, version), KEEP_RELEASES="2"
        )
        assert done.returncode == 0, done.output
    failed = ship(
        standin, ids, tmp_path, bucket, service, 3, ARTIFACT=build(tmp_path, "C"), KEEP_RELEASES="2",
        HEALTHCHECK_COMMANDS="false", HEALTHCHECK_RETRIES="1",
    )  # fmt: skip

    assert failed.returncode == 1, failed.output
    assert agree(standin, ids, tmp_path, service) == dict.fromkeys(ids, B)
    assert ledger_entries(standin, service)[-1]["status"] == "rolled back"
    assert A in releases(standin, ids[0]), releases(standin, ids[0])  # where RELEASE: previous goes now


# --- 4: status on currents an operator mangled, and an instance that cannot be asked (held) ---------------


def test_status_on_currents_an_operator_mangled_fails_naming_each_and_the_instance_it_could_not_ask(  # held
    standin: StandIn, tmp_path: Path, bucket: str, service: str
) -> None:
    """A live on four instances; then by hand: current points to a release directory that does not exist, to
    the live release by an absolute path (no drift: the same release), and is replaced by a copy of the
    release (a directory, no release). Status is also given an instance id SSM does not manage. It must fail
    (exit 1), name the two drifted instances and the one it could not ask, and never say No drift."""
    ids = standin.launch(4)
    done = ship(standin, ids, tmp_path, bucket, service, 1, ARTIFACT=build(tmp_path, "A"))
    assert done.returncode == 0, done.output
    clean, dangling, absolute, directory = ids
    for instance, how in (
        (dangling, f"ln -sfn releases/000009-0123456 {APP_DIR}/current"),
        (absolute, f"ln -sfn {APP_DIR}/releases/{A} {APP_DIR}/current"),
        (directory, f"rm {APP_DIR}/current && cp -a {APP_DIR}/releases/{A} {APP_DIR}/current"),
    ):
        mangled = standin.run_on_instance(instance, how)
        assert mangled.returncode == 0, mangled.stderr
    unmanaged = "i-0123456789abcdef0"

    seen, said = status(standin, [*ids, unmanaged], tmp_path, bucket, service)

    assert seen.returncode == 1 and "No drift" not in seen.output, seen.output
    assert said["status"] == "drift" and said["message"] in last_line(seen), (said, last_line(seen))
    assert said["fleet"] == {
        clean: A,
        absolute: A,
        dangling: "none",  # a release directory that does not exist runs nothing (attack 37)
        directory: "none",
        unmanaged: "unknown",
    }, said
    assert sorted(d["instance_id"] for d in said["drifted_instances"]) == sorted([dangling, directory]), said
    assert [u["instance_id"] for u in said["unknown_instances"]] == [unmanaged], said
    assert all(i in last_line(seen) for i in (dangling, directory, unmanaged)), last_line(seen)
    # attack 33's note, fixed: one reason per instance, not "its SSM Agent is not online" first
    assert f"Not asked, not managed by SSM in this region: {unmanaged}" in seen.output, seen.output
    assert "Agent is not online" not in seen.output, seen.output
    assert "current points at releases/000009-0123456, which is missing" in seen.output, seen.output
    assert clean not in last_line(seen) and absolute not in last_line(seen), last_line(seen)
