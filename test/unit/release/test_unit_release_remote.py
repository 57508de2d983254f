"""pipe.release.remote: the release scripts, run for real (sh and bash, tar, sha256sum, a fake
``aws``) against an APP_DIR in a temp dir; RUN_AS with a real second user (tests run as root in CI)."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import pwd
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipe.config.release import app_dir_problem, release_id, release_id_problem, run_as_problem, shared_path_problem
from pipe.model import NO_RELEASE, SecretRef
from pipe.release.remote import (
    CURRENT_REPORT,
    HISTORY_LIMIT,
    ReleaseExit,
    ReleasePlan,
    as_user,
    current_at_start,
    current_report,
    install_body,
    install_steps,
    read_current_body,
    release_exit_meaning,
    stage_body,
    switch_back_body,
)
from unit.release_support import (
    ACTIVATE,
    APP_USER,
    SHELLS,
    SYSTEM_PATH,
    A,
    B,
    Box,
    C,
    D,
    ensure_app_user,
    is_root,
    open_temp_dir,
    owners,
)

needs_root = pytest.mark.skipif(not is_root(), reason="RUN_AS needs root to create and become a second user")


@pytest.fixture
def box() -> Iterator[Box]:
    for root in open_temp_dir():
        yield Box(root)


@pytest.fixture(scope="session")
def app_user() -> pwd.struct_passwd:
    if not is_root():
        pytest.skip("RUN_AS needs root to create and become a second user")
    return ensure_app_user()


def install(box: Box, release: str, shell: str = SHELLS[0], **changes: object) -> tuple[int, str]:
    """Install ``release`` from a fresh artifact; returns the exit code and stderr."""
    artifact = box.release_artifact(release)
    run = box.run(install_body(box.plan(release, artifact, **changes)), shell)
    return run.code, run.stderr


# --- the happy path -------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("archive_format", ["tar.gz", "zip"])
def test_release_a_then_b_switches_current_and_keeps_a(box: Box, shell: str, archive_format: str) -> None:
    for release in (A, B):
        artifact = box.release_artifact(release, archive_format)
        run = box.run(install_body(box.plan(release, artifact)), shell)
        assert run.code == 0, run.stderr
        assert run.messages == []

    assert box.current() == f"releases/{B}"
    assert box.releases() == [A, B]
    assert (box.app_dir / "current" / "app.txt").read_text() == B
    assert (box.app_dir / "releases" / A / "bin" / "start.sh").read_text() == "echo start"
    assert box.state("previous").strip() == A
    assert box.history() == [A, B]
    assert box.observed("commands") == [A, B]  # COMMANDS ran inside each new release, before the switch
    assert box.observed("activations") == [A, B]  # ACTIVATE_COMMANDS ran inside `current`
    assert len(box.downloads()) == 2
    assert not list((box.app_dir / ".ssm-deploy").glob("tmp.*"))  # the download is gone
    assert "release 000002-bbbbbbb is live on this instance (previous: 000001-aaaaaaa)" in run.stdout


def test_download_uses_the_region_and_the_url(box: Box) -> None:
    artifact = box.release_artifact(A)
    run = box.run(install_body(box.plan(A, artifact, region="ap-northeast-2")))
    assert run.code == 0, run.stderr
    [download] = box.downloads()
    assert download.startswith(f"aws s3 cp --region ap-northeast-2 --only-show-errors {artifact.url} ")


RUN = "5f0c6a7e-1d2b-4c3d-8e9f-0a1b2c3d4e5f"  # a pipe run's id (DeployPlan.run_id)


@pytest.mark.parametrize("shell", SHELLS)
def test_the_same_runs_install_started_again_by_the_agent_is_refused_and_nothing_runs_twice(
    box: Box, shell: str
) -> None:
    """After a reboot the SSM Agent runs a command it had begun again, from the start: the install finds its
    own run's record (.ssm-deploy/run) and refuses (79) before COMMANDS, the switch or the activation."""
    install(box, A)
    body = install_body(box.plan(B, box.release_artifact(B)), run_id=RUN)
    assert box.run(body, shell).code == 0

    again = box.run(body, shell)

    assert again.code == ReleaseExit.STARTED_AGAIN, again.stderr
    assert again.messages == [
        "ssm-deploy: the SSM Agent started this deploy again on this instance (after a reboot or an agent restart): "
        f"refused, it did not run twice; current points at releases/{B}. Check what the first run did: ACTION: status"
    ]
    assert box.observed("commands") == [A, B] and box.observed("activations") == [A, B]  # each once
    assert box.history() == [A, B] and box.current() == f"releases/{B}"
    assert current_report(again.stdout) == B  # the pipe reads where current points, as on every failure
    assert current_at_start(again.stdout) == A  # where the first start found it: the rollback's, without a ledger
    assert box.state("run") == f"{RUN} install\nreleases/{A}\n"


def test_a_new_run_installs_again_and_the_same_runs_staging_then_install_both_run(box: Box) -> None:
    """Another pipe run (a re-run of the step) is no second start; nor is the install after its own run's
    staging. The staging started again is refused as the install is. The Auto Scaling association's
    install carries no run (AWS applies it again on purpose): test_rerun_of_the_live_release_... ."""
    artifact = box.release_artifact(A)
    plan = box.plan(A, artifact)
    assert box.run(stage_body(plan, RUN)).code == 0
    assert box.run(stage_body(plan, RUN)).code == ReleaseExit.STARTED_AGAIN
    assert box.run(install_body(plan, staged=True, run_id=RUN)).code == 0
    assert box.run(install_body(plan, run_id="another-run")).code == 0

    assert box.observed("commands") == [A]  # staged once; the install used the staged copy
    assert box.observed("activations") == [A, A]
    assert box.state("run") == (  # newest first: each run, and where current pointed as it began
        f"another-run install\nreleases/{A}\n{RUN} install\nnothing\n{RUN} stage\nnothing\n"
    )


