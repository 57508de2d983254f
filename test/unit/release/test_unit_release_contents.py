"""pipe.release.contents: the one rule set of what a release may hold, applied to real archives
(tar.gz and zip, built with tarfile, zipfile, GNU tar and Info-ZIP zip) and to directories; the unpacker
that creates only what the rules allow, even when they are bypassed; and the same text run as the
instances run it, on every python3 at hand down to 3.6."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import stat
import subprocess
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from pipe.release import contents
from pipe.release.artifact import check_artifact_path
from pipe.release.contents import (
    DIRECTORY,
    FILE,
    REFUSED,
    SYMLINK,
    Archive,
    Entry,
    Problem,
    Refused,
    leads_outside,
    problems,
    unpack,
)
from pipe.release.remote import unpack_program
from unit.release_support import Member, declare_size, tar_member, write_tgz, write_zip

# --- reading archives -----------------------------------------------------------------------------------


def refused(path: Path, archive_format: str = "tar.gz") -> list[Problem]:
    with Archive(str(path), archive_format) as archive:
        return archive.problems()


def one_refusal(path: Path, archive_format: str = "tar.gz") -> Problem:
    found = refused(path, archive_format)
    assert len(found) == 1, found
    return found[0]


GOOD = [
    tar_member("./", tarfile.DIRTYPE, 0o755),
    tar_member("./server.js", data="console.log('up')\n", mode=0o755),
    tar_member("node_modules/x/bin/x.js", data="#!/usr/bin/env node\n"),
    tar_member("node_modules/.bin/x", tarfile.SYMTYPE, 0o777, "../x/bin/x.js"),
    tar_member("config", tarfile.DIRTYPE, 0o750),
    tar_member("config/", tarfile.DIRTYPE, 0o750),  # the same directory twice: harmless
    tar_member("config/app.json", data="{}"),
    tar_member("app.json", tarfile.SYMTYPE, 0o777, "config/app.json"),
    tar_member("copy.js", tarfile.LNKTYPE, 0o755, "server.js"),  # a hard link to a file stored before it
    tar_member("dangling", tarfile.SYMTYPE, 0o777, "not-built-yet/file"),  # inside, resolves later or never
    tar_member("here", tarfile.SYMTYPE, 0o777, "."),
    tar_member("loop-a", tarfile.SYMTYPE, 0o777, "loop-b"),
    tar_member("loop-b", tarfile.SYMTYPE, 0o777, "loop-a"),  # a loop reaches nothing (ELOOP)
    tar_member("read-only", tarfile.DIRTYPE, 0o555),
    tar_member("read-only/file", data="x", mode=0o444),
]


# --- the rules: what is accepted ------------------------------------------------------------------------


def test_a_node_release_with_relative_links_hard_links_and_odd_modes_is_accepted(tmp_path: Path) -> None:
    assert refused(write_tgz(tmp_path / "good.tgz", GOOD)) == []


def test_a_zip_with_a_relative_symlink_and_no_unix_attributes_is_accepted(tmp_path: Path) -> None:
    path = write_zip(
        tmp_path / "good.zip",
        [
            ("bin/", stat.S_IFDIR | 0o755, ""),
            ("bin/start", stat.S_IFREG | 0o755, "run"),
            ("start", stat.S_IFLNK | 0o777, "bin/start"),
        ],
    )
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("windows.txt", "made on Windows: no file type")  # external_attr without S_IFMT
    with Archive(str(path), "zip") as archive:
        assert archive.problems() == []
        assert [(entry.name, entry.kind, entry.link) for entry in archive.entries] == [
            ("bin/", DIRECTORY, ""),
            ("bin/start", FILE, ""),
            ("start", SYMLINK, "bin/start"),
            ("windows.txt", FILE, ""),
        ]


# --- the rules: every refusal, naming the entry ---------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "phrase"),
    [
        (tar_member("queue", tarfile.FIFOTYPE), "is a FIFO (named pipe), not a file, directory or symlink"),
        (tar_member("dev/tty", tarfile.CHRTYPE), "is a character device, not a file, directory or symlink"),
        (tar_member("dev/sda", tarfile.BLKTYPE), "is a block device, not a file, directory or symlink"),
        (tar_member("vol", b"V"), "is a tar entry of type 'V', not a file, directory or symlink"),
        (tar_member("bin/su", mode=0o4755, data="x"), "has the setuid bit (mode 4755)"),
        (tar_member("bin/wall", mode=0o2755, data="x"), "has the setgid bit (mode 2755)"),
        (tar_member("tmp", tarfile.DIRTYPE, 0o1777), "has the sticky bit (mode 1777)"),
        (tar_member("both", mode=0o6755, data="x"), "has the setuid/setgid bits (mode 6755)"),
        (tar_member("../escape.sh", data="x"), "has a .. component, which would lead outside the release"),
        (tar_member("a/../../escape.sh", data="x"), "has a .. component"),
        (tar_member("/etc/cron.d/x", data="x"), "is an absolute path, which would be unpacked outside the release"),
        (
            tar_member("shadow", tarfile.LNKTYPE, 0o644, "/etc/shadow"),
            "is a hard link to /etc/shadow, outside the release",
        ),
        (tar_member("up", tarfile.LNKTYPE, 0o644, "../x"), "is a hard link to ../x, outside the release"),
        (
            tar_member("ghost", tarfile.LNKTYPE, 0o644, "nowhere"),
            "is a hard link to nowhere, which is not a file stored before it",
        ),
        (tar_member("etc", tarfile.SYMTYPE, 0o777, "/etc"), "is a symlink to /etc, outside the release"),
        (
            tar_member("node", tarfile.SYMTYPE, 0o777, "/usr/bin/node"),
            "is a symlink to /usr/bin/node, outside the release",
        ),
        (tar_member("up", tarfile.SYMTYPE, 0o777, "../../shared"), "is a symlink to ../../shared, outside the release"),
        (tar_member("a/b", tarfile.SYMTYPE, 0o777, "../.."), "is a symlink to ../.., outside the release"),
        (tar_member("empty", tarfile.SYMTYPE, 0o777, ""), "is a symlink with an empty target"),
    ],
)
def test_each_entry_a_release_may_not_hold_is_refused_by_name(tmp_path: Path, member: Member, phrase: str) -> None:
    path = write_tgz(tmp_path / "bad.tgz", [tar_member("ok.txt", data="fine"), member])
    problem = one_refusal(path)
    assert problem.name == member[0]
    assert phrase in problem.problem
    assert problem.fix
    assert problem.sentence().startswith(f"{member[0]} {problem.problem} (fix: ")


def test_a_hard_link_to_a_file_stored_after_it_is_refused(tmp_path: Path) -> None:
    path = write_tgz(
        tmp_path / "bad.tgz", [tar_member("early", tarfile.LNKTYPE, 0o644, "late"), tar_member("late", data="x")]
    )
    assert "which is not a file stored before it" in one_refusal(path).problem


@pytest.mark.parametrize(
    "members",
    [
        # lexically "outside.txt" and ".", really the release's parent (node-tar GHSA-gvrf-jx37-rjv5)
        [("s", "."), ("esc", "s/../outside.txt")],
        [("s", "."), ("escdir", "s/..")],
        # one level up per directory of the archive
        [("p/q/r/s", "../../.."), ("x", "p/q/r/s/../../../victim.txt")],
        # a link through a link that points out
        [("out", "/"), ("via", "out/etc")],
    ],
)
def test_a_symlink_that_leaves_through_another_symlink_is_refused(
    tmp_path: Path, members: list[tuple[str, str]]
) -> None:
    path = write_tgz(
        tmp_path / "bad.tgz", [tar_member(name, tarfile.SYMTYPE, 0o777, target) for name, target in members]
    )
    names = [problem.name for problem in refused(path)]
    assert members[-1][0] in names


def test_an_entry_below_a_symlink_or_a_file_is_refused_whatever_the_order(tmp_path: Path) -> None:
    link_first = write_tgz(
        tmp_path / "a.tgz", [tar_member("conf", tarfile.SYMTYPE, 0o777, "/etc"), tar_member("conf/passwd", data="x")]
    )
    link_last = write_tgz(
        tmp_path / "b.tgz", [tar_member("conf/passwd", data="x"), tar_member("conf", tarfile.SYMTYPE, 0o777, "sub")]
    )
    file_parent = write_tgz(tmp_path / "c.tgz", [tar_member("f", data="x"), tar_member("f/g", data="y")])

    first = refused(link_first)
    assert [problem.name for problem in first] == ["conf", "conf/passwd"]
    assert (
        "is inside conf, which the archive stores as a symlink: it would be written through the link"
        in first[1].problem
    )
    assert [problem.name for problem in refused(link_last)] == ["conf/passwd"]
    assert "is inside f, which the archive stores as a file" in one_refusal(file_parent).problem


def test_a_path_stored_twice_is_refused_unless_both_are_directories(tmp_path: Path) -> None:
    path = write_tgz(tmp_path / "twice.tgz", [tar_member("a", data="1"), tar_member("./a", data="2")])
    assert one_refusal(path).problem == "appears twice in the archive (a file and a file)"


def test_zip_entries_refused_by_type_bits_and_by_what_only_zip_can_hold(tmp_path: Path) -> None:
    path = write_zip(
        tmp_path / "bad.zip",
        [
            ("fifo", stat.S_IFIFO | 0o644, ""),
            ("sock", stat.S_IFSOCK | 0o755, ""),
            ("suid", stat.S_IFREG | 0o4755, "x"),
            ("out", stat.S_IFLNK | 0o777, "../../etc"),
            ("win\\path.txt", stat.S_IFREG | 0o644, "x"),
        ],
    )
    found = {problem.name: problem.problem for problem in refused(path, "zip")}
    assert found == {
        "fifo": "is a FIFO (named pipe), not a file, directory or symlink",
        "sock": "is a socket, not a file, directory or symlink",
        "suid": "has the setuid bit (mode 4755)",
        "out": "is a symlink to ../../etc, outside the release",
        "win\\path.txt": "has a backslash in its name (zip archives separate folders with /)",
    }


def test_a_zip_whose_files_declare_more_than_the_bound_unpacked_is_refused_naming_the_largest(tmp_path: Path) -> None:
    """A zip bomb's header: two files declaring 3 GiB each (the bytes stay small). The pipe refuses it before
    upload, naming the largest file, the total and the bound; below the bound the same files pass."""
    members = [("big.bin", stat.S_IFREG | 0o644, "0" * 4096), ("small", stat.S_IFREG | 0o644, "x")]
    path = declare_size(write_zip(tmp_path / "bomb.zip", members), 3 * 1024**3)

    message = check_artifact_path("bomb.zip", str(tmp_path))

    assert message is not None
    assert "big.bin declares 3.0 GiB unpacked, and the archive's files 6.0 GiB in all, above the bound of 5.0 GiB" in (
        message
    )
    assert contents.SIZE_FIX in message
    assert refused(declare_size(path, 2 * 1024**3), "zip") == []


MANY = [tar_member(f"empty-{n}") for n in range(12)]  # an archive of many empty files: no bytes declared


@pytest.mark.parametrize("archive_format", ["tar.gz", "zip"])
def test_an_archive_of_more_entries_than_the_bound_is_refused_and_read_no_further(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, archive_format: str
) -> None:
    """Millions of empty entries declare no bytes: the entry bound refuses them (here lowered to 5), naming the
    first entry past it, and the archive is read no further than that entry."""
    monkeypatch.setattr(contents, "MAX_ENTRIES", 5)
    if archive_format == "zip":
        path = write_zip(tmp_path / "many.zip", [(name, stat.S_IFREG | 0o644, "") for name, *_ in MANY])
    else:
        path = write_tgz(tmp_path / "many.tgz", MANY)

    with Archive(str(path), archive_format) as archive:
        found = archive.problems()
        read = len(archive.entries)

    assert found == [
        Problem(
            "empty-5",
            "is entry 6 of the archive, above the bound of 5 entries (files, directories and links)",
            contents.COUNT_FIX,
        )
    ]
    assert read == 6
    assert problems([Entry(name, FILE, 0o644, size=0) for name, *_ in MANY[:5]]) == []  # at the bound: fine


def test_a_directory_artifact_of_more_entries_than_the_bound_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(contents, "MAX_ENTRIES", 5)
    build = tmp_path / "dist"
    build.mkdir()
    for n in range(6):
        (build / f"f{n}").write_text("x")

    message = check_artifact_path("dist", str(tmp_path))

    assert message is not None and "above the bound of 5 entries" in message, message


def test_the_unpacker_writes_no_more_of_a_file_than_it_declares() -> None:
    """What the size rule counted is what is written: an entry holding more than it declares fails the unpack."""
    out = io.BytesIO()
    with pytest.raises(ValueError, match="holds more than the 10 bytes it declares"):
        contents._copy_declared(io.BytesIO(b"x" * 100), out, Entry("a", FILE, size=10))
    assert len(out.getvalue()) <= 10
    exact = io.BytesIO()
    contents._copy_declared(io.BytesIO(b"x" * 10), exact, Entry("a", FILE, size=10))
    assert exact.getvalue() == b"x" * 10


def test_a_name_with_control_characters_is_shown_escaped() -> None:
    [problem] = problems([Entry("evil\nssm-deploy: all good\x1b[0m", "FIFO (named pipe)")])
    assert "\n" not in problem.sentence() and "\x1b" not in problem.sentence()
    assert problem.sentence().startswith("evil\\x0assm-deploy: all good\\x1b[0m is a FIFO")


@pytest.mark.skipif(shutil.which("tar") is None or os.geteuid() != 0, reason="needs GNU tar and root (mknod)")
def test_archives_made_by_gnu_tar_from_a_real_tree_are_judged_the_same(tmp_path: Path) -> None:
    build = tmp_path / "build"
    (build / "bin").mkdir(parents=True)
    (build / "bin" / "tool").write_text("x")
    (build / "bin" / "tool").chmod(0o4755)
    os.mkfifo(build / "queue")
    os.mknod(build / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (build / "node").symlink_to("/usr/bin/node")
    (build / "lib.js").write_text("module.exports = 1")
    os.link(build / "lib.js", build / "lib-copy.js")
    archive = tmp_path / "web-api.tgz"
    subprocess.run(["tar", "-czf", str(archive), "-C", str(build), "."], check=True)

    found = {problem.name.removeprefix("./"): problem.problem for problem in refused(archive)}
    assert found["queue"].startswith("is a FIFO")
    assert found["null"].startswith("is a character device")
    assert found["bin/tool"].startswith("has the setuid bit")
    assert found["node"] == "is a symlink to /usr/bin/node, outside the release"
    # GNU tar stores the second name of a file as a hard link to the first: inside, so not refused
    assert sorted(found) == ["bin/tool", "node", "null", "queue"]
    with tarfile.open(archive) as tar:
        assert [member.name for member in tar.getmembers() if member.islnk()] in (["./lib.js"], ["./lib-copy.js"])


# --- one rule set: the directory ARTIFACT gets the same verdicts --------------------------------------------


def test_a_directory_artifact_is_judged_by_the_same_rules(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    (clone / "dist" / "bin").mkdir(parents=True)
    (clone / "dist" / "bin" / "x.js").write_text("x")
    (clone / "dist" / "x").symlink_to("bin/x.js")
    assert check_artifact_path("dist", str(clone)) is None

    (clone / "dist" / "node").symlink_to("/usr/bin/node")
    (clone / "dist" / "bin" / "x.js").chmod(0o4755)
    problem = check_artifact_path("dist", str(clone))
    assert problem is not None
    assert problem.startswith("dist holds 2 entries a release may not hold: bin/x.js has the setuid bit (mode 4755)")
    assert "node is a symlink to /usr/bin/node, outside the release (fix: " in problem


def test_an_archive_artifact_names_its_entries_and_their_fixes(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    clone.mkdir()
    members = [tar_member(f"fifo{number}", tarfile.FIFOTYPE) for number in range(7)]
    write_tgz(clone / "web-api.tgz", members)
    problem = check_artifact_path("web-api.tgz", str(clone))
    assert problem is not None
    assert problem.startswith("web-api.tgz holds 7 entries a release may not hold: fifo0 is a FIFO (named pipe)")
    assert "fifo4 is a FIFO" in problem and "fifo5" not in problem and problem.endswith("; and 2 more")


def test_an_archive_that_cannot_be_read_is_refused_before_upload(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "web-api.tgz").write_bytes(b"\x1f\x8b" + b"\0" * 64)  # gzip's magic, no gzip stream
    problem = check_artifact_path("web-api.tgz", str(clone))
    assert problem is not None and problem.startswith("web-api.tgz cannot be read as a .tar.gz (")


# --- symlinks resolve as the kernel resolves them -------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map("/".join)
TARGETS = st.lists(st.sampled_from(["a", "b", "c", "..", "..", "."]), min_size=1, max_size=6).map("/".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    directories=st.lists(PATHS, max_size=4),
    links=st.lists(st.tuples(PATHS, TARGETS), min_size=1, max_size=5),
)
@example(directories=[], links=[("a/a", "b/../../b"), ("b", "b/../..")])  # realpath: outside; a loop
def test_leads_outside_agrees_with_the_kernel(
    tmp_path_factory: pytest.TempPathFactory, directories: list[str], links: list[tuple[str, str]]
) -> None:
    root = tmp_path_factory.mktemp("release-root-x").resolve()  # a name no target can spell
    made: dict[str, str] = {}
    for path in directories:
        if not _below_a_link(root, path):
            (root / path).mkdir(parents=True, exist_ok=True)
    for path, target in links:
        if _below_a_link(root, path) or os.path.lexists(root / path):
            continue
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).symlink_to(target)
        made[path] = target
    assume(made)
    for path, target in made.items():
        resolved = _resolve_reading_the_disk(root, path)
        try:
            os.stat(root / path)
        except OSError as error:
            if error.errno == errno.ELOOP:
                assert resolved is None, (path, made)  # the oracle sees the kernel's loop
        else:
            assert resolved == Path(os.path.realpath(root / path, strict=True)), (path, made)
        outside = resolved is not None and not (resolved == root or root in resolved.parents)
        assert leads_outside(path, target, made) == outside, (path, target, made, resolved)


def _resolve_reading_the_disk(root: Path, path: str) -> Path | None:
    """Where ``root/path`` leads, one component at a time with lstat and readlink as the kernel walks
    it, a missing component counting as a directory (it may be made later): the oracle the kernel
    confirms wherever the path exists (os.path.realpath gives a wrong answer past a missing ``..``
    into a loop). None for a loop."""
    where = root.resolve()
    pending = path.split("/")
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            where = where.parent
            continue
        if not (where / part).is_symlink():
            where = where / part
            continue
        hops += 1
        if hops > 40:  # Linux's limit (ELOOP)
            return None
        target = os.readlink(where / part)
        if target.startswith("/"):
            where = Path("/")
        pending = target.split("/") + pending
    return where


def _below_a_link(root: Path, path: str) -> bool:
    parts = path.split("/")
    parents = [root / "/".join(parts[:depth]) for depth in range(1, len(parts))]
    return any(parent.is_symlink() or parent.is_file() for parent in parents)


# --- unpacking: only what the rules allow, even when they are bypassed ----------------------------------------


def test_unpack_recreates_the_release_faithfully(tmp_path: Path) -> None:
    unpack(str(write_tgz(tmp_path / "good.tgz", GOOD)), "tar.gz", str(tmp_path / "out"))
    out = tmp_path / "out"

    assert (out / "server.js").read_text() == "console.log('up')\n"
    assert stat.S_IMODE((out / "server.js").stat().st_mode) == 0o755
    assert os.readlink(out / "node_modules" / ".bin" / "x") == "../x/bin/x.js"
    assert (out / "node_modules" / ".bin" / "x").read_text() == "#!/usr/bin/env node\n"
    assert (out / "copy.js").stat().st_ino == (out / "server.js").stat().st_ino
    assert stat.S_IMODE((out / "config").stat().st_mode) == 0o750
    assert stat.S_IMODE((out / "read-only").stat().st_mode) == 0o555
    assert (out / "read-only" / "file").read_text() == "x"
    assert (out / "server.js").stat().st_mtime == 1_600_000_000
    assert os.readlink(out / "dangling") == "not-built-yet/file"


def test_unpack_of_a_zip_uses_defaults_where_it_records_no_mode(tmp_path: Path) -> None:
    path = tmp_path / "w.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, dos_attributes in (("dir/", 0x10), ("dir/file.txt", 0x20)):  # as made on Windows: no Unix mode
            info = zipfile.ZipInfo(name)
            info.create_system, info.external_attr = 0, dos_attributes
            archive.writestr(info, "" if name.endswith("/") else "text")
    unpack(str(path), "zip", str(tmp_path / "out"))
    assert (tmp_path / "out" / "dir" / "file.txt").read_text() == "text"
    assert stat.S_IMODE((tmp_path / "out" / "dir" / "file.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "out" / "dir").stat().st_mode) == 0o755


def test_a_refused_archive_creates_nothing(tmp_path: Path) -> None:
    path = write_tgz(tmp_path / "bad.tgz", [tar_member("ok", data="x"), tar_member("queue", tarfile.FIFOTYPE)])
    with pytest.raises(Refused) as caught:
        unpack(str(path), "tar.gz", str(tmp_path / "out"))
    assert [problem.name for problem in caught.value.problems] == ["queue"]
    assert not (tmp_path / "out").exists()


HOSTILE = [
    tar_member("queue", tarfile.FIFOTYPE),
    tar_member("null", tarfile.CHRTYPE),
    tar_member("suid", mode=0o6755, data="x"),
    tar_member("sticky", tarfile.DIRTYPE, 0o1777),
    tar_member("conf", tarfile.SYMTYPE, 0o777, "{outside}"),
    tar_member("conf/planted", data="written through the link"),
    tar_member("../escaped", data="x"),
    tar_member("/abs", data="x"),
    tar_member("hard", tarfile.LNKTYPE, 0o644, "{outside}/target"),
]


@pytest.fixture
def no_rules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The rules bypassed, as if they had missed something: what the unpacker still refuses to do."""
    monkeypatch.setattr(contents, "problems", lambda entries: [])
    yield


