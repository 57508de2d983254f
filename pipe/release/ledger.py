"""The release ledger's entries: one JSON document per deploy, the value of one version of the
Parameter Store parameter ``/release-ledger/<service>/<environment>/release``.

An entry names a release live (``succeeded``) only when every targeted instance runs it at the end
of the deploy; otherwise its status says how the deploy ended and ``fleet`` which release each
instance runs. It holds the release's own commit, build, artifact and SHA-256 (a rollback repeats
those of the release it goes back to), the action (``deploy``, ``rollback``, ``redeploy``) and,
apart, the run that asked for it.

A standard-tier value holds at most 4 KB (the advanced tier's 8 KB is charged per parameter and
month, and a parameter never goes back to standard): an entry keeps every count whatever the fleet
size and cuts the instance id lists to fit, those not on the release and those that failed first.
The caps below keep an entry whose every field and group name is as long as allowed, without any
instance id, under 3,900 bytes (test_unit_release_ledger.py builds it).

Reading takes any value: what is not an entry of a known schema raises ValueError (never another
exception), and the reader skips that version. Nothing secret goes in: ids, digests, commits,
builds and who triggered them.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pipe.config.release import RELEASE_ID, RELEASE_ID_MAX, check_ledger_name, ledger_path, release_id
from pipe.limits import PARAMETER_VALUE_STANDARD_MAX, S3_KEY_MAX_BYTES

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
ARTIFACT_KEY = re.compile(r"[A-Za-z0-9!_.*'()/-]+")  # what artifact.check_artifact_prefix allows, and the digest

SCHEMA = 2  # 1: before the action, the run and the fleet were recorded (read, never written)
# Strictly below the standard tier's 4096: the entry is ASCII JSON, one byte per character.
ENTRY_BUDGET = PARAMETER_VALUE_STANDARD_MAX - 1
# Caps on the free-text fields, so that the fields alone always fit with room for instance ids
# (test_unit_release_ledger.py builds the largest entry these allow).
FIELD_CAPS = {"commit": 64, "build": 20, "build_url": 300, "triggered_by": 120, "time": 40}
OUTCOME_NAME_MAX = 40
OUTCOME_GROUPS_MAX = 16
FLEET_GROUPS_MAX = 8  # releases named in ``fleet``: the new one, the one before, unknown, a few strays
OTHER = "other"
PRINTABLE = re.compile(r"[ -~]")
REASON_MAX = 120  # characters of a parse error kept in the reader's warning


class Action(StrEnum):
    """What a deploy asked for."""

    DEPLOY = "deploy"  # a new build (ARTIFACT) whose content the live release does not have
    ROLLBACK = "rollback"  # RELEASE: a release from the ledger with other content than the live one
    REDEPLOY = "redeploy"  # the live release's content again (its SHA-256 by ARTIFACT, or by RELEASE)


class EntryStatus(StrEnum):
    """How a deploy ended, fleet-wide."""

    SUCCEEDED = "succeeded"  # live: every targeted instance runs the release
    ROLLED_BACK = "rolled back"  # every instance runs the release live before, after some had switched
    PARTIAL = "partial"  # the instances run different releases (or some cannot tell): see ``fleet``
    STOPPED = "stopped"  # the pipeline was stopped (or lost contact) before the rollout ended
    FAILED = "failed"  # the release is not live and nothing was switched back


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
class Groups:
    """Instances grouped by a name (an outcome, or the release they run): how many in each, and
    which. ``ids`` may hold fewer ids than ``counts`` says: an entry read back from the ledger keeps
    the lists it had room for."""

    counts: Mapping[str, int] = field(default_factory=dict)
    ids: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def of(
        cls, by_instance: Mapping[str, str], limit: int = OUTCOME_GROUPS_MAX, name_max: int = OUTCOME_NAME_MAX
    ) -> Groups:
        """From {instance id: name}, e.g. {"i-1": "succeeded", "i-2": "rolled back"}. Names are
        printable ASCII cut to ``name_max``; past ``limit`` groups the smallest merge into "other"."""
        grouped: dict[str, list[str]] = {}
        for instance_id, name in sorted(by_instance.items()):
            grouped.setdefault(_group_name(name, name_max), []).append(instance_id)
        if len(grouped) > limit:
            by_size = sorted(grouped, key=lambda name: (-len(grouped[name]), name))
            merged = [i for name in by_size[limit - 1 :] for i in grouped.pop(name)]
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

    def describe(self, limit: int = 5) -> str:
        """``000042-0123456 on i-1, i-2; 000041-abcdef0 on i-3``: for the log."""
        parts = []
        for name, count in self.counts.items():
            shown = list(self.ids.get(name, ()))[:limit]
            more = f" and {count - len(shown)} more" if count > len(shown) else ""
            parts.append(f"{name} on {', '.join(shown)}{more}" if shown else f"{name} on {count} instance(s)")
        return "; ".join(parts)


@dataclass(frozen=True)
class ReleaseInfo:
    """A release as its build made it; every version that deploys it again repeats these."""

    id: str
    commit: str
    build: str
    artifact_key: str
    sha256: str


@dataclass(frozen=True)
class RunInfo:
    """The pipeline run that asked for a deploy."""

    build: str
    commit: str
    build_url: str = ""
    triggered_by: str = ""


@dataclass(frozen=True)
class LedgerEntry:
    """One deploy, as the ledger records it. ``time`` is UTC ISO 8601 (``utc_timestamp``)."""

    release: ReleaseInfo
    run: RunInfo
    action: str  # an Action value
    status: str  # an EntryStatus value
    fleet: Groups  # the release each targeted instance runs at the end (UNKNOWN_RELEASE: cannot tell)
    instances: Groups  # what happened on each instance: succeeded, failed, rolled back, ...
    time: str
    previous_release: str = ""  # what was live before this deploy ("" for the first)

    def __post_init__(self) -> None:
        problems = _entry_problems(self)
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def release_id(self) -> str:
        return self.release.id

    @property
    def live(self) -> bool:
        return self.status == EntryStatus.SUCCEEDED

    def to_json(self) -> str:
        """The parameter value: ASCII JSON under 4,096 bytes whatever the fleet size. Counts are
        always complete; instance ids are kept while they fit: first those not on the release or
        not succeeded."""
        sections = {"fleet": self.fleet, "instances": self.instances}
        kept: dict[str, dict[str, list[str]]] = {
            section: {name: [] for name in groups.counts} for section, groups in sections.items()
        }
        used = len(self._json(kept))
        for section, name in self._fill_order():
            for instance_id in sections[section].ids.get(name, ()):
                cost = len(json.dumps(instance_id)) + (1 if kept[section][name] else 0)  # the id and its comma
                if used + cost > ENTRY_BUDGET:
                    return self._fitted(kept)
                kept[section][name].append(instance_id)
                used += cost
        return self._fitted(kept)

    def _fill_order(self) -> list[tuple[str, str]]:
        """The instances off the release and those that failed, then those on it and those that succeeded."""
        fleet = [("fleet", name) for name in sorted(self.fleet.counts)]
        outcomes = [("instances", name) for name in sorted(self.instances.counts)]
        usual = {("fleet", self.release.id), ("instances", EntryStatus.SUCCEEDED.value)}
        return [item for item in fleet + outcomes if item not in usual] + [
            item for item in fleet + outcomes if item in usual
        ]

    def _fitted(self, kept: dict[str, dict[str, list[str]]]) -> str:
        text = self._json(kept)
        while len(text) > ENTRY_BUDGET:  # a safety net: the size accounting above is exact
            max((ids for section in kept.values() for ids in section.values()), key=len).pop()
            text = self._json(kept)
        return text

    def _json(self, kept: Mapping[str, Mapping[str, Sequence[str]]]) -> str:
        release, run = self.release, self.run
        document = {
            "v": SCHEMA,
            "action": self.action,
            "status": self.status,
            "release": release.id,
            "commit": _fit(release.commit, FIELD_CAPS["commit"]),
            "build": _fit(release.build, FIELD_CAPS["build"]),
            "artifact": release.artifact_key,
            "sha256": release.sha256,
            "previous": self.previous_release,
            "run": {
                "build": _fit(run.build, FIELD_CAPS["build"]),
                "commit": _fit(run.commit, FIELD_CAPS["commit"]),
                "build_url": _fit(run.build_url, FIELD_CAPS["build_url"]),
                "triggered_by": _fit(run.triggered_by, FIELD_CAPS["triggered_by"]),
            },
            "time": _fit(self.time, FIELD_CAPS["time"]),
            "fleet": _groups_json(self.fleet, kept["fleet"]),
            "instances": _groups_json(self.instances, kept["instances"]),
        }
        return json.dumps(document, ensure_ascii=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> LedgerEntry:
        """An entry from a parameter value (schema 1 or 2). Raises ValueError, and nothing else,
        whatever ``text`` holds: the reader skips such a version."""
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as error:  # RecursionError: nested deeper than Python's limit
            raise ValueError(f"not JSON ({_reason(error)})") from None
        try:
            return _parse(document)
        except (LookupError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as error:
            raise ValueError(f"not a ledger entry: {_reason(error)}") from None


def _groups_json(groups: Groups, ids: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    return {name: {"count": count, "ids": list(ids.get(name, ()))} for name, count in groups.counts.items()}


# --- reading ----------------------------------------------------------------------------------------------


def _parse(document: object) -> LedgerEntry:
    if not isinstance(document, dict):
        raise ValueError(f"a JSON {type(document).__name__}, not an object")
    schema = document.get("v")
    if type(schema) is int and schema == SCHEMA:
        return _parse_current(document)
    if type(schema) is int and schema == 1:
        return _parse_first(document)
    raise ValueError("no known schema (v)")


def _parse_current(document: Mapping[str, Any]) -> LedgerEntry:
    run = document["run"]
    if not isinstance(run, dict):
        raise TypeError("run is not an object")
    return LedgerEntry(
        release=ReleaseInfo(
            id=_text(document, "release"),
            commit=_text(document, "commit"),
            build=_text(document, "build"),
            artifact_key=_text(document, "artifact"),
            sha256=_text(document, "sha256"),
        ),
        run=RunInfo(
            build=_text(run, "build"),
            commit=_text(run, "commit"),
            build_url=_text(run, "build_url"),
            triggered_by=_text(run, "triggered_by"),
        ),
        action=_text(document, "action"),
        status=_text(document, "status"),
        fleet=_groups(document["fleet"]),
        instances=_groups(document["instances"]),
        time=_text(document, "time"),
        previous_release=_text(document, "previous"),
    )


def _parse_first(document: Mapping[str, Any]) -> LedgerEntry:
    """Schema 1 recorded the run's commit and build beside the release id, and no action: a run
    whose own build is not the release went back to a release from the ledger."""
    identity, commit, build = _text(document, "release"), _text(document, "commit"), _text(document, "build")
    own_build = release_id(build, commit) == identity
    return LedgerEntry(
        release=ReleaseInfo(
            id=identity,
            commit=commit if own_build else "",
            build=build if own_build else str(int(identity.split("-", 1)[0][:RELEASE_ID_MAX])),
            artifact_key=_text(document, "artifact"),
            sha256=_text(document, "sha256"),
        ),
        run=RunInfo(build, commit, _text(document, "build_url"), _text(document, "triggered_by")),
        action=Action.DEPLOY if own_build else Action.ROLLBACK,
        status=_text(document, "status"),
        fleet=Groups(),
        instances=_groups(document["instances"]),
        time=_text(document, "time"),
        previous_release=_text(document, "previous"),
    )


def _groups(value: object) -> Groups:
    if not isinstance(value, dict):
        raise TypeError("a group list is not an object")
    counts: dict[str, int] = {}
    ids: dict[str, tuple[str, ...]] = {}
    for name, group in value.items():
        if not isinstance(group, dict):
            raise TypeError(f"group {name[:OUTCOME_NAME_MAX]!r} is not an object")
        count, listed = group.get("count"), group.get("ids")
        if type(count) is not int or count < 0:
            raise ValueError(f"group {name[:OUTCOME_NAME_MAX]!r}: count is not a whole number")
        if not isinstance(listed, list) or len(listed) > count or not all(isinstance(i, str) for i in listed):
            raise ValueError(f"group {name[:OUTCOME_NAME_MAX]!r}: ids are not at most count strings")
        counts[name], ids[name] = count, tuple(listed)
    return Groups(counts, ids)


def _text(document: Mapping[str, Any], key: str) -> str:
    value = document[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    return value


def _reason(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}" if not isinstance(error, ValueError | TypeError) else str(error)
    text = "".join(char if PRINTABLE.fullmatch(char) else "?" for char in text)
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 1] + "…"


# --- checks and fitting -----------------------------------------------------------------------------------


def _entry_problems(entry: LedgerEntry) -> list[str]:
    """Why ``entry`` cannot be recorded: the identifying fields are never cut, so they must be valid."""
    problems = []
    release = entry.release
    for what, value in (("release id", release.id), ("previous release", entry.previous_release)):
        if (value or what == "release id") and not _is_release_id(value):
            problems.append(f"{what} {value[:80]!r} is not <6+ digits>-<commit> of at most {RELEASE_ID_MAX}")
    if release.sha256 and not SHA256_HEX.fullmatch(release.sha256):
        problems.append(f"sha256 {release.sha256[:80]!r} is not 64 lower-case hex digits")
    key = release.artifact_key
    if key and (not ARTIFACT_KEY.fullmatch(key) or len(key) > S3_KEY_MAX_BYTES):
        problems.append(f"artifact key {key[:80]!r} is not an artifact key")
    if entry.action not in set(Action):
        problems.append(f"action {entry.action[:80]!r} is not one of {', '.join(Action)}")
    if entry.status not in set(EntryStatus):
        problems.append(f"status {entry.status[:80]!r} is not one of {', '.join(EntryStatus)}")
    names = entry.instances.counts
    if len(names) > OUTCOME_GROUPS_MAX or not all(_is_group_name(name, OUTCOME_NAME_MAX) for name in names):
        problems.append(f"at most {OUTCOME_GROUPS_MAX} outcomes of at most {OUTCOME_NAME_MAX} characters (Groups.of)")
    releases = entry.fleet.counts
    if len(releases) > FLEET_GROUPS_MAX or not all(_is_group_name(name, RELEASE_ID_MAX) for name in releases):
        problems.append(f"fleet: at most {FLEET_GROUPS_MAX} names of at most {RELEASE_ID_MAX} characters (Groups.of)")
    return problems


def _is_release_id(text: str) -> bool:
    return len(text) <= RELEASE_ID_MAX and RELEASE_ID.fullmatch(text) is not None


def _is_group_name(name: str, name_max: int) -> bool:
    return 0 < len(name) <= name_max and all(PRINTABLE.fullmatch(char) for char in name)


def _group_name(name: str, name_max: int) -> str:
    shown = "".join(char if PRINTABLE.fullmatch(char) else "?" for char in name.strip())
    return shown[:name_max].strip() or OTHER


def _fit(text: str, cap: int) -> str:
    """``text`` cut (with an ellipsis) so that its JSON form, quotes aside, is at most ``cap`` long."""
    if len(json.dumps(text)) - 2 <= cap:
        return text
    text = text[:cap]
    while text and len(json.dumps(text + "…")) - 2 > cap:
        text = text[:-1]
    return text + "…"