@pytest.mark.parametrize("shell", SHELLS)
def test_a_run_started_again_after_another_run_recorded_itself_is_still_refused(box: Box, shell: str) -> None:
    """Attack 36: deploys that overlap (LOCK: false) queue for the instance's lock; after a reboot the agent
    starts them all again in no set order. The one that waited may record itself first: the one that ran
    is still refused, and says where current pointed as its own first start began."""
    install(box, A)
    first = install_body(box.plan(B, box.release_artifact(B)), run_id=RUN)
    assert box.run(first, shell).code == 0  # the first start (its COMMANDS ran; the reboot cut it after)
    assert box.run(install_body(box.plan(C, box.release_artifact(C)), run_id="waited"), shell).code == 0

    again = box.run(first, shell)

    assert again.code == ReleaseExit.STARTED_AGAIN, again.stderr
    assert box.observed("commands") == [A, B, C]
    assert current_at_start(again.stdout) == A
    assert box.current() == f"releases/{C}"


def test_the_run_record_keeps_the_last_64_runs(box: Box) -> None:
    artifact = box.release_artifact(A)
    for number in range(70):
        assert box.run(install_body(box.plan(A, artifact), run_id=f"run-{number}")).code == 0
    records = box.state("run").split("\n")[:-1]
    assert records[0::2] == [f"run-{number} install" for number in range(69, 5, -1)]


def test_rerun_of_the_live_release_downloads_nothing_and_activates_again(box: Box) -> None:
    install(box, A)
    artifact = box.release_artifact(B)
    plan = box.plan(B, artifact)
    assert box.run(install_body(plan)).code == 0

    again = box.run(install_body(plan))

    assert again.code == 0, again.stderr
    assert len(box.downloads()) == 2  # A and B once each
    assert box.observed("commands") == [A, B]  # COMMANDS run once per release
    assert box.observed("activations") == [A, B, B]
    assert box.state("previous").strip() == A  # not B: nothing was switched
    assert box.history() == [A, B]
    assert "already live" in again.stdout


def test_redeploy_of_a_prepared_release_switches_without_downloading(box: Box) -> None:
    # RELEASE: previous / RELEASE: <id>: the release is still on the instance
    artifact_a = box.release_artifact(A)
    assert box.run(install_body(box.plan(A, artifact_a))).code == 0
    install(box, B)
    artifact_a.path.unlink()  # S3 would not even be asked

    run = box.run(install_body(box.plan(A, artifact_a)))

    assert run.code == 0, run.stderr
    assert box.current() == f"releases/{A}"
    assert len(box.downloads()) == 2
    assert box.observed("commands") == [A, B]
    assert box.observed("activations") == [A, B, A]
    assert box.state("previous").strip() == B
    assert box.history() == [A, B, A]


def test_redeploy_of_a_release_the_instance_lacks_fetches_it_again(box: Box) -> None:
    artifact_a = box.release_artifact(A)
    assert box.run(install_body(box.plan(A, artifact_a))).code == 0
    install(box, B)
    # this instance lost A (e.g. a replaced disk): the ledger's artifact brings it back
    subprocess.run(
        ["rm", "-rf", str(box.app_dir / "releases" / A), str(box.app_dir / ".ssm-deploy/ready" / A)], check=True
    )

    run = box.run(install_body(box.plan(A, artifact_a)))

    assert run.code == 0, run.stderr
    assert box.current() == f"releases/{A}"
    assert len(box.downloads()) == 3
    assert (box.app_dir / "current" / "app.txt").read_text() == A


def test_unfinished_release_dir_is_installed_again_from_the_artifact(box: Box) -> None:
    install(box, A)
    leftover = box.app_dir / "releases" / B
    leftover.mkdir()
    (leftover / "half-written").write_text("a run was killed here")
    (box.app_dir / ".ssm-deploy" / "tmp.killed").mkdir()
    (box.app_dir / "current.tmp.4242").symlink_to("releases/nowhere")

    code, stderr = install(box, B)

    assert code == 0, stderr
    assert not (leftover / "half-written").exists()
    assert (leftover / "app.txt").read_text() == B
    assert not (box.app_dir / ".ssm-deploy" / "tmp.killed").exists()
    assert not (box.app_dir / "current.tmp.4242").is_symlink()


def test_same_id_from_another_artifact_is_reinstalled_unless_live(box: Box) -> None:
    install(box, A)
    install(box, B)
    other = box.artifact({"app.txt": "rebuilt A"})
    run = box.run(install_body(box.plan(A, other)))  # A is not live: it is replaced
    assert run.code == 0, run.stderr
    assert (box.app_dir / "current" / "app.txt").read_text() == "rebuilt A"

    live_other = box.artifact({"app.txt": "rebuilt again"})
    refused = box.run(install_body(box.plan(A, live_other)))  # A is live now: never replaced under it

    assert refused.code == ReleaseExit.APP_DIR_UNUSABLE
    assert (box.app_dir / "current" / "app.txt").read_text() == "rebuilt A"
    [message] = refused.messages
    assert "live on this instance but came from another artifact" in message


# --- failures before the switch: nothing goes live -------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_corrupted_artifact_exits_82_and_nothing_is_switched(box: Box, shell: str) -> None:
    install(box, A, shell)
    artifact = box.release_artifact(B)
    artifact.path.write_bytes(artifact.path.read_bytes()[:-1] + b"X")  # changed after the upload

    run = box.run(install_body(box.plan(B, artifact)), shell)

    assert run.code == ReleaseExit.CHECKSUM_MISMATCH
    assert box.current() == f"releases/{A}"
    assert box.releases() == [A]
    assert box.observed("commands") == [A]
    assert box.observed("activations") == [A]
    assert not list((box.app_dir / ".ssm-deploy").glob("tmp.*"))
    [message] = run.messages
    actual = hashlib.sha256(artifact.path.read_bytes()).hexdigest()
    assert f"has SHA-256 {actual}, expected {artifact.sha256}" in message
    assert "nothing was unpacked or switched" in message


