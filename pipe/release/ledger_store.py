"""The release ledger in Parameter Store: every deploy overwrites the parameter with its entry (type
String), so the parameter's version history is the audit trail (``aws ssm get-parameter-history``),
and the pipe reads from it what is live, what was live before, and a release by id.

Parameter Store keeps the 100 newest versions (it deletes the oldest when a new one is written); a
question that goes further back reads the archive in the release bucket (``ledger_archive``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from pipe.aws.errors import error_code, error_message, is_access_denied
from pipe.errors import PipeError
from pipe.limits import PARAMETER_HISTORY_PAGE, PARAMETER_VERSIONS_KEPT
from pipe.release.ledger import Action, EntryStatus, LedgerEntry
from pipe.release.ledger_archive import Archive, Recorded, Version, parse

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

# Not /ssm-deploy/...: Parameter Store refuses a name whose first segment starts with "aws" or "ssm",
# case-insensitive, with or without the leading slash (User Guide, "parameter name requirements":
# "/aws/testparam1" fails), so the tool's own name cannot lead the path.
LEDGER_DESCRIPTION = "ssm-deploy release ledger: one version per deploy (get-parameter-history)"


class LedgerError(PipeError):
    """Parameter Store refused a ledger read or write; the message names the parameter and the fix."""

    def __init__(self, name: str, problem: str, fix: str = "") -> None:
        super().__init__(f"Release ledger {name}: {problem}." + (f" Fix: {fix}." if fix else ""))


# --- Parameter Store -----------------------------------------------------------------------------------


def record(ssm: SSMClient, name: str, value: str) -> int:
    """Write ``value`` (an entry's JSON) as the parameter's new version (String, overwrite); returns
    that version."""
    try:
        response = ssm.put_parameter(
            Name=name, Value=value, Type="String", Overwrite=True, Description=LEDGER_DESCRIPTION
        )
    except ClientError as error:
        raise _refused(error, name, "ssm:PutParameter") from None
    return int(response["Version"])


def read_versions(ssm: SSMClient, name: str) -> tuple[Version, ...]:
    """Every version Parameter Store still keeps (the last 100) as it holds them, oldest first; none
    when the parameter does not exist yet."""
    found: list[Version] = []
    try:
        pages = ssm.get_paginator("get_parameter_history").paginate(
            Name=name, PaginationConfig={"PageSize": PARAMETER_HISTORY_PAGE}
        )
        for page in pages:
            for version in page.get("Parameters", []):
                number = version.get("Version")
                if isinstance(number, int):
                    value, user = version.get("Value", ""), version.get("LastModifiedUser", "")
                    labels = tuple(str(label) for label in version.get("Labels", []) or [])
                    found.append(Version(number, str(value), str(user), labels))
    except ClientError as error:
        if error_code(error) == "ParameterNotFound":
            return ()
        raise _refused(error, name, "ssm:GetParameterHistory") from None
    # AWS documents no order for the history: sort, so that "newest" never depends on it
    return tuple(sorted(found, key=lambda item: item.number))


@dataclass
class History:
    """The ledger's versions, newest first: Parameter Store's, then, only when a question goes
    further back than they do, the archive's. A version that is no entry is skipped with a warning."""

    name: str
    versions: tuple[Version, ...]  # Parameter Store's, oldest first, as they are
    archive: Archive | None = None
    _recorded: list[Recorded] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._recorded = parse(self.versions, self.name)

    @property
    def forgotten(self) -> bool:
        """Parameter Store deleted older versions (the oldest it keeps is not version 1)."""
        return bool(self.versions) and self.versions[0].number > 1

    def newest_first(self) -> Iterator[Recorded]:
        yield from reversed(self._recorded)
        if self.forgotten and self.archive is not None:
            yield from self.archive.recorded_before(self.versions[0].number)

    def live(self) -> Recorded | None:
        return live_in(self.newest_first())

    def previous(self) -> Previous:
        return previous_in(self.newest_first())

    def release(self, wanted: str) -> Recorded | None:
        return release_in(self.newest_first(), wanted)


def check_room(history: History) -> None:
    """LedgerError when Parameter Store would refuse this deploy's version: it keeps
    PARAMETER_VERSIONS_KEPT versions, and when the oldest has a label it refuses a new one instead of
    deleting it (PutParameter, ParameterMaxVersionLimitExceeded). Checked before anything is sent, so a
    deploy never goes live without the ledger recording it."""
    versions = history.versions
    if len(versions) < PARAMETER_VERSIONS_KEPT or not versions[0].labels:
        return
    oldest, labels = versions[0].number, " ".join(versions[0].labels)
    raise LedgerError(
        history.name,
        f"it holds {len(versions)} versions, the most Parameter Store keeps, and the oldest, version {oldest}, has "
        f"the label {labels}: Parameter Store would refuse this deploy's version rather than delete it, so nothing "
        "was sent (the deploy would have gone live without the ledger recording it)",
        f"move the label to a newer version: aws ssm unlabel-parameter-version --name {history.name} "
        f"--parameter-version {oldest} --labels {labels}, then label-parameter-version the version you mean",
    )


def read_history(ssm: SSMClient, name: str, archive: Archive | None = None) -> History:
    return History(name, read_versions(ssm, name), archive)


# --- choosing from the history (newest first) ------------------------------------------------------------


@dataclass(frozen=True)
class Previous:
    """RELEASE: previous: the live version, the one chosen, and the live ones passed over because
    they deployed the live release's content (a redeploy)."""

    live: Recorded | None
    found: Recorded | None
    skipped: tuple[Recorded, ...] = ()
    # the newest version, when it left instances off the live release (stopped, partial): the fleet no
    # longer runs the live one everywhere, so going back means the live release itself (``found``)
    left_off: Recorded | None = None


def live_in(newest_first: Iterable[Recorded]) -> Recorded | None:
    """The newest version that every targeted instance ran at its end: the release the fleet runs."""
    return next((item for item in newest_first if item.entry.live), None)


def previous_in(newest_first: Iterable[Recorded]) -> Previous:
    """The newest version live before the live one whose artifact differs from the live one's; the live
    one itself when the newest version left instances on another release (a deploy stopped or partial
    after some switched): what served before that deploy is the live release, not the one before it;
    unless that version was going back to the very release chosen (a rollback stopped half-way), which
    going back again finishes rather than bringing its instances forward to the live release."""
    versions = iter(newest_first)
    newer = []  # the versions after the live one, newest first
    live = None
    for item in versions:
        if item.entry.live:
            live = item
            break
        newer.append(item)
    if live is None:
        return Previous(None, None)
    left_off = newer[0] if newer and off_release(newer[0].entry, live.entry.release.id) else None
    skipped = []
    found = None
    for item in versions:
        if not item.entry.live:
            continue
        if same_content(item.entry, live.entry):
            skipped.append(item)
            continue
        found = item
        break
    if left_off is not None and not _going_back_to(left_off.entry, found):
        return Previous(live, live, left_off=left_off)
    return Previous(live, found, tuple(skipped))


def back_to_after(newest_first: Iterable[Recorded], sha256: str) -> Recorded | None:
    """The version RELEASE: previous chooses once a deploy of the artifact ``sha256`` succeeds: the newest live
    one with another artifact (the live release, unless the deploy only ships the live one's bytes again)."""
    return next((item for item in newest_first if item.entry.live and item.entry.release.sha256 != sha256), None)


def _going_back_to(entry: LedgerEntry, found: Recorded | None) -> bool:
    """Whether ``entry`` is a rollback to the content of ``found``."""
    return entry.action == Action.ROLLBACK and found is not None and same_content(entry, found.entry)


def off_release(entry: LedgerEntry, release: str) -> bool:
    """Whether ``entry`` is a deploy that ended stopped or partial with an instance on anything but
    ``release`` (its own release, another one, unknown)."""
    if entry.status not in (EntryStatus.STOPPED, EntryStatus.PARTIAL):
        return False
    return any(name != release and count for name, count in entry.fleet.counts.items())


def release_in(newest_first: Iterable[Recorded], wanted: str) -> Recorded | None:
    """The newest version that deployed release ``wanted``, whatever its outcome: its artifact key
    and SHA-256 are the release's, for instances that no longer have it."""
    return next((item for item in newest_first if item.entry.release.id == wanted), None)


def same_content(one: LedgerEntry, other: LedgerEntry) -> bool:
    """The same artifact (SHA-256), or the same release id where a digest is missing."""
    if one.release.sha256 and other.release.sha256:
        return one.release.sha256 == other.release.sha256
    return one.release.id == other.release.id


def _refused(error: ClientError, name: str, action: str) -> LedgerError:
    code, message = error_code(error), error_message(error)
    if is_access_denied(error):
        return LedgerError(
            name,
            f"the deploy role may not use {action} ({code}: {message})",
            f"allow {action} on arn:aws:ssm:*:*:parameter{name}",
        )
    if code == "ParameterMaxVersionLimitExceeded":
        return LedgerError(
            name,
            "its oldest version has a label, so Parameter Store will not delete it to keep 100 versions",
            f"move the label to a newer version (aws ssm unlabel-parameter-version --name {name} ...)",
        )
    return LedgerError(name, f"Parameter Store refused {action.split(':')[1]} ({code}: {message})")
