# Python 3.6 syntax on purpose: this file also runs on the instances (see below).
# ruff: noqa: UP006, UP032, UP035, UP045
"""What a release may contain: the one rule set the pipe applies to ARTIFACT before it uploads anything
and every instance applies to the downloaded archive before it unpacks anything.

This file is also the program the instances run: the release script carries its text and runs it with
``python3 -I -c <text> FORMAT ARCHIVE DEST``. So it uses the standard library only and Python 3.6
syntax (Amazon Linux 2023's python3 is 3.9, Amazon Linux 2's 3.7, Ubuntu 20.04's 3.8).

The rules (README, Releases):
- an entry is a regular file, a directory, a symlink, or a hard link to a regular file the archive
  stores before it (tar's own rule for a link, so the link stays inside the release); device nodes,
  FIFOs, sockets and anything else are refused;
- its name is relative and stays inside: no leading ``/``, no ``..`` component, no entry below another
  that the archive stores as a symlink or a file, no path stored twice (directories excepted);
- it keeps rwx permissions only: setuid, setgid and the sticky bit are refused, not dropped, so what
  goes live is exactly what was checked;
- its files declare (tar: their size; zip: their uncompressed size) at most MAX_UNPACKED_BYTES in all,
  and unpacking writes no more of a file than it declares, so a zip bomb is refused before it fills
  a disk;
- it holds at most MAX_ENTRIES entries (files, directories and links): an archive of millions of empty
  entries declares no bytes, yet exhausts an instance's inodes and the memory that reads it; a tar is
  read one entry past the bound and no further (a zip's central directory is read whole first);
- a symlink's target resolves inside the release, following the archive's own symlinks the way the
  kernel would (``s -> .`` then ``t -> s/../x`` leaves the release although ``s/../x`` reads as
  ``x``): absolute targets and targets that climb out with ``..`` are refused.

Unpacking (``unpack``) inspects every entry first and creates nothing when one is refused. It then
creates each entry itself rather than trusting an archiver's options: directories and files only
(``O_EXCL | O_NOFOLLOW``, mode ``& 0o777``), hard links only to a file it created, and symlinks last,
so no write can pass through a link the archive holds, even one these rules let through.
"""

import itertools
import os
import shutil
import stat
import sys
import tarfile
import time
import zipfile
from typing import IO, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

FILE, DIRECTORY, SYMLINK, HARD_LINK = "file", "directory", "symlink", "hard link"
KINDS = (FILE, DIRECTORY, SYMLINK, HARD_LINK)  # what a release may hold; every other kind is refused
CHARACTER_DEVICE, BLOCK_DEVICE, FIFO, SOCKET = "character device", "block device", "FIFO (named pipe)", "socket"
FILE_TYPES = {  # st_mode's file type (lstat, a zip entry's Unix attributes) -> kind
    stat.S_IFREG: FILE,
    stat.S_IFDIR: DIRECTORY,
    stat.S_IFLNK: SYMLINK,
    stat.S_IFCHR: CHARACTER_DEVICE,
    stat.S_IFBLK: BLOCK_DEVICE,
    stat.S_IFIFO: FIFO,
    stat.S_IFSOCK: SOCKET,
}
KEPT_BITS = 0o777
SPECIAL_BITS = ((stat.S_ISUID, "setuid"), (stat.S_ISGID, "setgid"), (stat.S_ISVTX, "sticky"))
DEFAULT_MODES = {FILE: 0o644, DIRECTORY: 0o755}  # for an entry that records no mode (a zip made on Windows)
MAX_SYMLINK_HOPS = 40  # Linux follows at most 40 symlinks in one path (ELOOP): a longer chain reaches nothing
MAX_LINK_BYTES = 4095  # PATH_MAX - 1: no symlink target is longer
LISTED = 5  # refused entries named one by one
REFUSED = 3  # the program's exit status when an entry is refused (1: it could not read or unpack)
FORMATS = ("tar.gz", "zip")
# What a release's files may declare in all once unpacked: the same bound as an ARTIFACT's own size
# (artifact.MAX_ARTIFACT_BYTES holds them equal), since every instance keeps KEEP_RELEASES unpacked copies.
MAX_UNPACKED_BYTES = 5 * 1024**3
# How many entries a release may hold: a large node_modules has a few hundred thousand
MAX_ENTRIES = 1000000