@pytest.mark.parametrize("member", HOSTILE, ids=lambda member: member[0])
def test_the_unpacker_alone_creates_nothing_dangerous_when_the_rules_miss(
    tmp_path: Path, no_rules: None, member: Member
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target").write_text("secret")
    name, kind, mode, data = member
    members = [tar_member("conf", tarfile.SYMTYPE, 0o777, str(outside))] if name == "conf/planted" else []
    members.append((name, kind, mode, data.replace("{outside}", str(outside))))
    path = write_tgz(tmp_path / "bad.tgz", members)
    out = tmp_path / "out"

    with contextlib.suppress(ValueError, OSError):  # refusing is fine; what matters is what exists afterwards
        unpack(str(path), "tar.gz", str(out))

    assert sorted(entry.name for entry in outside.iterdir()) == ["target"]
    assert (outside / "target").read_text() == "secret"
    assert not (tmp_path / "escaped").exists() and not Path("/abs").exists()
    for folder, names, files in os.walk(out):  # never into a symlink
        for entry in [Path(folder, name) for name in names + files]:
            info = entry.lstat()
            assert stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode) or stat.S_ISLNK(info.st_mode), entry
            assert not info.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX), entry
            assert info.st_ino != (outside / "target").stat().st_ino, entry


# --- on the instance: the text the release script sends, on each python3 --------------------------------------

