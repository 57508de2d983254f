"""ARTIFACT: the tested build, checked, packed (when it is a directory) and uploaded once per content.

The S3 key is derived from the content, ``<ARTIFACT_PREFIX><sha256>.<tar.gz|zip>``, so the same build
deployed to dev, stg and prod is uploaded once, and a re-run of a step uploads nothing. The object
carries its SHA-256 twice: as S3's additional checksum (S3 checks it against the bytes it receives
and rejects a mismatch) and as the metadata ``sha256`` (hex, what the instances compare before they
unpack anything). A directory is packed into a deterministic tar.gz, so the same files give the same
key whatever their timestamps or owners in the build container. Before anything is packed or uploaded,
every entry (of the directory or the archive) is checked against the rules of what a release may hold
(``contents.py``), the same rules each instance applies again before it unpacks anything.

Nothing of the build but its bytes reaches S3: the key holds the prefix and the digest, the
metadata holds the digest. No ACL is ever sent, so the object stays as private as the bucket.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from s3transfer.manager import TransferConfig, TransferManager

from pipe.aws.errors import error_code, error_message, is_access_denied
from pipe.config.release import check_artifact_prefix
from pipe.errors import NothingSent
from pipe.limits import S3_MAX_PARTS, S3_PART_MIN_BYTES, S3_PUT_OBJECT_MAX_BYTES
from pipe.release.contents import (
    MAX_UNPACKED_BYTES,
    SIZE_FIX,
    Archive,
    Entry,
    Problem,
    human,
    kind_of,
    problems,
    summary,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# The pipe's bound, not S3's (S3 takes 48.8 TiB): every instance downloads the artifact and keeps
# KEEP_RELEASES unpacked copies of it, and a tested build of an application (node_modules included)
# is far below this. 5 GiB is also the largest object S3 takes in one PutObject, a size every S3
# tool handles. Anything bigger belongs in a machine image or a container image, not a release.
MAX_ARTIFACT_BYTES = S3_PUT_OBJECT_MAX_BYTES
assert MAX_UNPACKED_BYTES == MAX_ARTIFACT_BYTES  # one bound for the archive and for what it unpacks to

# Multipart above 16 MiB, in 16 MiB parts: a failed part is retried alone, and the largest
# artifact takes 320 parts, far from S3's 10,000.
MULTIPART_BYTES = 16 * 1024**2
TRANSFER = TransferConfig(multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES)
assert S3_PART_MIN_BYTES <= MULTIPART_BYTES and MAX_ARTIFACT_BYTES // MULTIPART_BYTES < S3_MAX_PARTS

ARCHIVE_SUFFIXES = {".tar.gz": "tar.gz", ".tgz": "tar.gz", ".zip": "zip"}
# What a file of each format starts with: gzip's magic number; a zip's first local file header (an
# empty zip has none, only its end record, and is refused as empty).
MAGIC = {"tar.gz": b"\x1f\x8b", "zip": b"PK\x03\x04"}
CONTENT_TYPES = {"tar.gz": "application/gzip", "zip": "application/zip"}

# Packed entries carry this time (1980-01-01, the zip epoch, which reproducible builds also use):
# GNU tar warns about the 1970 of a zero mtime when it unpacks on the instance.
FIXED_MTIME = 315532800
CHUNK = 1024 * 1024
# S3's "safe characters" for key names: nothing in a key then needs escaping anywhere (URLs, JSON,
# IAM resource ARNs). The prefix is the user's; the rest of the key is the digest and the format.


@dataclass(frozen=True)
class Artifact:
    path: Path  # the file to upload (a packed file in the work directory when ARTIFACT is a directory)
    sha256: str  # hex
    size: int
    archive_format: str  # "tar.gz" | "zip"
    key: str  # ARTIFACT_PREFIX + sha256 + "." + archive_format

    @property
    def prefix(self) -> str:
        return self.key[: -len(f"{self.sha256}.{self.archive_format}")]


# --- validation (no AWS) -----------------------------------------------------------------------------


def check_artifact_path(path_text: str, clone_dir: str) -> str | None:
    """What is wrong with ARTIFACT as a release, or None. Relative paths are read from the clone
    directory; the path, once symlinks are resolved, must stay inside it."""
    if not path_text.strip():
        return "is empty: name a .tar.gz, .tgz or .zip file, or a directory, in the clone directory"
    clone = Path(clone_dir).resolve()
    candidate = _candidate(path_text, clone_dir)
    if not os.path.lexists(candidate):
        return (
            f"{path_text} does not exist in the clone directory {clone}: build it in this step, or list it "
            "under the build step's artifacts: so that this step receives it"
        )
    if not candidate.exists():
        return f"{path_text} is a symlink to {os.readlink(candidate)}, which does not exist"
    resolved = candidate.resolve()
    if resolved != clone and clone not in resolved.parents:
        through_link = Path(os.path.normpath(candidate.absolute())) != resolved
        via = f" (through a symlink, to {resolved})" if through_link else ""
        return (
            f"{path_text} is outside the clone directory {clone}{via}: the pipe only ships what the build "
            "produced; copy it into the clone directory"
        )
    if resolved.is_dir():
        return _directory_problem(path_text, resolved)
    if resolved.is_file():
        return _file_problem(path_text, resolved)
    return f"{path_text} is neither a file nor a directory"


def archive_format(path: Path) -> str | None:
    """ "tar.gz" or "zip" from the file name, or None."""
    name = path.name.lower()
    return next((fmt for suffix, fmt in ARCHIVE_SUFFIXES.items() if name.endswith(suffix)), None)


def _candidate(path_text: str, clone_dir: str) -> Path:
    raw = Path(path_text.strip())
    return raw if raw.is_absolute() else Path(clone_dir) / raw


def _file_problem(path_text: str, path: Path) -> str | None:
    fmt = archive_format(path)
    if fmt is None:
        return f"{path_text} is not a .tar.gz, .tgz or .zip file: pack it as one, or name the directory to pack"
    size = path.stat().st_size
    if size == 0:
        return f"{path_text} is empty (0 bytes): check the build step that writes it"
    if size > MAX_ARTIFACT_BYTES:
        return _too_big(path_text, size)
    with path.open("rb") as file:
        start = file.read(len(MAGIC[fmt]))
    if start != MAGIC[fmt]:
        kind = "a gzip-compressed tar (tar -czf)" if fmt == "tar.gz" else "a zip archive with at least one file"
        return f"{path_text} is named .{path.name.rsplit('.', 1)[-1]} but is not {kind}"
    try:
        with Archive(str(path), fmt) as archive:
            found = archive.problems()
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error, ValueError) as error:
        return f"{path_text} cannot be read as a .{fmt} ({error}): pack it again and check the build step's log"
    return _refusal(path_text, found)


def _directory_problem(path_text: str, directory: Path) -> str | None:
    size = 0
    files = 0
    entries = []
    for relative, info, path in walk(directory):
        link = os.readlink(path) if stat.S_ISLNK(info.st_mode) else ""
        entries.append(Entry(relative, kind_of(info.st_mode), stat.S_IMODE(info.st_mode), link))
        if stat.S_ISDIR(info.st_mode):
            continue
        files += 1
        size += info.st_size if stat.S_ISREG(info.st_mode) else 0
        if size > MAX_ARTIFACT_BYTES:
            return _too_big(path_text, size)
    refused = _refusal(path_text, problems(entries))
    if refused is None and files == 0:
        return f"{path_text} is a directory with no files in it: check the build step that fills it"
    return refused


def _refusal(path_text: str, found: list[Problem]) -> str | None:
    """ARTIFACT's entries a release may not hold (pipe/release/contents.py), named with their fixes."""
    if not found:
        return None
    count = "an entry" if len(found) == 1 else f"{len(found)} entries"
    return f"{path_text} holds {count} a release may not hold: {summary(found)}"