OUTSIDE_FIX = "pack paths relative to the release's root, e.g. tar -czf web-api.tgz -C dist ."
KIND_FIX = "leave it out of the build: the app or the system makes FIFOs, sockets and devices at run time"
BITS_FIX = "clear the bits before packing, with chmod -R u-s,g-s,-t: a release keeps rwx permissions only"
ONCE_FIX = "pack each path once, as what it is"
SYMLINK_FIX = (
    "point it at a path inside the release with a relative target, or make the link on the instance with "
    "COMMANDS, e.g. ln -s /usr/bin/node bin/node; SHARED_PATHS keeps data outside the release"
)
HARD_LINK_FIX = "store the file itself, with tar --hard-dereference, or link to a file stored before the link"
COUNT_FIX = "ship only what runs (e.g. install dependencies with COMMANDS on the instance)"
ZIP_FIX = "zip it again with zip -r: deflate, no password, / between folders"
SIZE_FIX = (
    "ship only what runs (e.g. install dependencies with COMMANDS on the instance) and put large assets in "
    "the machine image"
)


class Entry(NamedTuple):
    """One member of an archive (or of a directory about to be packed), as the rules see it."""

    name: str  # as stored
    kind: str  # FILE, DIRECTORY, SYMLINK, HARD_LINK, or what else it is (FIFO, SOCKET, ...)
    mode: Optional[int] = None  # permission and special bits; None when the archive records none
    link: str = ""  # a symlink's target, or the name a hard link links to
    mtime: Optional[float] = None
    size: Optional[int] = None  # a file's declared size once unpacked; None when not read from an archive


class Problem(NamedTuple):
    """Why an entry cannot be part of a release, and what to change in the build."""

    name: str
    problem: str  # follows the name: "is a FIFO (named pipe), ..."
    fix: str

    def sentence(self) -> str:
        return "{} {} (fix: {})".format(shown(self.name), self.problem, self.fix)


class Refused(Exception):
    """The archive holds entries a release may not; nothing was unpacked."""

    def __init__(self, problems: List[Problem]) -> None:
        super().__init__(summary(problems))
        self.problems = problems


# --- the rules ----------------------------------------------------------------------------------------


def problems(entries: Iterable[Entry]) -> List[Problem]:
    """Every entry a release may not hold, in archive order (empty: the entries may be unpacked)."""
    found: List[Tuple[int, Problem]] = []
    kinds: Dict[str, str] = {}
    links: Dict[str, str] = {}
    kept: List[Tuple[int, Entry, str]] = []
    for index, entry in enumerate(entries):
        if index == MAX_ENTRIES:
            found.append((index, Problem(entry.name, _COUNT_PROBLEM.format(index + 1, MAX_ENTRIES), COUNT_FIX)))
            break  # the entries past the bound are not read
        path, wrong = normal_path(entry.name)
        if wrong is None:
            wrong = _own_problem(entry, path, kinds)
            if path and path not in kinds:  # what the path is, for the entries after it, refused or not
                kinds[path] = entry.kind
                if entry.kind == SYMLINK:
                    links[path] = entry.link
        if wrong is not None:
            found.append((index, Problem(entry.name, wrong[0], wrong[1])))
        elif path:  # not "." or "./", the release's own directory
            kept.append((index, entry, path))
    for index, entry, path in kept:
        wrong = _placement_problem(entry, path, kinds, links)
        if wrong is not None:
            found.append((index, Problem(entry.name, wrong[0], wrong[1])))
    too_big = _size_problem([(index, entry) for index, entry, _ in kept if entry.kind == FILE])
    if too_big is not None:
        found.append(too_big)
    return [problem for _, problem in sorted(found, key=lambda pair: pair[0])]


