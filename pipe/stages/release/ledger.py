"""The release ledger: one Parameter Store parameter per service and environment, one version per deploy.

Every deploy, succeeded or not, overwrites the parameter with a JSON entry (type String), so
Parameter Store's version history is the audit trail (``aws ssm get-parameter-history --name ...``)
and the pipe reads "what is live" and "what was live before" from it. Parameter Store keeps the 100
newest versions and deletes the oldest when a new one is written, so the ledger remembers the last
100 deploys. A standard-tier value holds at most 4 KB: an entry keeps every count whatever the fleet
size, and cuts the instance id lists (failures first, then successes) to stay under it.

Nothing secret goes in: an entry holds ids, digests, the commit, the build and who triggered it.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from pipe.aws.errors import error_code, error_message, is_access_denied
from pipe.config.release import RELEASE_ID, check_ledger_name, ledger_path
from pipe.errors import PipeError
from pipe.limits import PARAMETER_HISTORY_PAGE, PARAMETER_VALUE_STANDARD_MAX, S3_KEY_MAX_BYTES

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

log = logging.getLogger("ssm-deploy")

# Not /ssm-deploy/...: Parameter Store refuses a name whose first segment starts with "aws" or "ssm",
# case-insensitive, with or without the leading slash (User Guide, "parameter name requirements":
# "/aws/testparam1" fails), so the tool's own name cannot lead the path.
LEDGER_DESCRIPTION = "ssm-deploy release ledger: one version per deploy (get-parameter-history)"

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
ARTIFACT_KEY = re.compile(r"[A-Za-z0-9!_.*'()/-]+")  # what artifact.check_artifact_prefix allows, and the digest

SCHEMA = 1
# Strictly below the standard tier's 4096: the entry is ASCII JSON, one byte per character.
ENTRY_BUDGET = PARAMETER_VALUE_STANDARD_MAX - 1
# Caps on the free-text fields, so that the fields alone always fit with room for instance ids:
# at most 1,024 (key) + 3 x 64 (digest, ids) + these + 16 outcome groups, under 3 KB.
FIELD_CAPS = {"commit": 64, "build": 20, "build_url": 300, "triggered_by": 120, "time": 40}
OUTCOME_NAME_MAX = 40
OUTCOME_GROUPS_MAX = 16
OTHER = "other"


class EntryStatus(StrEnum):
    """How a deploy ended, fleet-wide."""

    SUCCEEDED = "succeeded"  # every instance runs the release
    FAILED = "failed"
    ROLLED_BACK = "rolled back"  # some instance switched, failed and went back to the previous release


class LedgerError(PipeError):
    """Parameter Store refused a ledger read or write; the message names the parameter and the fix."""

    def __init__(self, name: str, problem: str, fix: str = "") -> None:
        super().__init__(f"Release ledger {name}: {problem}." + (f" Fix: {fix}." if fix else ""))


# --- names -------------------------------------------------------------------------------------------


def ledger_name(service: str, environment: str) -> str:
    """``/release-ledger/<service>/<environment>/release``; ValueError for a name AWS would refuse."""
    problem = check_ledger_name(service, environment)
    if problem:
        raise ValueError(problem)
    return ledger_path(service, environment)


def utc_timestamp(moment: datetime.datetime | None = None) -> str:
    """UTC ISO 8601 to the second, e.g. 2026-12-01T21:50:33Z."""
    moment = moment or datetime.datetime.now(datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- entries -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcomes:
    """How many instances ended in each outcome, and which. ``ids`` may hold fewer ids than
    ``counts`` says: an entry read back from the ledger keeps the lists it had room for."""

    counts: Mapping[str, int] = field(default_factory=dict)
    ids: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, by_instance: Mapping[str, str]) -> Outcomes:
        """From {instance id: outcome}, e.g. {"i-1": "succeeded", "i-2": "rolled back"}. Outcome
        names are cut to 40 characters; past 16 distinct outcomes the smallest merge into "other"."""
        grouped: dict[str, list[str]] = {}
        for instance_id, outcome in sorted(by_instance.items()):
            grouped.setdefault(outcome.strip()[:OUTCOME_NAME_MAX] or OTHER, []).append(instance_id)
        if len(grouped) > OUTCOME_GROUPS_MAX:
            by_size = sorted(grouped, key=lambda name: (-len(grouped[name]), name))
            merged = [i for name in by_size[OUTCOME_GROUPS_MAX - 1 :] for i in grouped.pop(name)]
            grouped[OTHER] = sorted(grouped.get(OTHER, []) + merged)
        return cls(
            {name: len(ids) for name, ids in grouped.items()}, {name: tuple(ids) for name, ids in grouped.items()}
        )

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def complete(self) -> bool:
        """Every instance is named (False once the lists were cut to fit the ledger)."""
        return all(len(self.ids.get(name, ())) == count for name, count in self.counts.items())


@dataclass(frozen=True)
class LedgerEntry:
    """One deploy, as the ledger records it. ``time`` is UTC ISO 8601 (``utc_timestamp``)."""

    release_id: str
    commit: str
    build_number: str
    build_url: str
    triggered_by: str
    artifact_key: str
    sha256: str
    status: str  # an EntryStatus value
    instances: Outcomes
    time: str
    previous_release: str = ""  # what was live before this deploy ("" for the first)

    def __post_init__(self) -> None:
        problems = _entry_problems(self)
        if problems:
            raise ValueError("; ".join(problems))

    def to_json(self) -> str:
        """The parameter value: ASCII JSON under 4,096 bytes whatever the fleet size. Counts are
        always complete; instance ids are kept while they fit, those of failed outcomes first."""
        kept: dict[str, list[str]] = {name: [] for name in self.instances.counts}
        used = len(self._json(kept))
        for name in _failures_first(self.instances.counts):
            for instance_id in self.instances.ids.get(name, ()):
                cost = len(json.dumps(instance_id)) + (1 if kept[name] else 0)  # the id and its comma
                if used + cost > ENTRY_BUDGET:
                    return self._fitted(kept)
                kept[name].append(instance_id)
                used += cost
        return self._fitted(kept)

    def _fitted(self, kept: dict[str, list[str]]) -> str:
        text = self._json(kept)
        while len(text) > ENTRY_BUDGET:  # a safety net: the size accounting above is exact
            max(kept.values(), key=len).pop()
            text = self._json(kept)
        return text

    def _json(self, ids: Mapping[str, Sequence[str]]) -> str:
        document = {
            "v": SCHEMA,
            "release": self.release_id,
            "status": self.status,
            "previous": self.previous_release,
            "commit": _fit(self.commit, FIELD_CAPS["commit"]),
            "build": _fit(self.build_number, FIELD_CAPS["build"]),
            "build_url": _fit(self.build_url, FIELD_CAPS["build_url"]),
            "triggered_by": _fit(self.triggered_by, FIELD_CAPS["triggered_by"]),
            "artifact": self.artifact_key,
            "sha256": self.sha256,
            "time": _fit(self.time, FIELD_CAPS["time"]),
            "instances": {
                name: {"count": count, "ids": list(ids.get(name, ()))} for name, count in self.instances.counts.items()
            },
        }
        return json.dumps(document, ensure_ascii=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> LedgerEntry:
        """An entry from a parameter value; ValueError when the value is not one."""
        try:
            document = json.loads(text)
            if not isinstance(document, dict) or document.get("v") != SCHEMA:
                raise ValueError("not a ledger entry of schema 1")
            groups = document["instances"]
            outcomes = Outcomes(
                {str(name): int(group["count"]) for name, group in groups.items()},
                {str(name): tuple(str(i) for i in group["ids"]) for name, group in groups.items()},
            )
            return cls(
                release_id=_text(document, "release"),
                commit=_text(document, "commit"),
                build_number=_text(document, "build"),
                build_url=_text(document, "build_url"),
                triggered_by=_text(document, "triggered_by"),
                artifact_key=_text(document, "artifact"),
                sha256=_text(document, "sha256"),
                status=_text(document, "status"),
                instances=outcomes,
                time=_text(document, "time"),
                previous_release=_text(document, "previous"),
            )
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as error:
            raise ValueError(f"not a ledger entry: {error}") from None


def _entry_problems(entry: LedgerEntry) -> list[str]:
    """Why ``entry`` cannot be recorded: the identifying fields are never cut, so they must be valid."""
    problems = []
    if not RELEASE_ID.fullmatch(entry.release_id):
        problems.append(f"release_id {entry.release_id!r} is not <6+ digits>-<commit>")
    if entry.previous_release and not RELEASE_ID.fullmatch(entry.previous_release):
        problems.append(f"previous_release {entry.previous_release!r} is not a release id")
    if entry.sha256 and not SHA256_HEX.fullmatch(entry.sha256):
        problems.append(f"sha256 {entry.sha256!r} is not 64 lower-case hex digits")
    key = entry.artifact_key
    if key and (not ARTIFACT_KEY.fullmatch(key) or len(key) > S3_KEY_MAX_BYTES):
        problems.append(f"artifact_key {key!r} is not an artifact key")
    if entry.status not in set(EntryStatus):
        problems.append(f"status {entry.status!r} is not one of {', '.join(EntryStatus)}")
    names = entry.instances.counts
    if len(names) > OUTCOME_GROUPS_MAX or any(len(name) > OUTCOME_NAME_MAX for name in names):
        problems.append(f"at most {OUTCOME_GROUPS_MAX} outcomes of at most {OUTCOME_NAME_MAX} characters (Outcomes.of)")
    return problems


def _text(document: Mapping[str, Any], key: str) -> str:
    value = document[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    return value


def _fit(text: str, cap: int) -> str:
    """``text`` cut (with an ellipsis) so that its JSON form, quotes aside, is at most ``cap`` long."""
    if len(json.dumps(text)) - 2 <= cap:
        return text
    text = text[:cap]
    while text and len(json.dumps(text + "…")) - 2 > cap:
        text = text[:-1]
    return text + "…"


def _failures_first(counts: Iterable[str]) -> list[str]:
    return sorted(counts, key=lambda name: (name == EntryStatus.SUCCEEDED, name))


# --- Parameter Store -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """One version of the ledger parameter: the entry, and who wrote it (LastModifiedUser)."""

    version: int
    entry: LedgerEntry
    written_by: str = ""


def record(ssm: SSMClient, name: str, entry: LedgerEntry) -> int:
    """Write ``entry`` as the parameter's new version (String, overwrite); returns that version."""
    try:
        response = ssm.put_parameter(
            Name=name, Value=entry.to_json(), Type="String", Overwrite=True, Description=LEDGER_DESCRIPTION
        )
    except ClientError as error:
        raise _refused(error, name, "ssm:PutParameter") from None
    return int(response["Version"])


