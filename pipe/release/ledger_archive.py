"""The ledger's archive: every version of the ledger parameter copied, as it is, to the release bucket.

Parameter Store keeps the 100 newest versions of a parameter and deletes the oldest when a new one
is written, so the parameter alone forgets the 101st deploy back. Each version is copied to
``s3://<ARTIFACT_BUCKET>/<ARTIFACT_PREFIX>ledger/<service>/<environment>/<version, 10 digits>.json``
right after it is written, and every deploy copies the versions the parameter still holds that the
archive lacks (an older pipe wrote them, a copy failed, someone wrote one by hand). An object is
written with ``If-None-Match: *``: S3 never overwrites one (S3 User Guide, "How to prevent object
overwrites with conditional writes"), so the archive only grows.

The archive is read only when a question (what is live, the release before it, a release by id)
goes further back than the parameter's versions, newest first, one object at a time, and never
makes a deploy fail: a problem is a warning naming the object and the fix.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from pipe.aws.errors import error_code, error_message
from pipe.release.ledger import LedgerEntry

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("ssm-deploy")

VERSION_DIGITS = 10  # Parameter Store versions are counters; ten digits keep the keys in version order
OBJECT_MAX_BYTES = 64 * 1024  # a ledger value is at most 4 KB: anything larger is not one of its copies
WRITTEN_BY = "written-by"  # S3 user metadata: the version's LastModifiedUser (an ARN)
ALREADY_THERE = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})


@dataclass(frozen=True)
class Version:
    """One version of the ledger parameter, as Parameter Store holds it (or the archive kept it)."""

    number: int
    value: str
    written_by: str = ""
    labels: tuple[str, ...] = ()  # Parameter Store's labels of the version (the archive keeps none)


@dataclass(frozen=True)
class Recorded:
    """One version that is a ledger entry: the entry, and who wrote it (LastModifiedUser)."""

    version: int
    entry: LedgerEntry
    written_by: str = ""


def parse(versions: Sequence[Version], where: str) -> list[Recorded]:
    """The versions that are ledger entries; each other one is skipped with a warning naming it."""
    found = []
    for version in versions:
        try:
            entry = LedgerEntry.from_json(version.value)
        except ValueError as error:
            by = f", written by {version.written_by}" if version.written_by else ""
            log.warning(
                f"Release ledger {where}: version {version.number} skipped ({error}{by}): it is not an entry "
                "the pipe can read, and the ledger is read as if it were not there"
            )
            continue
        found.append(Recorded(version.number, entry, version.written_by))
    return found


@dataclass
class Archive:
    """The ledger's copies in ``s3://bucket/folder``."""

    s3: S3Client
    bucket: str
    folder: str  # ledger_archive_folder(...): ends with "/"
    _read: dict[int, Recorded | None] = field(default_factory=dict, repr=False)
    _listed: list[int] | None = field(default=None, repr=False)

    def key(self, version: int) -> str:
        return f"{self.folder}{version:0{VERSION_DIGITS}d}.json"

    def url(self, version: int | None = None) -> str:
        return f"s3://{self.bucket}/{self.key(version) if version is not None else self.folder}"

    # --- writing ---------------------------------------------------------------------------------------

    def keep(self, versions: Sequence[Version], newest: int | None = None) -> int:
        """Copy each of ``versions`` the archive lacks; returns how many were copied. ``newest``:
        the version this deploy wrote, whose copy must not find an object already there."""
        if not versions:
            return 0
        oldest = min(version.number for version in versions)
        try:
            there = set(self._numbers(start_after=self.key(oldest - 1)))
        except (ClientError, BotoCoreError) as error:
            log.warning(
                f"The release ledger's archive {self.url()} could not be listed ({_said(error)}): no version was "
                f"copied there. Fix: allow s3:ListBucket on arn:aws:s3:::{self.bucket}"
            )
            return 0
        if newest is not None and newest in there:
            log.warning(
                f"The release ledger's archive already holds {self.url(newest)}, written for another parameter of "
                f"the same name (deleted and created again?): version {newest} was not copied. Fix: move "
                f"{self.url()} aside (it keeps the old parameter's history) and deploy again"
            )
        copied = 0
        for version in sorted(versions, key=lambda item: item.number):
            if version.number in there:
                continue
            try:
                self._put(version)
            except (ClientError, BotoCoreError) as error:
                if _already_there(error):  # another deploy copied it meanwhile
                    continue
                log.warning(
                    f"The release ledger's version {version.number} could not be copied to {self.url(version.number)} "
                    f"({_said(error)}); Parameter Store keeps it until 100 newer versions are written, and the "
                    f"next deploy copies it. Fix: allow s3:PutObject on arn:aws:s3:::{self.bucket}/{self.folder}*"
                )
                return copied
            copied += 1
        return copied

    def _put(self, version: Version) -> None:
        metadata = {WRITTEN_BY: version.written_by} if version.written_by.isascii() and version.written_by else {}
        self.s3.put_object(
            Bucket=self.bucket,
            Key=self.key(version.number),
            Body=version.value.encode("utf-8", "replace"),
            ContentType="application/json",
            IfNoneMatch="*",
            Metadata=metadata,
        )

    # --- reading ---------------------------------------------------------------------------------------

    def recorded_before(self, version: int) -> Iterator[Recorded]:
        """The archive's entries older than ``version``, newest first, each read when reached."""
        try:
            if self._listed is None:
                self._listed = sorted(self._numbers(), reverse=True)
        except (ClientError, BotoCoreError) as error:
            log.warning(
                f"The release ledger's archive {self.url()} could not be listed ({_said(error)}): the ledger is "
                f"read from Parameter Store's 100 newest versions only. Fix: allow s3:ListBucket on "
                f"arn:aws:s3:::{self.bucket}"
            )
            return
        for number in self._listed:
            if number >= version:
                continue
            if number not in self._read:
                self._read[number] = self._get(number)
            found = self._read[number]
            if found is not None:
                yield found

    def _get(self, number: int) -> Recorded | None:
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=self.key(number))
            data = response["Body"].read(OBJECT_MAX_BYTES + 1)
        except (ClientError, BotoCoreError) as error:
            log.warning(
                f"{self.url(number)} could not be read ({_said(error)}): skipped. Fix: allow s3:GetObject on "
                f"arn:aws:s3:::{self.bucket}/{self.folder}*"
            )
            return None
        if len(data) > OBJECT_MAX_BYTES:
            log.warning(f"{self.url(number)} skipped: over {OBJECT_MAX_BYTES:,} bytes, it is no copy of a ledger value")
            return None
        written_by = str(response.get("Metadata", {}).get(WRITTEN_BY, ""))
        found = parse([Version(number, data.decode("utf-8", "replace"), written_by)], self.url(number))
        return found[0] if found else None

    def _numbers(self, start_after: str = "") -> Iterator[int]:
        paginator = self.s3.get_paginator("list_objects_v2")
        if start_after:
            pages = paginator.paginate(Bucket=self.bucket, Prefix=self.folder, StartAfter=start_after)
        else:
            pages = paginator.paginate(Bucket=self.bucket, Prefix=self.folder)
        pattern = re.compile(re.escape(self.folder) + rf"([0-9]{{{VERSION_DIGITS}}})\.json")
        for page in pages:
            for item in page.get("Contents", []):
                matched = pattern.fullmatch(item.get("Key", ""))
                if matched:
                    yield int(matched.group(1))


def _already_there(error: ClientError | BotoCoreError) -> bool:
    return isinstance(error, ClientError) and error_code(error) in ALREADY_THERE


def _said(error: ClientError | BotoCoreError) -> str:
    return f"{error_code(error)}: {error_message(error)}" if isinstance(error, ClientError) else str(error)