def normal_path(name: str) -> Tuple[str, Optional[Tuple[str, str]]]:
    """(the name with ``.`` and empty components dropped, None) or ("", (problem, fix))."""
    if "\0" in name:
        return "", ("has a NUL character in its name", ONCE_FIX)
    if not name:
        return "", ("has an empty name", ONCE_FIX)
    if name.startswith("/"):
        return "", ("is an absolute path, which would be unpacked outside the release", OUTSIDE_FIX)
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        return "", ("has a .. component, which would lead outside the release", OUTSIDE_FIX)
    return "/".join(parts), None


def _own_problem(entry: Entry, path: str, kinds: Dict[str, str]) -> Optional[Tuple[str, str]]:
    """What is wrong with the entry on its own, or with what the archive stored before it."""
    if entry.kind not in KINDS:
        return "is a {}, not a file, directory or symlink".format(entry.kind), KIND_FIX
    if not path and entry.kind != DIRECTORY:
        return "names the release's own directory but is a {}".format(entry.kind), OUTSIDE_FIX
    bits = [word for bit, word in SPECIAL_BITS if entry.mode is not None and entry.mode & bit]
    if bits and entry.kind in (FILE, DIRECTORY):
        mode = "{:o}".format(stat.S_IMODE(entry.mode or 0))
        return "has the {} bit{} (mode {})".format("/".join(bits), "s" if len(bits) > 1 else "", mode), BITS_FIX
    earlier = kinds.get(path)
    if earlier is not None and not (earlier == DIRECTORY and entry.kind == DIRECTORY):
        return "appears twice in the archive (a {} and a {})".format(earlier, entry.kind), ONCE_FIX
    if entry.kind == HARD_LINK:
        target, wrong = normal_path(entry.link)
        if wrong is not None or not target:
            return "is a hard link to {}, outside the release".format(shown(entry.link)), HARD_LINK_FIX
        if kinds.get(target) not in (FILE, HARD_LINK):
            return "is a hard link to {}, which is not a file stored before it".format(shown(entry.link)), HARD_LINK_FIX
    return None


def _placement_problem(
    entry: Entry, path: str, kinds: Dict[str, str], links: Dict[str, str]
) -> Optional[Tuple[str, str]]:
    """What is wrong with the entry among the others: below a symlink or a file, or a symlink out."""
    parts = path.split("/")
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])
        kind = kinds.get(parent)
        if kind is not None and kind != DIRECTORY:
            through = ": it would be written through the link" if kind == SYMLINK else ""
            return "is inside {}, which the archive stores as a {}{}".format(shown(parent), kind, through), ONCE_FIX
    if entry.kind != SYMLINK:
        return None
    if not entry.link:
        return "is a symlink with an empty target", SYMLINK_FIX
    if len(entry.link.encode("utf-8", "surrogateescape")) > MAX_LINK_BYTES:
        return "is a symlink with a target longer than {} bytes".format(MAX_LINK_BYTES), SYMLINK_FIX
    if "\0" in entry.link or leads_outside(path, entry.link, links):
        return "is a symlink to {}, outside the release".format(shown(entry.link)), SYMLINK_FIX
    return None


_COUNT_PROBLEM = "is entry {:,} of the archive, above the bound of {:,} entries (files, directories and links)"


def _size_problem(files: List[Tuple[int, Entry]]) -> Optional[Tuple[int, Problem]]:
    """The largest file, when the files declare more than MAX_UNPACKED_BYTES in all (a zip bomb's header)."""
    total = sum(entry.size or 0 for _, entry in files)
    if total <= MAX_UNPACKED_BYTES:
        return None
    index, largest = max(files, key=lambda pair: pair[1].size or 0)
    problem = "declares {} unpacked, and the archive's files {} in all, above the bound of {}".format(
        human(largest.size or 0), human(total), human(MAX_UNPACKED_BYTES)
    )
    return index, Problem(largest.name, problem, SIZE_FIX)