def test_missing_object_exits_81_naming_the_permission(box: Box) -> None:
    install(box, A)
    artifact = box.release_artifact(B)
    artifact.path.unlink()

    run = box.run(install_body(box.plan(B, artifact)))

    assert run.code == ReleaseExit.ARTIFACT_DOWNLOAD_FAILED
    assert box.current() == f"releases/{A}"
    assert box.releases() == [A]
    [message] = run.messages
    assert f"cannot download {artifact.url}" in message
    assert "s3:GetObject" in message


def test_artifact_that_is_not_an_archive_exits_83(box: Box) -> None:
    install(box, A)
    bogus = box.artifact({"app.txt": B})
    bogus.path.write_text("not a gzip file")
    fixed = box.plan(B, bogus, sha256=hashlib.sha256(b"not a gzip file").hexdigest())

    run = box.run(install_body(fixed))

    assert run.code == ReleaseExit.UNPACK_FAILED
    assert box.current() == f"releases/{A}"
    assert box.releases() == [A]
    assert not list((box.app_dir / ".ssm-deploy").glob("tmp.*"))
    assert "cannot unpack" in run.messages[0]


@pytest.mark.parametrize("shell", SHELLS)
def test_commands_failure_exits_84_removes_the_release_and_switches_nothing(box: Box, shell: str) -> None:
    install(box, A, shell)
    artifact = box.release_artifact(B, **{"fail-commands": ""})

    run = box.run(install_body(box.plan(B, artifact)), shell)

    assert run.code == ReleaseExit.RELEASE_COMMANDS_FAILED
    assert box.current() == f"releases/{A}"
    assert box.releases() == [A]  # a re-run starts again from a clean unpack
    assert box.observed("commands") == [A, B]
    assert box.observed("activations") == [A]
    assert box.history() == [A]
    [message] = run.messages
    assert "COMMANDS failed (exit 7) in release 000002-bbbbbbb" in message
    assert f"still points at releases/{A}" in message


def test_commands_keep_their_own_set_e_semantics(box: Box) -> None:
    artifact = box.release_artifact(A)
    plan = box.plan(A, artifact, commands='set -e\nfalse\necho after > "$OUT/after"')
    run = box.run(install_body(plan))
    assert run.code == 84
    assert not (box.out / "after").exists()
    assert box.current() is None


def test_syntax_error_in_commands_fails_the_step_not_the_script(box: Box) -> None:
    install(box, A)
    artifact = box.release_artifact(B)
    run = box.run(install_body(box.plan(B, artifact, commands="if then fi (")))
    assert run.code == 84
    assert box.current() == f"releases/{A}"


def test_missing_aws_cli_exits_127_before_anything(box: Box) -> None:
    artifact = box.release_artifact(A)
    run = box.run(install_body(box.plan(A, artifact)), path=SYSTEM_PATH)  # no fake aws on PATH
    assert run.code == ReleaseExit.PROGRAM_MISSING
    assert box.releases() == []
    [message] = run.messages
    assert "aws is not on PATH on this instance; it is needed to download the artifact" in message


def test_current_that_is_a_real_directory_exits_80(box: Box) -> None:
    (box.app_dir / "current").mkdir(parents=True)
    (box.app_dir / "current" / "index.html").write_text("deployed by hand")
    artifact = box.release_artifact(A)

    run = box.run(install_body(box.plan(A, artifact)))

    assert run.code == ReleaseExit.APP_DIR_UNUSABLE
    assert (box.app_dir / "current" / "index.html").read_text() == "deployed by hand"
    assert box.downloads() == []
    assert "is not a symlink" in run.messages[0]
    assert (run.stdout + run.stderr).count("is not a symlink") == 1  # the refusal says it, not the report again


# --- activation and rollback ------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_activation_failure_switches_back_and_activates_previous_85(box: Box, shell: str) -> None:
    install(box, A, shell)
    artifact = box.release_artifact(B, **{"fail-activation": ""})

    run = box.run(install_body(box.plan(B, artifact)), shell)

    assert run.code == ReleaseExit.ACTIVATION_FAILED_ROLLED_BACK
    assert box.current() == f"releases/{A}"
    assert box.observed("activations") == [A, B, A]  # B failed, then A's activation ran again
    assert box.releases() == [A, B]  # kept for inspection; it never stays live
    assert box.state("previous").strip() == B  # the release current pointed to before the last switch
    assert box.history() == [A, B, A]
    [message] = run.messages
    assert "ACTIVATE_COMMANDS failed (exit 9) for release 000002-bbbbbbb: rolled back to 000001-aaaaaaa" in message


@pytest.mark.parametrize("run_as", [None, APP_USER])
def test_commands_and_activation_get_the_release_id_they_run_for(box: Box, run_as: str | None) -> None:
    if run_as is not None and not is_root():
        pytest.skip("RUN_AS needs root")
    if run_as is not None:
        ensure_app_user()
    record = 'printf "%s\\n" "$SSM_DEPLOY_RELEASE" >> "$OUT/release-ids"\n'
    assert install(box, A, commands=record, activate_commands=record, run_as=run_as)[0] == 0
    artifact = box.release_artifact(B, **{"fail-activation": ""})
    activate = record + ACTIVATE

    run = box.run(install_body(box.plan(B, artifact, commands=record, activate_commands=activate, run_as=run_as)))

    assert run.code == ReleaseExit.ACTIVATION_FAILED_ROLLED_BACK, run.stderr
    # A's COMMANDS and activation; B's COMMANDS and activation; A activated again after the switch back
    assert box.observed("release-ids") == [A, A, B, B, A]


def test_activation_failing_on_both_releases_exits_86(box: Box) -> None:
    install(box, A)
    (box.out / "fail-activation").touch()  # every activation fails from now on

    code, stderr = install(box, B)

    assert code == ReleaseExit.ACTIVATION_FAILED_ROLLBACK_FAILED
    assert box.current() == f"releases/{A}"  # back on A even though A's activation failed too
    assert box.observed("activations") == [A, B, A]
    assert "needs attention" in stderr


