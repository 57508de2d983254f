"""Staging a release (``stage_body``) and switching to it (``install_body(staged=True)``), run for real
in a box: the staged copy is checked against the checksums recorded at staging before the switch, and
a rollback to a release still on the instance downloads nothing and runs no COMMANDS."""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipe.model import NO_RELEASE
from pipe.release.remote import ReleaseExit, current_report, install_body, stage_body, switch_back_body
from unit.release_support import SHELLS, A, Artifact, B, Box, C, ensure_app_user, is_root, open_temp_dir, owners


@pytest.fixture
def box() -> Iterator[Box]:
    for root in open_temp_dir():
        yield Box(root)


def live_on(box: Box, release: str, artifact: Artifact | None = None) -> None:
    """``release`` installed and live, from ``artifact`` or a fresh one."""
    run = box.run(install_body(box.plan(release, artifact or box.release_artifact(release))))
    assert run.code == 0, run.stderr


def manifest(box: Box, release: str) -> Path:
    return box.app_dir / ".ssm-deploy" / "files" / release


@pytest.mark.parametrize("shell", SHELLS)
def test_staging_prepares_the_release_beside_the_live_one_and_switches_nothing(box: Box, shell: str) -> None:
    live_on(box, A)
    plan = box.plan(B, box.release_artifact(B))

    run = box.run(stage_body(plan), shell)

    assert run.code == 0, run.stderr
    assert box.current() == f"releases/{A}"
    assert current_report(run.stdout) == A
    assert box.releases() == [A, B]
    assert (box.app_dir / "releases" / B / "app.txt").read_text() == B
    assert box.observed("commands") == [A, B]  # COMMANDS ran in B at staging
    assert box.observed("activations") == [A]  # nothing activated
    assert box.history() == [A]
    assert "./app.txt" in manifest(box, B).read_text()
    assert "is staged in" in run.stdout


def test_staging_a_fleet_with_no_release_yet_reports_none(box: Box) -> None:
    run = box.run(stage_body(box.plan(A, box.release_artifact(A))))

    assert run.code == 0, run.stderr
    assert box.current() is None
    assert current_report(run.stdout) == NO_RELEASE


def test_the_switch_after_staging_downloads_nothing_and_runs_commands_once(box: Box) -> None:
    live_on(box, A)
    plan = box.plan(B, box.release_artifact(B))
    assert box.run(stage_body(plan)).code == 0
    downloads = len(box.downloads())

    run = box.run(install_body(plan, staged=True))

    assert run.code == 0, run.stderr
    assert box.current() == f"releases/{B}"
    assert len(box.downloads()) == downloads
    assert box.observed("commands") == [A, B]
    assert box.observed("activations") == [A, B]
    assert "unchanged since it was staged" in run.stdout


@pytest.mark.parametrize(
    "tamper",
    [
        lambda release: (release / "app.txt").write_text("evil"),  # content
        lambda release: (release / "bin" / "extra.sh").write_text("echo extra"),  # a new file
        lambda release: (release / "bin" / "start.sh").unlink(),  # a file gone
        lambda release: (release / "app.txt").chmod(0o666),  # a mode
        lambda release: os.symlink("/etc", release / "bin" / "etc"),  # a link
    ],
    ids=["content", "added", "removed", "mode", "link"],
)
def test_a_staged_release_changed_before_its_switch_is_refused_with_92(box: Box, tamper: object) -> None:
    live_on(box, A)
    plan = box.plan(B, box.release_artifact(B))
    assert box.run(stage_body(plan)).code == 0
    assert callable(tamper)
    tamper(box.app_dir / "releases" / B)

    run = box.run(install_body(plan, staged=True))

    assert run.code == ReleaseExit.STAGED_RELEASE_CHANGED, run.stderr
    assert box.current() == f"releases/{A}"
    assert current_report(run.stdout) == A
    assert box.observed("activations") == [A]
    assert any("changed after this deploy staged it" in line for line in run.messages), run.stderr
    # the next deploy stages it again from the artifact, and that copy goes live
    downloads = len(box.downloads())
    assert box.run(stage_body(plan)).code == 0
    assert len(box.downloads()) == downloads + 1
    assert box.run(install_body(plan, staged=True)).code == 0
    assert (box.app_dir / "current" / "app.txt").read_text() == B