def human(size: int) -> str:
    """A byte count for a message: 6.0 GiB, 12.5 MiB, 300 bytes."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return "{:.1f} {}".format(size / scale, unit)
    return "{} bytes".format(size)


def leads_outside(path: str, target: str, links: Dict[str, str]) -> bool:
    """Whether the symlink at ``path`` (normalised) with ``target`` resolves outside the release,
    following the archive's symlinks (``links``: normalised path -> target) as the kernel does: a
    ``..`` applies to where the path so far really is, not to its spelling."""
    if target.startswith("/"):
        return True
    where = path.split("/")[:-1]
    pending = target.split("/")
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not where:
                return True
            where.pop()
            continue
        where.append(part)
        link = links.get("/".join(where))
        if link is None:
            continue
        hops += 1
        if hops > MAX_SYMLINK_HOPS:
            return False  # the kernel gives up (ELOOP): the link reaches nothing
        if link.startswith("/"):
            return True
        where.pop()
        pending = link.split("/") + pending
    return False


def summary(found: List[Problem], limit: int = LISTED) -> str:
    """The refused entries in one line: the first ``limit`` with their fixes, then how many more."""
    text = "; ".join(problem.sentence() for problem in found[:limit])
    return text + ("; and {} more".format(len(found) - limit) if len(found) > limit else "")


def shown(name: str) -> str:
    """``name`` for a message: control characters and undecodable bytes as \\xNN, nothing else changed."""
    out = []
    for char in name:
        code = ord(char)
        if code < 0x20 or code == 0x7F or 0xDC80 <= code <= 0xDCFF:
            out.append("\\x{:02x}".format(code & 0xFF))
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\u{:04x}".format(code))
        else:
            out.append(char)
    return "".join(out)


# --- reading archives ---------------------------------------------------------------------------------


class Archive:
    """A .tar.gz or .zip opened for reading: its entries, the problems only its format can have, and
    each member's bytes."""

    def __init__(self, path: str, archive_format: str) -> None:
        if archive_format not in FORMATS:
            raise ValueError("unknown archive format {!r}".format(archive_format))
        self.format = archive_format
        self._tar: Optional[tarfile.TarFile] = None
        self._zip: Optional[zipfile.ZipFile] = None
        self.entries: List[Entry] = []
        self.format_problems: List[Problem] = []
        try:
            if archive_format == "tar.gz":
                self._tar = tarfile.open(path, "r:gz", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
                self._members = list(itertools.islice(self._tar, MAX_ENTRIES + 1))  # the rules refuse more
                self.entries = [_tar_entry(member) for member in self._members]
            else:
                self._zip = zipfile.ZipFile(path)
                self._infos = self._zip.infolist()[: MAX_ENTRIES + 1]
                self.entries = [self._zip_entry(info) for info in self._infos]
        except BaseException:
            self.__exit__()
            raise

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *_: object) -> None:
        if self._tar is not None:
            self._tar.close()
        if self._zip is not None:
            self._zip.close()

    def problems(self) -> List[Problem]:
        return self.format_problems + problems(self.entries)

    def content(self, index: int) -> IO[bytes]:
        """The bytes of the regular file at ``index``."""
        if self._tar is not None:
            stream = self._tar.extractfile(self._members[index])
            if stream is None:
                raise ValueError("{} has no content".format(shown(self.entries[index].name)))
            return stream
        assert self._zip is not None
        return self._zip.open(self._infos[index])

    def _zip_entry(self, info: zipfile.ZipInfo) -> Entry:
        assert self._zip is not None
        unix = info.external_attr >> 16
        kind = kind_of(unix) if stat.S_IFMT(unix) else FILE  # no file type: made on Windows, or by writestr
        if info.filename.endswith("/") and kind in (FILE, DIRECTORY):
            kind = DIRECTORY
        wrong = None
        if info.flag_bits & 0x1:
            wrong = "is encrypted"
        elif info.compress_type not in _ZIP_METHODS:
            wrong = "is compressed with method {}, which python3 cannot unpack".format(info.compress_type)
        elif "\\" in info.filename:
            wrong = "has a backslash in its name (zip archives separate folders with /)"
        link = ""
        if wrong is None and kind == SYMLINK:
            with self._zip.open(info) as data:
                link = data.read(MAX_LINK_BYTES + 1).decode("utf-8", "surrogateescape")
        if wrong is not None:
            self.format_problems.append(Problem(info.filename, wrong, ZIP_FIX))
        mtime = time.mktime((*info.date_time, 0, 0, -1))
        return Entry(info.filename, kind, stat.S_IMODE(unix) if unix else None, link, mtime, info.file_size)