def test_activation_failure_of_the_first_release_exits_89_and_keeps_it(box: Box) -> None:
    artifact = box.release_artifact(A, **{"fail-activation": ""})
    run = box.run(install_body(box.plan(A, artifact)))
    assert run.code == ReleaseExit.ACTIVATION_FAILED_NO_ROLLBACK
    assert box.current() == f"releases/{A}"
    assert "the first release on this instance" in run.messages[0]


def test_reactivation_failure_of_the_live_release_exits_89_and_switches_nothing(box: Box) -> None:
    install(box, A)
    artifact = box.release_artifact(B)
    plan = box.plan(B, artifact)
    assert box.run(install_body(plan)).code == 0
    (box.out / "fail-activation").touch()

    run = box.run(install_body(plan))

    assert run.code == 89
    assert box.current() == f"releases/{B}"
    assert box.observed("activations") == [A, B, B]
    assert "already live before this run" in run.messages[0]


def test_no_activation_commands_means_nothing_to_fail(box: Box) -> None:
    code, stderr = install(box, A, activate_commands="")
    assert code == 0, stderr
    assert box.current() == f"releases/{A}"
    assert box.observed("activations") == []


# --- switch back (health check failed after the deploy) -------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_switch_back_returns_to_the_release_live_before_and_activates_it(box: Box, shell: str) -> None:
    install(box, A, shell)
    artifact = box.release_artifact(B)
    plan = box.plan(B, artifact)
    assert box.run(install_body(plan), shell).code == 0

    run = box.run(switch_back_body(plan, A), shell)

    assert run.code == 0, run.stderr
    assert box.current() == f"releases/{A}"
    assert box.observed("activations") == [A, B, A]
    assert box.state("previous").strip() == B
    assert box.history() == [A, B, A]
    assert "release 000001-aaaaaaa is live again" in run.stdout
    assert current_report(run.stdout) == A


def test_switch_back_twice_goes_back_only_once(box: Box) -> None:
    install(box, A)
    install(box, B)
    plan_c = box.plan(C, box.release_artifact(C))
    assert box.run(install_body(plan_c)).code == 0
    assert box.run(switch_back_body(plan_c, B)).code == 0

    again = box.run(switch_back_body(plan_c, B))  # a retried switch back must not land on A

    assert again.code == 0, again.stderr
    assert box.current() == f"releases/{B}"
    assert box.observed("activations") == [A, B, C, B]
    assert "nothing to switch back" in again.stdout
    assert current_report(again.stdout) == B


def test_switch_back_after_a_redeploy_of_the_live_release_stays_on_it(box: Box) -> None:
    """B was live and deployed again: .ssm-deploy/previous still names A, which was live before B.
    Told that B was live before this deploy, the switch back leaves B, never going past it to A."""
    install(box, A)
    plan = box.plan(B, box.release_artifact(B))
    assert box.run(install_body(plan)).code == 0
    assert box.run(install_body(plan)).code == 0  # the re-deploy

    run = box.run(switch_back_body(plan, B))

    assert run.code == 0, run.stderr
    assert box.current() == f"releases/{B}"
    assert box.observed("activations") == [A, B, B]
    assert current_report(run.stdout) == B


def test_switch_back_reaches_the_release_live_before_from_any_other(box: Box) -> None:
    """An instance left on C by an earlier deploy goes to B, the release the pipe names, not to C's previous."""
    install(box, A)
    install(box, B)
    install(box, C)
    plan = box.plan(D, box.release_artifact(D))
    assert box.run(install_body(plan)).code == 0

    run = box.run(switch_back_body(plan, B))

    assert run.code == 0, run.stderr
    assert box.current() == f"releases/{B}"
    assert box.state("previous").strip() == D


def test_switch_back_to_a_release_not_on_the_instance_exits_87(box: Box) -> None:
    artifact = box.release_artifact(A)
    plan = box.plan(A, artifact)
    assert box.run(install_body(plan)).code == 0

    run = box.run(switch_back_body(plan, B))

    assert run.code == ReleaseExit.NO_PREVIOUS_RELEASE
    assert box.current() == f"releases/{A}"
    assert "release 000002-bbbbbbb, live before this deploy, is not on this instance" in run.messages[0]
    assert current_report(run.stdout) == A


def test_switch_back_refuses_a_release_it_is_not_told() -> None:
    plan = ReleasePlan("/srv/app", A, "s3://b/k.tar.gz", "0" * 64, "tar.gz", "eu-west-1")
    with pytest.raises(ValueError, match="release to switch back to"):
        switch_back_body(plan, "")


def test_switch_back_whose_activation_fails_exits_86(box: Box) -> None:
    install(box, A)
    plan = box.plan(B, box.release_artifact(B))
    assert box.run(install_body(plan)).code == 0
    (box.out / "fail-activation").touch()

    run = box.run(switch_back_body(plan, A))

    assert run.code == 86
    assert box.current() == f"releases/{A}"
    assert current_report(run.stdout) == A


# --- what current points to, as the scripts end and as the read command finds it ------------------


def test_every_ending_reports_where_current_points_last(box: Box) -> None:
    code, _ = install(box, A)
    assert code == 0
    cases = {
        "success": (box.plan(B, box.release_artifact(B)), 0, B),
        "activation failed, switched back": (box.plan(C, box.release_artifact(C, **{"fail-activation": ""})), 85, B),
        "COMMANDS failed, nothing switched": (box.plan(D, box.release_artifact(D, **{"fail-commands": ""})), 84, B),
    }
    for name, (plan, expected_code, expected_release) in cases.items():
        run = box.run(install_body(plan))
        assert run.code == expected_code, (name, run.stderr)
        assert run.stdout.splitlines()[-1] == f"{CURRENT_REPORT}{expected_release}", name
        assert current_report(run.stdout) == expected_release, name


def test_a_failure_before_anything_exists_reports_no_release(box: Box) -> None:
    run = box.run(install_body(box.plan(A, box.release_artifact(A), run_as="no-such-user")))

    assert run.code == ReleaseExit.RUN_AS_USER_MISSING
    assert current_report(run.stdout) == NO_RELEASE


