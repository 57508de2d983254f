"""The install script's unpack step, run for real (sh, python3, a fake ``aws``): an artifact whose
SHA-256 matches but which holds what a release may not (uploaded by an older pipe, or replaced in S3
together with the ledger's digest) is refused before anything is unpacked, with exit 91, and the
instance is left as it was: no release directory, no temporary one, ``current`` where it was."""

from __future__ import annotations

import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipe.release.remote import ReleaseExit, install_body, install_steps
from unit.release_support import (
    SHELLS,
    A,
    B,
    Box,
    Member,
    open_temp_dir,
    tar_member,
    write_tgz,
    write_zip,
)


@pytest.fixture
def box() -> Iterator[Box]:
    for root in open_temp_dir():
        yield Box(root)


def live_on_a(box: Box) -> None:
    run = box.run(install_body(box.plan(A, box.release_artifact(A))))
    assert run.code == 0, run.stderr


def hostile(box: Box, *members: Member) -> Path:
    """B's files plus ``members``, packed as a .tar.gz the pipe would refuse to upload."""
    files = [tar_member("app.txt", data=B), tar_member("bin", tarfile.DIRTYPE, 0o755), *members]
    return write_tgz(box.root / "src" / "hostile.tgz", files)


def assert_untouched(box: Box) -> None:
    """The instance as live_on_a left it: nothing of B unpacked, switched or run."""
    assert box.current() == f"releases/{A}"
    assert box.releases() == [A]
    assert not list((box.app_dir / ".ssm-deploy").glob("tmp.*"))
    assert box.observed("commands") == [A] and box.observed("activations") == [A]
    assert box.state(f"ready/{B}") == ""


@pytest.mark.parametrize(
    ("member", "named"),
    [
        (tar_member("queue", tarfile.FIFOTYPE), "queue is a FIFO (named pipe)"),
        (tar_member("dev/tty", tarfile.CHRTYPE), "dev/tty is a character device"),
        (tar_member("bin/helper", mode=0o4755, data="x"), "bin/helper has the setuid bit (mode 4755)"),
        (tar_member("../escape", data="x"), "../escape has a .. component"),
        (tar_member("/etc/cron.d/escape", data="x"), "/etc/cron.d/escape is an absolute path"),
        (tar_member("shadow", tarfile.LNKTYPE, 0o644, "/etc/shadow"), "shadow is a hard link to /etc/shadow"),
        (tar_member("node", tarfile.SYMTYPE, 0o777, "/usr/bin/node"), "node is a symlink to /usr/bin/node"),
    ],
    ids=["fifo", "device", "setuid", "dotdot", "absolute", "hard-link-out", "symlink-out"],
)
@pytest.mark.parametrize("shell", SHELLS)
def test_a_hostile_artifact_exits_91_and_leaves_the_instance_untouched(
    box: Box, shell: str, member: Member, named: str
) -> None:
    live_on_a(box)
    artifact = box.upload(hostile(box, member))  # its SHA-256 is the one the plan carries: only the content is wrong

    run = box.run(install_body(box.plan(B, artifact)), shell)

    assert run.code == ReleaseExit.ARTIFACT_REFUSED, run.stderr
    assert_untouched(box)
    refusal, verdict = run.messages
    assert refusal.startswith(f"ssm-deploy: refused: {named}") and "(fix: " in refusal
    assert f"the artifact downloaded from {artifact.url} holds entries a release may not hold" in verdict
    assert "nothing was unpacked or switched" in verdict and "ARTIFACT" in verdict