def _too_big(path_text: str, size: int) -> str:
    return (
        f"{path_text} is {human(size)}, above the pipe's bound of {human(MAX_ARTIFACT_BYTES)} (every instance "
        f"downloads it and keeps KEEP_RELEASES unpacked copies): {SIZE_FIX}"
    )


# --- packing and hashing -----------------------------------------------------------------------------


def walk(root: Path, relative: str = "") -> Iterator[tuple[str, os.stat_result, Path]]:
    """Every entry under ``root`` (not following symlinks), as (relative POSIX path, lstat, path),
    depth first with the names of each directory sorted: a fixed order, whatever the file system's."""
    with os.scandir(root) as found:
        entries = sorted(found, key=lambda entry: entry.name)
    for entry in entries:
        name = f"{relative}{entry.name}"
        info = entry.stat(follow_symlinks=False)
        yield name, info, Path(entry.path)
        if stat.S_ISDIR(info.st_mode):
            yield from walk(Path(entry.path), f"{name}/")


class _Digesting:
    """A write-only file that hashes and counts what passes through it on the way to ``target``."""

    def __init__(self, target: Any) -> None:
        self._target = target
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        written: int = self._target.write(data)
        return written

    def flush(self) -> None:
        self._target.flush()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def pack_directory(source: Path, target: Path) -> tuple[str, int]:
    """Pack ``source``'s contents into the tar.gz ``target``; returns its (sha256, size). The bytes
    depend only on names, contents, the executable bit and symlink targets: fixed order, mtime, owner
    and modes, and a gzip header without name or time. Symlinks are stored as symlinks, never followed."""
    with target.open("wb") as raw:
        sink = _Digesting(raw)
        with (
            gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=6) as zipped,
            tarfile.open(fileobj=zipped, mode="w|", format=tarfile.PAX_FORMAT) as tar,
        ):
            for relative, info, path in walk(source):
                entry = _tar_entry(relative, info, path)
                if entry.isreg():
                    with path.open("rb") as content:
                        tar.addfile(entry, content)
                else:
                    tar.addfile(entry)
    return sink.hexdigest(), sink.size