def kind_of(mode: int) -> str:
    """The kind of a file from its ``st_mode``."""
    return FILE_TYPES.get(stat.S_IFMT(mode), "file of type {:o}".format(stat.S_IFMT(mode)))


_TAR_KINDS = (
    (tarfile.TarInfo.isreg, FILE),  # also contiguous and sparse files
    (tarfile.TarInfo.isdir, DIRECTORY),
    (tarfile.TarInfo.issym, SYMLINK),
    (tarfile.TarInfo.islnk, HARD_LINK),
    (tarfile.TarInfo.ischr, CHARACTER_DEVICE),
    (tarfile.TarInfo.isblk, BLOCK_DEVICE),
    (tarfile.TarInfo.isfifo, FIFO),
)
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


def _tar_entry(member: tarfile.TarInfo) -> Entry:
    kind = next((name for test, name in _TAR_KINDS if test(member)), None)
    if kind is None:
        kind = "tar entry of type {!r}".format(member.type.decode("latin-1"))
    size = member.size if kind == FILE else None
    return Entry(member.name, kind, member.mode, member.linkname, float(member.mtime), size)


# --- unpacking ----------------------------------------------------------------------------------------


def unpack(archive_path: str, archive_format: str, destination: str) -> None:
    """Inspect the archive, then (only when no entry is refused) create ``destination`` and unpack
    into it. Raises Refused before creating anything."""
    with Archive(archive_path, archive_format) as archive:
        found = archive.problems()
        if found:
            raise Refused(found)
        root = os.fsencode(destination)
        os.mkdir(root, DEFAULT_MODES[DIRECTORY])
        _Unpacker(root).run(archive)