def read_history(ssm: SSMClient, name: str) -> tuple[Recorded, ...]:
    """Every version Parameter Store still keeps (the last 100), oldest first; none when the
    parameter does not exist yet. A version that is not a ledger entry (written by hand) is skipped."""
    found: list[Recorded] = []
    try:
        pages = ssm.get_paginator("get_parameter_history").paginate(
            Name=name, PaginationConfig={"PageSize": PARAMETER_HISTORY_PAGE}
        )
        for page in pages:
            for version in page.get("Parameters", []):
                try:
                    entry = LedgerEntry.from_json(str(version.get("Value", "")))
                except ValueError as error:
                    log.warning(f"Release ledger {name}: version {version.get('Version')} skipped ({error})")
                    continue
                found.append(Recorded(int(version.get("Version", 0)), entry, str(version.get("LastModifiedUser", ""))))
    except ClientError as error:
        if error_code(error) == "ParameterNotFound":
            return ()
        raise _refused(error, name, "ssm:GetParameterHistory") from None
    # AWS documents no order for the history: sort, so that "newest" never depends on it
    return tuple(sorted(found, key=lambda item: item.version))


def live_in(history: Sequence[Recorded]) -> Recorded | None:
    """The newest version whose deploy succeeded: the release the fleet runs."""
    return next((item for item in reversed(history) if item.entry.status == EntryStatus.SUCCEEDED), None)


def before_live_in(history: Sequence[Recorded]) -> Recorded | None:
    """The newest succeeded version older than the live one with another release id (RELEASE: previous)."""
    live = live_in(history)
    if live is None:
        return None
    older = (item for item in reversed(history) if item.version < live.version)
    return next(
        (
            item
            for item in older
            if item.entry.status == EntryStatus.SUCCEEDED and item.entry.release_id != live.entry.release_id
        ),
        None,
    )


def release_in(history: Sequence[Recorded], wanted: str) -> Recorded | None:
    """The newest version that deployed release ``wanted``, whatever its outcome: its artifact key
    and SHA-256 are the release's, for instances that no longer have it."""
    return next((item for item in reversed(history) if item.entry.release_id == wanted), None)


def live_release(ssm: SSMClient, name: str) -> LedgerEntry | None:
    found = live_in(read_history(ssm, name))
    return found.entry if found else None


def release_before_live(ssm: SSMClient, name: str) -> LedgerEntry | None:
    found = before_live_in(read_history(ssm, name))
    return found.entry if found else None


def find_release(ssm: SSMClient, name: str, wanted: str) -> LedgerEntry | None:
    found = release_in(read_history(ssm, name), wanted)
    return found.entry if found else None


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