def _tar_entry(relative: str, info: os.stat_result, path: Path) -> tarfile.TarInfo:
    entry = tarfile.TarInfo(relative)
    entry.mtime = FIXED_MTIME
    entry.uid = entry.gid = 0
    entry.uname = entry.gname = ""
    if stat.S_ISDIR(info.st_mode):
        entry.type, entry.mode = tarfile.DIRTYPE, 0o755
    elif stat.S_ISLNK(info.st_mode):
        entry.type, entry.mode, entry.linkname = tarfile.SYMTYPE, 0o777, os.readlink(path)
    else:
        entry.type, entry.size = tarfile.REGTYPE, info.st_size
        entry.mode = 0o755 if info.st_mode & 0o111 else 0o644
    return entry


def file_sha256(path: Path) -> tuple[str, int]:
    """(sha256 hex, size) of a file, read in 1 MiB chunks (flat memory whatever the size)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def artifact_key(prefix: str, sha256: str, fmt: str) -> str:
    return f"{prefix}{sha256}.{fmt}"


def prepare_artifact(path_text: str, clone_dir: str, prefix: str, workdir: Path) -> Artifact:
    """The Artifact for ARTIFACT: the file itself, or a directory packed into ``workdir`` (which
    must not be inside it). Checks again what ``check_artifact_path`` checked: the build may have
    changed since validation."""
    for variable, problem in (
        ("ARTIFACT", check_artifact_path(path_text, clone_dir)),
        ("ARTIFACT_PREFIX", check_artifact_prefix(prefix)),
    ):
        if problem:
            raise NothingSent(variable, problem)
    source = _candidate(path_text, clone_dir).resolve()
    if source.is_dir():
        work = workdir.resolve()
        if work == source or source in work.parents:
            raise ValueError(f"the work directory {work} is inside the directory to pack {source}")
        path, fmt = work / "release.tar.gz", "tar.gz"
        sha256, size = pack_directory(source, path)
        if size > MAX_ARTIFACT_BYTES:
            raise NothingSent("ARTIFACT", _too_big(f"{path_text} packed", size))
    else:
        path, fmt = source, archive_format(source) or ""
        sha256, size = file_sha256(source)
    return Artifact(path=path, sha256=sha256, size=size, archive_format=fmt, key=artifact_key(prefix, sha256, fmt))


# --- upload ------------------------------------------------------------------------------------------


def sha256_base64(hex_digest: str) -> str:
    """The form S3's ChecksumSHA256 takes: the raw 32-byte digest, base64-encoded."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def upload_once(s3: S3Client, bucket: str, artifact: Artifact, config: TransferConfig = TRANSFER) -> bool:
    """Upload the artifact unless its key already holds the same content; True when it uploaded.

    Below the multipart threshold one PutObject carries the precomputed ChecksumSHA256, so S3 stores
    exactly the bytes that were hashed. Above it each part carries its own SHA-256 (S3 checks every
    part); the object's checksum is then a checksum of the parts' checksums ("-N" suffix), because S3
    offers no full-object SHA-256 for multipart uploads: the metadata sha256 is what instances check.
    """
    found = _head(s3, bucket, artifact)
    if found is not None and _same_content(found, artifact):
        return False
    extra: dict[str, Any] = {
        "Metadata": {"sha256": artifact.sha256},
        "ContentType": CONTENT_TYPES[artifact.archive_format],
    }
    if artifact.size < config.multipart_threshold:
        extra["ChecksumSHA256"] = sha256_base64(artifact.sha256)
    else:
        # never ChecksumSHA256 here: s3transfer would turn it into a FULL_OBJECT SHA256 multipart
        # upload, a checksum type S3 supports only for the CRC algorithms
        extra["ChecksumAlgorithm"] = "SHA256"
    try:
        with TransferManager(s3, config) as manager:
            manager.upload(str(artifact.path), bucket, artifact.key, extra_args=extra).result()
    except ClientError as error:
        raise _upload_refused(error, bucket, artifact) from None
    return True