PYTHONS = sorted(
    {
        str(found)
        for found in [
            *(Path.home() / ".pyenv" / "versions").glob("3.*/bin/python3"),
            *(Path(p) for p in ("/usr/bin/python3",) if Path(p).exists()),
        ]
    }
)


def run_program(python: str, archive_format: str, archive: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-I", "-c", unpack_program(), archive_format, str(archive), str(out)],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", ""), "LANG": "C"},  # a C locale, as a bare Run Command shell may have
        check=False,
    )


@pytest.mark.parametrize("python", PYTHONS)
def test_the_sent_program_runs_on_each_python3(tmp_path: Path, python: str) -> None:
    good = write_tgz(tmp_path / "good.tgz", [*GOOD, tar_member("café/ü.txt", data="utf-8 name")])
    bad = write_zip(tmp_path / "bad.zip", [("ok", stat.S_IFREG | 0o644, "x"), ("queue", stat.S_IFIFO | 0o644, "")])

    unpacked = run_program(python, "tar.gz", good, tmp_path / "good")
    refusal = run_program(python, "zip", bad, tmp_path / "bad")

    assert (unpacked.returncode, unpacked.stderr) == (0, "")
    assert (tmp_path / "good" / "café" / "ü.txt").read_text() == "utf-8 name"
    assert os.readlink(tmp_path / "good" / "node_modules" / ".bin" / "x") == "../x/bin/x.js"
    assert refusal.returncode == REFUSED
    assert refusal.stderr.splitlines() == [
        "ssm-deploy: refused: queue is a FIFO (named pipe), not a file, directory or symlink (fix: "
        f"{contents.KIND_FIX})"
    ]
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("python", PYTHONS)
def test_the_sent_program_refuses_a_zip_declaring_more_than_the_bound(tmp_path: Path, python: str) -> None:
    members = [("a", stat.S_IFREG | 0o644, "x"), ("b", stat.S_IFREG | 0o644, "y")]
    bomb = declare_size(write_zip(tmp_path / "bomb.zip", members), 3 * 1024**3)

    refusal = run_program(python, "zip", bomb, tmp_path / "out")

    assert refusal.returncode == REFUSED, refusal.stderr
    assert "declares 3.0 GiB unpacked, and the archive's files 6.0 GiB in all" in refusal.stderr
    assert not (tmp_path / "out").exists()


def test_the_sent_program_refuses_more_entries_than_the_bound(tmp_path: Path) -> None:
    program = unpack_program()
    assert f"MAX_ENTRIES = {contents.MAX_ENTRIES}\n" in program
    lowered = program.replace(f"MAX_ENTRIES = {contents.MAX_ENTRIES}\n", "MAX_ENTRIES = 5\n")

    refusal = subprocess.run(
        ["python3", "-I", "-c", lowered, "tar.gz", str(write_tgz(tmp_path / "many.tgz", MANY)), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=False,
    )

    assert refusal.returncode == REFUSED, refusal.stderr
    assert "empty-5 is entry 6 of the archive, above the bound of 5 entries" in refusal.stderr
    assert not (tmp_path / "out").exists()


def test_the_sent_program_is_the_rule_set_without_its_comments() -> None:
    source = Path(contents.__file__).read_text()
    assert "def problems(" in unpack_program() and "def leads_outside(" in unpack_program()
    assert not [line for line in unpack_program().splitlines() if line.lstrip().startswith("#")]
    assert len(unpack_program()) < len(source) * 0.8  # the comments stay in the pipe, not in the script's bound
