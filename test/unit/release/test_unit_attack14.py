"""The fourteenth outside attack (issue #17, "Done when"), hostile archives the earlier attacks did not
build: a hard link to a symlink (inside the release), a hard link written through a symlink to a
directory, a chain of symlinks that each read as inside but lead out. All held: each is refused by name
before anything is unpacked."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from pipe.release.contents import Archive
from unit.release_support import Member, tar_member, write_tgz

DIRECTORY = tar_member("d", tarfile.DIRTYPE, 0o755)


@pytest.mark.parametrize(
    ("members", "refusal"),
    [
        (
            [
                tar_member("f", data="x"),
                tar_member("s", tarfile.SYMTYPE, 0o777, "f"),
                tar_member("h", tarfile.LNKTYPE, 0o644, "s"),
            ],
            "h is a hard link to s, which is not a file stored before it",
        ),
        (
            [
                DIRECTORY,
                tar_member("d/f", data="x"),
                tar_member("s", tarfile.SYMTYPE, 0o777, "d"),
                tar_member("h", tarfile.LNKTYPE, 0o644, "s/f"),
            ],
            "h is a hard link to s/f, which is not a file stored before it",
        ),
        (
            [
                tar_member("a", tarfile.SYMTYPE, 0o777, "b"),
                tar_member("b", tarfile.SYMTYPE, 0o777, "d/../.."),
                DIRECTORY,
            ],
            "a is a symlink to b, outside the release",
        ),
        (
            [
                tar_member("s", tarfile.SYMTYPE, 0o777, "."),
                DIRECTORY,
                tar_member("d/t", tarfile.SYMTYPE, 0o777, "../s/../x"),
            ],
            "d/t is a symlink to ../s/../x, outside the release",
        ),
    ],
    ids=["hard link to a symlink", "hard link through a directory symlink", "symlink chain", "dot link then up"],
)
def test_a_hostile_link_is_refused_by_name(tmp_path: Path, members: list[Member], refusal: str) -> None:
    with Archive(str(write_tgz(tmp_path / "release.tgz", members)), "tar.gz") as archive:
        sentences = [problem.sentence() for problem in archive.problems()]
    assert any(refusal in sentence for sentence in sentences), sentences