def test_the_read_command_reports_current_and_changes_nothing(box: Box) -> None:
    assert box.run(read_current_body(str(box.app_dir))).stdout.splitlines() == [f"{CURRENT_REPORT}(none)"]
    install(box, A)
    install(box, B)
    before = (box.current(), box.history(), box.state("previous"))

    run = box.run(read_current_body(str(box.app_dir)))

    assert run.code == 0, run.stderr
    assert current_report(run.stdout) == B
    assert (box.current(), box.history(), box.state("previous")) == before


def test_the_read_command_waits_for_a_release_script_that_still_runs(box: Box) -> None:
    install(box, A)
    lock = box.app_dir / ".ssm-deploy" / "lock"
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        released = threading.Timer(1.0, fcntl.flock, (held, fcntl.LOCK_UN))
        released.start()
        run = box.run(read_current_body(str(box.app_dir)))
        released.join()

    assert run.code == 0, run.stderr
    assert current_report(run.stdout) == A


def test_a_report_is_read_from_the_last_report_line_only() -> None:
    assert current_report(f"{CURRENT_REPORT}{A}\nuser output\n{CURRENT_REPORT}{B}\n") == B
    assert current_report("no report at all\n") is None
    assert current_report(f"{CURRENT_REPORT}not/an id\n") is None
    assert current_report(f"{CURRENT_REPORT}(none)\n") == NO_RELEASE


# --- pruning ---------------------------------------------------------------------------------------


def test_keep_releases_2_after_4_deploys_leaves_the_live_one_and_the_one_before(box: Box) -> None:
    for release in (A, B, C, D):
        code, stderr = install(box, release, keep_releases=2)
        assert code == 0, stderr
    assert box.releases() == [C, D]
    assert box.current() == f"releases/{D}"
    assert box.state("previous").strip() == C
    assert sorted(os.listdir(box.app_dir / ".ssm-deploy" / "ready")) == [C, D]


def test_pruning_never_removes_the_ledgers_live_release(box: Box) -> None:
    # a stopped deploy left the instance on B while the ledger kept A live: C's install keeps A, the
    # release C's rollback goes back to, beyond KEEP_RELEASES' count
    for release in (A, B):
        assert install(box, release, keep_releases=2)[0] == 0

    code, stderr = install(box, C, keep_releases=2, live_release=A)

    assert code == 0, stderr
    assert box.releases() == [A, B, C]


def test_pruning_ranks_by_activation_not_by_id(box: Box) -> None:
    plans = {release: box.plan(release, box.release_artifact(release), keep_releases=3) for release in (A, B, C)}
    for release in (A, B, C):
        assert box.run(install_body(plans[release])).code == 0
    assert box.run(install_body(plans[A])).code == 0  # A live again: history A B C A

    code, stderr = install(box, D, keep_releases=3)  # ranking: D, A (previous), C | B

    assert code == 0, stderr
    assert box.releases() == [A, C, D]


def test_pruning_leaves_what_is_not_a_release_alone(box: Box) -> None:
    (box.app_dir / "releases" / "notes").mkdir(parents=True)
    for release in (A, B, C):
        assert install(box, release, keep_releases=2)[0] == 0
    assert box.releases() == [B, C, "notes"]


@pytest.mark.parametrize(("log", "line"), [("history", f"{A}\n"), ("switches", f"boot 1.00 {A}\n")])
def test_the_switch_logs_are_bounded(box: Box, log: str, line: str) -> None:
    install(box, A)
    kept = box.app_dir / ".ssm-deploy" / log
    kept.write_text(line * (HISTORY_LIMIT + 50))
    install(box, B)
    lines = kept.read_text().splitlines()
    assert len(lines) == HISTORY_LIMIT
    assert lines[-1].split()[-1] == (B if log == "history" else A)  # switches names the release it left


# --- the switch is atomic; deploys to one instance queue --------------------------------------------