def test_a_symlink_out_with_shared_paths_cannot_make_root_move_files_outside(box: Box) -> None:
    # Without the check, root's SHARED_PATHS step follows the archive's `config` link, moves
    # <outside>/app.env into APP_DIR/shared and leaves a link to it in its place: an archive could
    # take over any file root can reach (measured on the code before the check).
    outside = box.root / "outside"
    outside.mkdir()
    (outside / "app.env").write_text("belongs to the system")
    live_on_a(box)
    artifact = box.upload(hostile(box, tar_member("config", tarfile.SYMTYPE, 0o777, str(outside))))

    run = box.run(install_body(box.plan(B, artifact, shared_paths=("config/app.env",))))

    assert run.code == ReleaseExit.ARTIFACT_REFUSED, run.stderr
    assert not (outside / "app.env").is_symlink()
    assert (outside / "app.env").read_text() == "belongs to the system"
    assert not (box.app_dir / "shared").exists()
    assert_untouched(box)


def test_a_file_written_through_an_archive_symlink_is_refused_before_it_is_written(box: Box) -> None:
    outside = box.root / "outside"
    outside.mkdir()
    live_on_a(box)
    planted = hostile(box, tar_member("up", tarfile.SYMTYPE, 0o777, str(outside)), tar_member("up/planted", data="x"))

    run = box.run(install_body(box.plan(B, box.upload(planted))))

    assert run.code == ReleaseExit.ARTIFACT_REFUSED
    assert list(outside.iterdir()) == []
    assert "ssm-deploy: refused: up/planted is inside up, which the archive stores as a symlink" in run.stderr
    assert_untouched(box)


def test_a_hostile_zip_is_refused_the_same_way(box: Box) -> None:
    live_on_a(box)
    staging = write_zip(
        box.root / "src" / "hostile.zip",
        [
            ("app.txt", stat.S_IFREG | 0o644, B),
            ("run", stat.S_IFREG | 0o6755, "x"),
            ("out", stat.S_IFLNK | 0o777, "../.."),
        ],
    )
    artifact = box.upload(staging, "zip")

    run = box.run(install_body(box.plan(B, artifact)))

    assert run.code == ReleaseExit.ARTIFACT_REFUSED
    assert [line.split(" (fix:")[0] for line in run.messages[:2]] == [
        "ssm-deploy: refused: run has the setuid/setgid bits (mode 6755)",
        "ssm-deploy: refused: out is a symlink to ../.., outside the release",
    ]
    assert_untouched(box)


def test_a_first_release_that_is_refused_leaves_no_current_and_no_release(box: Box) -> None:
    artifact = box.upload(hostile(box, tar_member("queue", tarfile.FIFOTYPE)))
    run = box.run(install_body(box.plan(B, artifact)))
    assert run.code == ReleaseExit.ARTIFACT_REFUSED
    assert box.current() is None and box.releases() == []


def test_what_the_instance_unpacks_keeps_links_inside_and_modes_but_no_special_bits(box: Box) -> None:
    files = [
        tar_member("app.txt", data=B),
        tar_member("server.js", mode=0o750, data="x"),
        tar_member("lib/x.js", data="y"),
        tar_member("node_modules/.bin/x", tarfile.SYMTYPE, 0o777, "../../lib/x.js"),
        tar_member("same.js", tarfile.LNKTYPE, 0o750, "server.js"),
    ]
    artifact = box.upload(write_tgz(box.root / "src" / "good.tgz", files))

    run = box.run(install_body(box.plan(B, artifact)))

    assert run.code == 0, run.stderr
    release = box.app_dir / "releases" / B
    assert (release / "node_modules" / ".bin" / "x").read_text() == "y"
    assert stat.S_IMODE((release / "server.js").stat().st_mode) == 0o750
    assert (release / "same.js").stat().st_ino == (release / "server.js").stat().st_ino


def test_dry_run_steps_say_the_artifact_is_inspected_before_unpacking(box: Box) -> None:
    steps = install_steps(box.plan(B, box.release_artifact(B)))
    [step] = [step for step in steps if "inspect every entry" in step]
    assert "before unpacking anything" in step and "exit 91, nothing unpacked" in step
    assert steps.index(step) < next(i for i, s in enumerate(steps) if s.lstrip().startswith("unpack the"))