class _Unpacker:
    """Creates only directories, regular files, hard links to files it created, and symlinks, the
    symlinks last; whatever an entry says, nothing gets a bit beyond rwx."""

    def __init__(self, root: bytes) -> None:
        self.root = root
        self.files: Set[str] = set()
        self.directories: List[Tuple[bytes, int, Optional[float]]] = []
        self.symlinks: List[Tuple[bytes, bytes, Optional[float]]] = []

    def run(self, archive: Archive) -> None:
        for index, entry in enumerate(archive.entries):
            path, wrong = normal_path(entry.name)
            if wrong is not None:
                raise ValueError("{} {}".format(shown(entry.name), wrong[0]))
            if not path:
                continue
            target = self._place(path)
            if entry.kind == DIRECTORY:
                self._directory(target, entry)
            elif entry.kind == FILE:
                with archive.content(index) as data:
                    self._file(target, entry, data)
                self.files.add(path)
            elif entry.kind == HARD_LINK:
                source, _ = normal_path(entry.link)
                if source not in self.files:
                    raise ValueError("{} links to a file not unpacked before it".format(shown(entry.name)))
                os.link(os.path.join(self.root, *_parts(source)), target, follow_symlinks=False)
                self.files.add(path)
            elif entry.kind == SYMLINK:
                self.symlinks.append((target, entry.link.encode("utf-8", "surrogateescape"), entry.mtime))
            else:
                raise ValueError("{} is a {}".format(shown(entry.name), entry.kind))
        for target, link, mtime in self.symlinks:
            os.symlink(link, target)  # fails when anything is there already
            if mtime is not None:
                os.utime(target, (mtime, mtime), follow_symlinks=False)
        for target, mode, mtime in sorted(self.directories, key=lambda item: -item[0].count(b"/")):
            descriptor = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fchmod(descriptor, mode)
                if mtime is not None:
                    os.utime(descriptor, (mtime, mtime))
            finally:
                os.close(descriptor)

    def _place(self, path: str) -> bytes:
        """The entry's path under the root, its parent directories made (real directories, never links)."""
        parts = _parts(path)
        where = self.root
        for part in parts[:-1]:
            where = os.path.join(where, part)
            try:
                os.mkdir(where, DEFAULT_MODES[DIRECTORY])
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(where).st_mode):
                    raise ValueError("{} is not a directory".format(shown(os.fsdecode(where)))) from None
        return os.path.join(where, parts[-1])

    def _directory(self, target: bytes, entry: Entry) -> None:
        try:
            os.mkdir(target, DEFAULT_MODES[DIRECTORY])
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(target).st_mode):
                raise
        self.directories.append((target, _mode(entry, DIRECTORY), entry.mtime))

    def _file(self, target: bytes, entry: Entry, data: IO[bytes]) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(target, flags, 0o600), "wb") as out:
            if entry.size is None:
                shutil.copyfileobj(data, out, 1024 * 1024)
            else:
                _copy_declared(data, out, entry)
            os.fchmod(out.fileno(), _mode(entry, FILE))
        if entry.mtime is not None:
            os.utime(target, (entry.mtime, entry.mtime), follow_symlinks=False)


def _copy_declared(data: IO[bytes], out: IO[bytes], entry: Entry) -> None:
    """Copy no more than the entry declares (its size is what the rules checked), whatever the archive holds."""
    left = entry.size or 0
    while True:
        chunk = data.read(min(1024 * 1024, left + 1))
        if not chunk:
            return
        if len(chunk) > left:
            raise ValueError("{} holds more than the {} it declares".format(shown(entry.name), human(left)))
        out.write(chunk)
        left -= len(chunk)


def _parts(path: str) -> List[bytes]:
    parts = [part.encode("utf-8", "surrogateescape") for part in path.split("/")]
    if not path or any(part in (b"", b".", b"..") for part in parts):
        raise ValueError("{} is not a path inside the release".format(shown(path)))
    return parts


def _mode(entry: Entry, kind: str) -> int:
    return DEFAULT_MODES[kind] if entry.mode is None else entry.mode & KEPT_BITS


# --- on the instance ----------------------------------------------------------------------------------


def main(arguments: List[str]) -> int:
    """FORMAT ARCHIVE DEST: inspect ARCHIVE, then unpack it into DEST (which it creates). Exit 0 when
    unpacked, REFUSED (nothing created) when an entry is refused, 1 when it cannot read or unpack."""
    if len(arguments) != 3:
        _say("usage: FORMAT ARCHIVE DEST")
        return 2
    archive_format, archive_path, destination = arguments
    try:
        unpack(archive_path, archive_format, destination)
    except Refused as refused:
        for problem in refused.problems[:LISTED]:
            _say("refused: " + problem.sentence())
        if len(refused.problems) > LISTED:
            _say("refused: and {} more entries".format(len(refused.problems) - LISTED))
        return REFUSED
    except Exception as error:  # a damaged archive, a full disk: the shell says what it means
        _say("cannot unpack the archive: {}: {}".format(type(error).__name__, shown(str(error))))
        return 1
    return 0


def _say(text: str) -> None:
    line = "ssm-deploy: {}\n".format(text)
    sys.stderr.flush()
    raw = getattr(sys.stderr, "buffer", None)  # bytes: whatever the locale, a name prints as UTF-8
    if raw is None:
        sys.stderr.write(line)
    else:
        raw.write(line.encode("utf-8", "backslashreplace"))
        raw.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