def test_current_is_never_missing_while_switching(box: Box) -> None:
    plans = [box.plan(release, box.release_artifact(release), activate_commands="") for release in (A, B)]
    for plan in plans:
        assert box.run(install_body(plan)).code == 0
    link = box.app_dir / "current"
    seen: set[str] = set()
    missing: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                seen.add(os.readlink(link))
            except OSError:
                missing.append(1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for turn in range(10):
            assert box.run(install_body(plans[turn % 2])).code == 0
    finally:
        done.set()
        watcher.join()

    assert missing == []
    assert seen == {f"releases/{A}", f"releases/{B}"}


def test_a_second_deploy_waits_for_the_first(box: Box) -> None:
    install(box, A)
    plan = box.plan(B, box.release_artifact(B))
    script = box.script(install_body(plan))
    with (box.app_dir / ".ssm-deploy" / "lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another deploy holds the instance
        waiting = subprocess.Popen(
            [SHELLS[0], str(script)], env=box.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert waiting.stdout is not None
        assert "another deploy is running on this instance" in waiting.stdout.readline()
        assert box.current() == f"releases/{A}"  # it waits before touching anything
        fcntl.flock(held, fcntl.LOCK_UN)
    _, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert box.current() == f"releases/{B}"


def test_user_commands_inherit_neither_the_lock_nor_the_env_pipe(box: Box) -> None:
    # a daemon started by ACTIVATE_COMMANDS (pm2) would hold the lock for ever
    probe = "for fd in 3 9; do if [ -e /proc/self/fd/$fd ]; then exit 4$fd; fi; done"
    code, stderr = install(box, A, commands=probe, activate_commands=probe)
    assert code == 0, stderr


# --- SHARED_PATHS ------------------------------------------------------------------------------------


@pytest.mark.parametrize("archive_format", ["tar.gz", "zip"])
def test_shared_paths_are_seeded_once_then_linked_into_every_release(box: Box, archive_format: str) -> None:
    shared = box.app_dir / "shared"
    paths = (".env", "logs", "config/app.json", "uploads/", "settings.yml", "cache")
    files_a = {".env": "FROM=A", "logs": None, "logs/a.log": "a", "config": None, "config/app.json": "{}"}
    files_b = {".env": "FROM=B", "logs": None, "logs/b.log": "b", "config": None, "config/app.json": '{"b":1}'}
    for release, files in ((A, files_a), (B, files_b)):
        artifact = box.artifact({"app.txt": release, **files}, archive_format)
        run = box.run(install_body(box.plan(release, artifact, shared_paths=paths)))
        assert run.code == 0, run.stderr

    assert (shared / ".env").read_text() == "FROM=A"  # seeded by the first release, then kept
    assert (shared / "config" / "app.json").read_text() == "{}"
    assert sorted(os.listdir(shared / "logs")) == ["a.log"]  # B's own logs/ was replaced by the link
    assert (shared / "uploads").is_dir()
    assert (shared / "cache").is_dir()  # no dot in the name: a directory
    assert (shared / "settings.yml").is_file()  # a dot: an (empty) file
    for release in (A, B):
        folder = box.app_dir / "releases" / release
        for path in paths:
            name = path.rstrip("/")
            assert os.readlink(folder / name) == str(shared / name)
    (box.app_dir / "current" / "logs" / "live.log").write_text("written through current")
    assert (shared / "logs" / "live.log").exists()


def test_shared_directory_marked_with_slash_must_be_a_directory(box: Box) -> None:
    (box.app_dir / "shared").mkdir(parents=True)
    (box.app_dir / "shared" / "data").write_text("a file where a directory is expected")
    artifact = box.release_artifact(A)

    run = box.run(install_body(box.plan(A, artifact, shared_paths=("data/",))))

    assert run.code == ReleaseExit.UNPACK_FAILED
    assert box.current() is None
    assert box.releases() == []
    assert "SHARED_PATHS data/ names a directory" in run.stderr


# --- RUN_AS ---------------------------------------------------------------------------------------------

SECRET_CORE = "s3cr3t-9f1c2e7b5a"  # survives any quoting: a leak shows up as this, escaped or not
SECRET = SECRET_CORE + "-'\"$(touch /tmp/pwned)`id`-\\n;|&"
SECRET_PARAMETER = "/deploy/production/db-password"
TRICKY = 'it\'s $HOME "quoted" `date` ; & | * ~ \\ é'

USER_COMMANDS = """\
{
  printf 'user=%s\\n' "$(id -un)"
  printf 'home=%s\\n' "$HOME"
  printf 'marker=%s\\n' "$(ssm-unit-marker)"
  printf 'login=%s\\n' "$SSM_UNIT_LOGIN"
  printf 'pwd=%s\\n' "$PWD"
  printf 'instance=%s\\n' "$AWS_SSM_INSTANCE_ID"
  printf 'secret-sha=%s\\n' "$(printf '%s' "$DB_PASSWORD" | sha256sum | cut -d' ' -f1)"
} > "$OUT/as-user"
printf '%s' "$TRICKY" > "$OUT/tricky"
echo written-by-commands > made-by-commands
"""


@needs_root
def test_run_as_owns_the_release_and_runs_with_its_login_environment(box: Box, app_user: pwd.struct_passwd) -> None:
    box.store_parameter(SECRET_PARAMETER, SECRET)
    artifact = box.release_artifact(A)
    plan = box.plan(
        A,
        artifact,
        run_as=APP_USER,
        commands=USER_COMMANDS,
        shared_paths=(".env", "logs"),
        env_names=("DB_PASSWORD", "TRICKY", "OUT"),
    )

    run = box.run(
        install_body(plan),
        secrets=(SecretRef("DB_PASSWORD", SECRET_PARAMETER),),
        variables=(("TRICKY", TRICKY),),
    )

    assert run.code == 0, run.stderr
    seen = dict(line.split("=", 1) for line in box.observed("as-user"))
    assert seen["user"] == APP_USER
    assert seen["home"] == app_user.pw_dir
    assert seen["marker"] == "marker-from-login-path"  # PATH from the user's ~/.profile
    assert seen["login"] == "from-profile"
    assert seen["pwd"] == str(box.app_dir / "releases" / A)
    assert seen["instance"] == "i-0123456789abcdef0"  # the agent's variables are forwarded too
    assert seen["secret-sha"] == hashlib.sha256(SECRET.encode()).hexdigest()
    assert (box.out / "tricky").read_text() == TRICKY
    assert owners(box.app_dir / "releases" / A) == {app_user.pw_uid}
    assert owners(box.app_dir / "shared") == {app_user.pw_uid}
    assert not Path("/tmp/pwned").exists()


@needs_root
def test_run_as_secret_never_appears_in_any_command_line_or_file(box: Box, app_user: pwd.struct_passwd) -> None:
    box.store_parameter(SECRET_PARAMETER, SECRET)
    go = box.out / "go"
    # the commands wait until the watcher has seen them running as the user, so the scan
    # covers the runuser/bash chain while it is alive (no timing assumption)
    wait_then_use = f"""\
n=0
while [ ! -e {go} ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done
printf '%s' "$DB_PASSWORD" | sha256sum > "$OUT/sha"
"""
    plan = box.plan(
        A,
        box.release_artifact(A),
        run_as=APP_USER,
        commands=wait_then_use,
        activate_commands=wait_then_use,
        env_names=("DB_PASSWORD", "OUT"),
    )
    script = box.script(install_body(plan), secrets=(SecretRef("DB_PASSWORD", SECRET_PARAMETER),))
    secret, core = SECRET.encode(), SECRET_CORE.encode()
    leaks: list[str] = []
    saw_user_shell = threading.Event()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                    uid = (entry / "status").read_text().split("\nUid:\t", 1)[1].split("\t", 1)[0]
                except (OSError, IndexError):
                    continue
                if core in cmdline:
                    leaks.append(cmdline.decode(errors="replace"))
                if uid == str(app_user.pw_uid) and b"sleep" in cmdline:
                    saw_user_shell.set()
                    go.touch()
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        done_run = subprocess.run(
            [SHELLS[0], str(script)], env=box.env(), capture_output=True, text=True, timeout=120, check=False
        )
    finally:
        done.set()
        watcher.join()

    assert done_run.returncode == 0, done_run.stderr
    assert saw_user_shell.is_set()  # the scan really watched the user's commands
    assert leaks == []
    assert (box.out / "sha").read_text().split()[0] == hashlib.sha256(secret).hexdigest()
    for folder, _, files in os.walk(box.root):
        for name in files:
            path = Path(folder, name)
            if path.is_file() and not path.is_symlink() and path.parent != box.root / "params":
                assert core not in path.read_bytes(), path
    assert core not in done_run.stdout.encode() + done_run.stderr.encode()


@needs_root
@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to record every execve")
def test_run_as_secret_is_in_no_program_arguments(box: Box, app_user: pwd.struct_passwd) -> None:
    # the /proc scan above only sees processes alive while it looks; strace records every execve,
    # however short-lived (argv in full, the environment left out: that is where the value belongs)
    box.store_parameter(SECRET_PARAMETER, SECRET)
    plan = box.plan(
        A,
        box.release_artifact(A),
        run_as=APP_USER,
        commands='printf %s "$DB_PASSWORD" | sha256sum > "$OUT/sha"',
        shared_paths=(".env",),
        env_names=("DB_PASSWORD", "OUT"),
    )
    script = box.script(install_body(plan), secrets=(SecretRef("DB_PASSWORD", SECRET_PARAMETER),))
    trace = box.root / "execve.trace"

    done = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=execve", "-s", "1000000", "-o", str(trace), SHELLS[0], str(script)],
        env=box.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    calls = [line for line in trace.read_text().splitlines() if "execve(" in line]
    assert any('"runuser"' in call or '"su"' in call for call in calls)  # the user switch was traced
    assert [call for call in calls if SECRET_CORE in call] == []
    assert (box.out / "sha").read_text().split()[0] == hashlib.sha256(SECRET.encode()).hexdigest()


@needs_root
def test_run_as_missing_user_exits_88_before_anything(box: Box) -> None:
    artifact = box.release_artifact(A)
    run = box.run(install_body(box.plan(A, artifact, run_as="ssmdeploy-nosuchuser")))
    assert run.code == ReleaseExit.RUN_AS_USER_MISSING
    assert box.downloads() == []
    assert not (box.app_dir / "releases").exists()
    [message] = run.messages
    assert "RUN_AS user ssmdeploy-nosuchuser does not exist on this instance" in message


@needs_root
def test_run_as_rollback_activates_previous_as_the_user(box: Box, app_user: pwd.struct_passwd) -> None:
    activate = ACTIVATE + 'id -un >> "$OUT/activated-by"\n'
    assert install(box, A, run_as=APP_USER, activate_commands=activate)[0] == 0
    artifact = box.release_artifact(B, **{"fail-activation": ""})

    run = box.run(install_body(box.plan(B, artifact, run_as=APP_USER, activate_commands=activate)))

    assert run.code == 85, run.stderr
    assert box.current() == f"releases/{A}"
    assert box.observed("activations") == [A, B, A]
    assert box.observed("activated-by") == [APP_USER, APP_USER]  # B exited before writing


# --- as_user on its own (the pipe can use it for other commands) -----------------------------------


def test_as_user_none_runs_in_cwd_with_the_environment_and_keeps_the_exit_code(box: Box) -> None:
    run = box.run(as_user(None, 'pwd > "$OUT/pwd"\nprintf %s "$AWS_SSM_REGION_NAME" > "$OUT/env"\nexit 3', "/usr"))
    assert run.code == 3
    assert (box.out / "pwd").read_text().strip() == "/usr"
    assert (box.out / "env").read_text() == "eu-west-1"


@needs_root
def test_as_user_with_a_user_keeps_the_exit_code_and_pipefail(box: Box, app_user: pwd.struct_passwd) -> None:
    run = box.run(as_user(APP_USER, "set -o pipefail\nfalse | true", "/"))
    assert run.code == 1
    run = box.run(as_user(APP_USER, 'printf %s "$PWD" > "$OUT/pwd"; exit 5', str(box.out), env_names=("OUT",)))
    assert run.code == 5
    assert (box.out / "pwd").read_text() == str(box.out)


def test_as_user_refuses_bad_names() -> None:
    with pytest.raises(ValueError, match="environment variable name"):
        as_user(None, "true", "/", env_names=("A B",))
    with pytest.raises(ValueError, match="not a user name"):
        as_user("root; id", "true", "/")


# --- the plan's own checks ------------------------------------------------------------------------------


def test_release_id_is_sortable_and_valid() -> None:
    assert release_id("42", "0123456") == "000042-0123456"
    assert release_id("7", "") == "000007-nocommit"
    assert release_id("1234567", "ABCDEF0") == "1234567-abcdef0"
    assert sorted([release_id("10", "b"), release_id("9", "a")]) == ["000009-a", "000010-b"]
    assert release_id_problem(release_id("42", "0123456")) is None


@pytest.mark.parametrize(
    "text", ["", "42-abc", "000042_abc", "000042-ABC", "000042-", "000042-abc/../x", "../000042-a"]
)
def test_bad_release_ids_are_refused(text: str) -> None:
    assert release_id_problem(text) is not None


@pytest.mark.parametrize("text", ["srv/web-api", "/", "/srv/web-api/", "/srv/../etc", "/srv/./x", "/srv/a\nb", "//srv"])
def test_bad_app_dirs_are_refused(text: str) -> None:
    assert app_dir_problem(text) is not None


@pytest.mark.parametrize("text", ["", "/", "/etc/passwd", "../x", "a/../../x", "a//b", ".", "a/./b", "x\ny", "//"])
def test_bad_shared_paths_are_refused(text: str) -> None:
    assert shared_path_problem(text) is not None


@pytest.mark.parametrize("text", [".env", "logs", "logs/", "config/app.json", "a b/c'd", "storage/app/"])
def test_good_shared_paths_are_accepted(text: str) -> None:
    assert shared_path_problem(text) is None


@pytest.mark.parametrize("text", ["ec2-user", "ubuntu", "app_1", "svc.web"])
def test_good_user_names_are_accepted(text: str) -> None:
    assert run_as_problem(text) is None


@pytest.mark.parametrize("text", ["", "-rf", "1000", "a b", "root;id", "x" * 33, "$(id)"])
def test_bad_user_names_are_refused(text: str) -> None:
    assert run_as_problem(text) is not None


def test_plan_refuses_what_it_cannot_render_safely() -> None:
    good = {
        "app_dir": "/srv/web-api",
        "release_id": A,
        "artifact_url": "s3://b/k.tar.gz",
        "sha256": "0" * 64,
        "archive_format": "tar.gz",
        "region": "eu-west-1",
    }
    ReleasePlan(**good)  # type: ignore[arg-type]
    bad: list[dict[str, object]] = [
        {"keep_releases": 1},
        {"archive_format": "rar"},
        {"sha256": "ABC"},
        {"artifact_url": "https://example.com/x"},
        {"region": "eu west"},
        {"env_names": ("OK", "NOT-OK")},
        {"shared_paths": ("../etc",)},
        {"run_as": "bad user"},
        {"app_dir": "relative"},
        {"release_id": "latest"},
    ]
    for change in bad:
        with pytest.raises(ValueError):
            ReleasePlan(**{**good, **change})  # type: ignore[arg-type]


def test_install_steps_describe_the_plan() -> None:
    plan = ReleasePlan(
        app_dir="/srv/web-api",
        release_id=B,
        artifact_url="s3://acme/web-api/abc.tar.gz",
        sha256="f" * 64,
        archive_format="tar.gz",
        region="eu-west-1",
        shared_paths=(".env", "logs"),
        run_as="ec2-user",
        commands="npm ci --omit=dev",
        activate_commands="pm2 startOrReload ecosystem.config.js",
        keep_releases=3,
    )
    steps = install_steps(plan)
    release = f"/srv/web-api/releases/{B}"
    assert steps[0] == (
        f"if {release} is not there yet (or changed since it was prepared): download s3://acme/web-api/abc.tar.gz "
        "with the instance role"
    )
    assert f"  verify its SHA-256 is {'f' * 64} before unpacking anything" in steps
    assert (
        f"  link /srv/web-api/releases/{B}/.env -> /srv/web-api/shared/.env (a file unless it exists already)" in steps
    )
    assert (
        f"  link /srv/web-api/releases/{B}/logs -> /srv/web-api/shared/logs (a directory unless it exists already)"
        in steps
    )
    assert f"switch /srv/web-api/current -> releases/{B} (atomic rename)" in steps
    assert any(step.startswith("run ACTIVATE_COMMANDS in /srv/web-api/current as ec2-user") for step in steps)
    assert steps[-1].startswith("keep the 3 most recently activated releases")
    assert "(exit 79): nothing runs twice" in steps[-2]
    assert steps[-1].endswith("the one before it)")  # no release was live before this one: nothing more kept
    kept = install_steps(dataclasses.replace(plan, back_now=A))
    assert kept[-1].endswith(f"nor {A}, where RELEASE: previous goes should this deploy fail)")
    staged = install_steps(plan, staged=True)
    assert staged[0].startswith(f"compare {release} with the checksums recorded when it was staged")
    assert "(exit 92, nothing switched)" in staged[0]
    assert f"  {steps[0]}" in staged and staged[staged.index(f"  {steps[0]}") - 1].startswith("where it was not staged")


def test_exit_codes_are_the_documented_contract() -> None:
    # the pipe and users' scripts branch on these numbers: changing one is a breaking change
    assert {code.name: int(code) for code in ReleaseExit} == {
        "STARTED_AGAIN": 79,
        "APP_DIR_UNUSABLE": 80,
        "ARTIFACT_DOWNLOAD_FAILED": 81,
        "CHECKSUM_MISMATCH": 82,
        "UNPACK_FAILED": 83,
        "RELEASE_COMMANDS_FAILED": 84,
        "ACTIVATION_FAILED_ROLLED_BACK": 85,
        "ACTIVATION_FAILED_ROLLBACK_FAILED": 86,
        "NO_PREVIOUS_RELEASE": 87,
        "RUN_AS_USER_MISSING": 88,
        "ACTIVATION_FAILED_NO_ROLLBACK": 89,
        "STALE_PROCESS": 90,
        "ARTIFACT_REFUSED": 91,
        "STAGED_RELEASE_CHANGED": 92,
        "PROGRAM_MISSING": 127,
    }
    assert all(code.meaning for code in ReleaseExit)
    assert [int(code) for code in ReleaseExit if 80 <= code <= 92] == list(range(80, 93))


def test_an_exit_code_maps_to_what_it_means_for_the_failure_line() -> None:
    assert release_exit_meaning(90) == ReleaseExit.STALE_PROCESS.meaning
    assert "still runs a replaced release or holds an old value" in str(release_exit_meaning(90))
    assert release_exit_meaning(85) == ReleaseExit.ACTIVATION_FAILED_ROLLED_BACK.meaning
    assert release_exit_meaning(3) is None  # the user's own code
    assert release_exit_meaning(None) is None


def test_dry_run_steps_say_what_is_verified_unless_turned_off() -> None:
    values = {
        "app_dir": "/srv/web-api",
        "release_id": B,
        "artifact_url": "s3://acme/web-api/abc.tar.gz",
        "sha256": "f" * 64,
        "archive_format": "tar.gz",
        "region": "eu-west-1",
        "env_names": ("DB_PASSWORD", "PORT"),
    }
    [step] = [s for s in install_steps(ReleasePlan(**values)) if "/proc" in s]  # type: ignore[arg-type]
    assert "none may still run a replaced release" in step
    assert "values of DB_PASSWORD, PORT" in step and "(exit 90)" in step
    off = ReleasePlan(**values, verify_processes=False)  # type: ignore[arg-type]
    assert not [s for s in install_steps(off) if "/proc" in s]