def already_uploaded(s3: S3Client, bucket: str, artifact: Artifact) -> bool:
    """Whether the artifact's key already holds this content (what a dry run reports)."""
    found = _head(s3, bucket, artifact)
    return found is not None and _same_content(found, artifact)


def _head(s3: S3Client, bucket: str, artifact: Artifact) -> dict[str, Any] | None:
    """HeadObject of the artifact's key (with its checksum), or None when there is no such object."""
    try:
        return dict(s3.head_object(Bucket=bucket, Key=artifact.key, ChecksumMode="ENABLED"))
    except ClientError as error:
        code = error_code(error)
        if code in ("404", "NoSuchKey", "NotFound"):  # also a missing bucket: PutObject says which
            return None
        if is_access_denied(error):
            raise NothingSent(
                "ARTIFACT_BUCKET",
                f"The deploy role may not read s3://{bucket}/{artifact.key} (HeadObject: {code} "
                f"{error_message(error)}), so the pipe cannot tell whether this build is already uploaded",
                f"allow s3:GetObject on arn:aws:s3:::{bucket}/{artifact.prefix}* and s3:ListBucket on "
                f"arn:aws:s3:::{bucket} (without s3:ListBucket, S3 answers 403 instead of 404 for an "
                "artifact that is not uploaded yet)",
            ) from None
        raise NothingSent(
            "ARTIFACT_BUCKET", f"S3 refused HeadObject on s3://{bucket}/{artifact.key} ({code}: {error_message(error)})"
        ) from None


def _same_content(found: dict[str, Any], artifact: Artifact) -> bool:
    """The object holds the artifact: same size and metadata sha256 and, where S3 kept a full-object
    SHA-256 (a single PutObject), that one too. A composite checksum covers parts, not the object."""
    if found.get("ContentLength") != artifact.size:
        return False
    if (found.get("Metadata") or {}).get("sha256") != artifact.sha256:
        return False
    checksum = found.get("ChecksumSHA256")
    if checksum and found.get("ChecksumType") == "FULL_OBJECT":
        return bool(checksum == sha256_base64(artifact.sha256))
    return True


def _upload_refused(error: ClientError, bucket: str, artifact: Artifact) -> NothingSent:
    code, message = error_code(error), error_message(error)
    where = f"s3://{bucket}/{artifact.key}"
    if code == "NoSuchBucket":
        return NothingSent(
            "ARTIFACT_BUCKET",
            f"The bucket {bucket} does not exist",
            "create it (private: Block Public Access on) or correct ARTIFACT_BUCKET",
        )
    if code == "BadDigest":
        return NothingSent(
            "ARTIFACT",
            f"S3 received bytes whose SHA-256 is not the one computed for {artifact.path.name}: the file "
            "changed after it was read, or was damaged on the way",
            "make sure nothing writes the artifact while the pipe runs, and run the step again",
        )
    if "kms" in f"{code} {message}".lower():
        return NothingSent(
            "ARTIFACT_BUCKET",
            f"S3 could not encrypt {where} with the bucket's KMS key for the deploy role ({code}: {message})",
            "allow kms:GenerateDataKey and kms:Decrypt on that key to the deploy role (multipart "
            "uploads need both), and kms:Decrypt to the instance role",
        )
    if is_access_denied(error):
        return NothingSent(
            "ARTIFACT_BUCKET",
            f"The deploy role may not upload {where} ({code}: {message})",
            f"allow s3:PutObject on arn:aws:s3:::{bucket}/{artifact.prefix}*",
        )
    return NothingSent("ARTIFACT_BUCKET", f"S3 refused the upload of {where} ({code}: {message})")