def test_an_instance_never_staged_installs_within_its_batch(box: Box) -> None:
    live_on(box, A)  # launched after the staging: B is not there
    plan = box.plan(B, box.release_artifact(B))

    run = box.run(install_body(plan, staged=True))

    assert run.code == 0, run.stderr
    assert box.current() == f"releases/{B}"
    assert box.observed("commands") == [A, B]


def test_a_prepared_release_changed_since_is_installed_again_when_not_staged_by_this_deploy(box: Box) -> None:
    # RELEASE: <id> of a release still on the instance, sent without staging: a changed copy is not used
    artifact_a = box.release_artifact(A)
    live_on(box, A, artifact_a)
    live_on(box, B)
    (box.app_dir / "releases" / A / "app.txt").write_text("changed")

    run = box.run(install_body(box.plan(A, artifact_a)))

    assert run.code == 0, run.stderr
    assert "changed since it was staged" in run.stdout
    assert (box.app_dir / "current" / "app.txt").read_text() == A
    assert box.observed("commands") == [A, B, A]


def test_release_previous_still_on_the_instance_downloads_nothing_and_runs_no_commands(box: Box) -> None:
    artifact_a = box.release_artifact(A)
    live_on(box, A, artifact_a)
    live_on(box, B)
    artifact_a.path.unlink()  # S3 would not even be asked
    plan = box.plan(A, artifact_a)

    staged = box.run(stage_body(plan))
    switched = box.run(install_body(plan, staged=True))

    assert (staged.code, switched.code) == (0, 0), staged.stderr + switched.stderr
    assert box.current() == f"releases/{A}"
    assert len(box.downloads()) == 2
    assert box.observed("commands") == [A, B]


def test_the_automatic_rollback_switches_back_without_download_or_commands(box: Box) -> None:
    live_on(box, A)
    plan = box.plan(B, box.release_artifact(B))
    assert box.run(stage_body(plan)).code == 0
    assert box.run(install_body(plan, staged=True)).code == 0
    downloads = len(box.downloads())

    run = box.run(switch_back_body(plan, A))

    assert run.code == 0, run.stderr
    assert box.current() == f"releases/{A}"
    assert len(box.downloads()) == downloads
    assert box.observed("commands") == [A, B]
    assert box.observed("activations") == [A, B, A]


def test_pruning_removes_the_manifest_with_its_release(box: Box) -> None:
    for release in (A, B, C):
        assert box.run(install_body(box.plan(release, box.release_artifact(release), keep_releases=2))).code == 0

    assert box.releases() == [B, C]
    assert not manifest(box, A).exists()
    assert manifest(box, B).exists()


@pytest.mark.skipif(not is_root(), reason="RUN_AS needs root to create and become a second user")
def test_the_manifest_is_computed_as_run_as_and_a_change_by_that_user_is_refused(box: Box) -> None:
    user: pwd.struct_passwd = ensure_app_user()
    box.root.chmod(0o755)
    live_on(box, A)
    plan = box.plan(B, box.release_artifact(B), run_as=user.pw_name)
    assert box.run(stage_body(plan)).code == 0
    assert owners(box.app_dir / "releases" / B) == {user.pw_uid}
    assert box.run(install_body(plan, staged=True)).code == 0  # unchanged: switched
    plan_c = box.plan(C, box.release_artifact(C), run_as=user.pw_name)
    assert box.run(stage_body(plan_c)).code == 0
    os.chown(box.app_dir / "releases" / C / "app.txt", 0, 0)  # an owner changed

    run = box.run(install_body(plan_c, staged=True))

    assert run.code == ReleaseExit.STAGED_RELEASE_CHANGED, run.stderr
    assert box.current() == f"releases/{B}"
