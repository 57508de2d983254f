"""The release ledger without a server: names, the 4 KB entry (schema 2, and schema 1 read back),
choosing releases from the history (the archive beyond Parameter Store's 100 versions included),
and Parameter Store's paging and refusals through a stubbed SSM client."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber
from hypothesis import given, settings
from hypothesis import strategies as st
from mypy_boto3_ssm.client import SSMClient

from pipe.config.release import RELEASE_ID_MAX, check_ledger_name, ledger_archive_folder, release_id
from pipe.limits import S3_KEY_MAX_BYTES
from pipe.model import UNKNOWN_RELEASE
from pipe.release.ledger import (
    ENTRY_BUDGET,
    FIELD_CAPS,
    FLEET_GROUPS_MAX,
    OUTCOME_GROUPS_MAX,
    OUTCOME_NAME_MAX,
    Groups,
    LedgerEntry,
    ReleaseInfo,
    RunInfo,
    ledger_name,
    utc_timestamp,
)
from pipe.release.ledger_archive import Recorded, Version
from pipe.release.ledger_store import (
    History,
    LedgerError,
    back_to_after,
    check_room,
    live_in,
    previous_in,
    read_history,
    record,
    release_in,
)
from unit.unit_support import ssm_client

NAME = "/release-ledger/web-api/production/release"
SHA = "ab" * 32
A, B, C = "000040-aaaaaaa", "000041-bbbbbbb", "000042-ccccccc"
DIGESTS = {A: "a" * 64, B: "b" * 64, C: "c" * 64}


def entry(identity: str = "000042-0123456", status: str = "succeeded", sha256: str = "", **changes: Any) -> LedgerEntry:
    digest = sha256 or DIGESTS.get(identity, SHA)
    base = LedgerEntry(
        release=ReleaseInfo(
            identity, "0123456789abcdef0123456789abcdef01234567", "42", f"web-api/{digest}.tar.gz", digest
        ),
        run=RunInfo(
            "57",
            "89abcdef0123456789abcdef0123456789abcdef",
            "https://bitbucket.org/acme/web-api/pipelines/results/57",
            "{5f1c2a3b-0000-4000-8000-000000000001}",
        ),
        action="deploy",
        status=status,
        fleet=Groups.of({"i-0123456789abcdef0": identity}),
        instances=Groups.of({"i-0123456789abcdef0": status}),
        time="2026-12-01T21:50:33Z",
    )
    return dataclasses.replace(base, **changes)


def fleet(count: int, failed: int = 0) -> dict[str, str]:
    return {f"i-{n:017x}": ("rolled back" if n < failed else "succeeded") for n in range(count)}


# --- names ----------------------------------------------------------------------------------------------


def test_release_ids_are_build_then_short_commit_and_sort_in_build_order() -> None:
    assert release_id("42", "0123456789ABCDEF") == "000042-0123456"
    assert release_id("7", "") == "000007-nocommit"
    ids = [release_id(str(n), "f" * 40) for n in (9, 10, 100, 1000000)]
    assert sorted(ids) == ids


def test_the_ledger_name_is_per_service_and_environment_and_its_archive_beside_the_artifacts() -> None:
    assert ledger_name("web-api", "production") == NAME
    assert ledger_archive_folder("web-api/", "web-api", "production") == "web-api/ledger/web-api/production/"


@pytest.mark.parametrize(
    ("service", "environment"), [("web api", "prod"), ("web-api", ""), ("a/b", "prod"), ("x", "é")]
)
def test_names_parameter_store_refuses_are_refused(service: str, environment: str) -> None:
    assert check_ledger_name(service, environment)
    with pytest.raises(ValueError, match="Parameter Store path segment"):
        ledger_name(service, environment)


def test_timestamps_are_utc_iso_8601() -> None:
    moment = datetime.datetime(2026, 12, 1, 23, 50, 33, 999, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert utc_timestamp(moment) == "2026-12-01T21:50:33Z"


# --- entries --------------------------------------------------------------------------------------------


def test_an_entry_round_trips_through_its_json_with_the_release_and_the_run_apart() -> None:
    written = entry(
        previous_release="000041-abcdef0",
        action="rollback",
        status="partial",
        fleet=Groups.of({"i-1": "000042-0123456", "i-2": "000041-abcdef0", "i-3": UNKNOWN_RELEASE}),
    )
    document = json.loads(written.to_json())

    assert LedgerEntry.from_json(written.to_json()) == written
    assert (document["v"], document["action"], document["status"]) == (2, "rollback", "partial")
    assert (document["release"], document["commit"], document["build"]) == (
        "000042-0123456",
        "0123456789abcdef0123456789abcdef01234567",
        "42",
    )
    assert document["run"] == {
        "build": "57",
        "commit": "89abcdef0123456789abcdef0123456789abcdef",
        "build_url": "https://bitbucket.org/acme/web-api/pipelines/results/57",
        "triggered_by": "{5f1c2a3b-0000-4000-8000-000000000001}",
    }
    assert document["fleet"]["000041-abcdef0"] == {"count": 1, "ids": ["i-2"]}
    assert document["previous"] == "000041-abcdef0"


def schema_1(release: str, build: str, commit: str) -> str:
    """A version an earlier pipe wrote: the run's build and commit beside the release id."""
    return json.dumps(
        {
            "v": 1,
            "release": release,
            "status": "succeeded",
            "previous": "",
            "commit": commit,
            "build": build,
            "build_url": "https://bitbucket.org/acme/web-api/pipelines/results/" + build,
            "triggered_by": "{x}",
            "artifact": f"web-api/{SHA}.tar.gz",
            "sha256": SHA,
            "time": "2026-01-01T00:00:00Z",
            "instances": {"succeeded": {"count": 2, "ids": ["i-1", "i-2"]}},
        }
    )


def test_a_schema_1_version_is_read_a_deploy_or_a_rollback_by_whether_its_run_built_the_release() -> None:
    deployed = LedgerEntry.from_json(schema_1("000042-0123456", "42", "0123456789"))
    went_back = LedgerEntry.from_json(schema_1("000042-0123456", "57", "fedcba9876"))

    assert (deployed.action, deployed.release.commit, deployed.release.build) == ("deploy", "0123456789", "42")
    assert (went_back.action, went_back.release.commit, went_back.release.build) == ("rollback", "", "42")
    assert (went_back.run.build, went_back.run.commit) == ("57", "fedcba9876")
    assert went_back.live and went_back.instances.counts == {"succeeded": 2} and went_back.fleet.counts == {}


@pytest.mark.parametrize(
    "changes",
    [
        {"release": ReleaseInfo("42-abc", "", "", "", "")},
        {"release": ReleaseInfo("1" * RELEASE_ID_MAX + "-abc", "", "", "", "")},
        {"previous_release": "previous"},
        {"release": ReleaseInfo(A, "", "", "", "AB" * 32)},
        {"release": ReleaseInfo(A, "", "", "web api/x.tar.gz", "")},
        {"status": "done"},
        {"status": "succeeded "},
        {"action": "undo"},
        {"instances": Groups({f"outcome {n}": 1 for n in range(17)}, {})},
        {"instances": Groups({"é": 1}, {})},
        {"fleet": Groups({"latest\n": 1}, {})},
        {"fleet": Groups({"x" * (RELEASE_ID_MAX + 1): 1}, {})},
        {"fleet": Groups({f"{n:06d}-abc": 1 for n in range(FLEET_GROUPS_MAX + 1)}, {})},
    ],
)
def test_an_entry_with_a_field_that_cannot_be_cut_or_trusted_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        entry(**changes)


def test_2000_instances_fit_in_4_kb_with_every_count_and_first_the_instances_not_on_the_release() -> None:
    outcomes = fleet(2000, failed=3)
    on = {i: (A if outcome == "rolled back" else C) for i, outcome in outcomes.items()}
    written = entry(C, status="partial", instances=Groups.of(outcomes), fleet=Groups.of(on))
    text = written.to_json()
    read = LedgerEntry.from_json(text)

    assert len(text.encode()) < 4096
    assert dict(read.instances.counts) == {"rolled back": 3, "succeeded": 1997}
    assert dict(read.fleet.counts) == {A: 3, C: 1997}
    assert (
        read.fleet.ids[A] == written.fleet.ids[A]
        and read.instances.ids["rolled back"] == written.instances.ids["rolled back"]
    )
    assert 0 < len(read.fleet.ids[C]) < 1997 and not read.fleet.complete
    assert read.fleet.ids[C] == written.fleet.ids[C][: len(read.fleet.ids[C])]


def test_the_largest_entry_the_caps_allow_fits_with_its_groups_named() -> None:
    """Every field at its cap, escapes included: the entry still fits (the fitting never has to drop a count)."""
    wide = "\u2028" * 400  # six bytes each in ASCII JSON
    key = "p/" * ((S3_KEY_MAX_BYTES - 71) // 2) + SHA + ".tar.gz"
    longest = "1" * (RELEASE_ID_MAX - 41) + "-" + "z" * 40
    releases = [longest[: -len(str(n))] + str(n) for n in range(FLEET_GROUPS_MAX - 2)] + [UNKNOWN_RELEASE, "other"]
    written = entry(
        release=ReleaseInfo(longest, wide, wide, key, SHA),
        run=RunInfo(wide, wide, wide, wide),
        time=wide,
        previous_release=longest,
        fleet=Groups({name: 10**9 for name in releases}, {name: ("i-0123456789abcdef0",) for name in releases}),
        instances=Groups(
            {f"{n:02d}" + "~" * (OUTCOME_NAME_MAX - 2): 10**9 for n in range(OUTCOME_GROUPS_MAX)},
            {},
        ),
    )
    text = written.to_json()
    read = LedgerEntry.from_json(text)

    assert len(text) <= ENTRY_BUDGET
    assert dict(read.fleet.counts) == dict(written.fleet.counts)
    assert dict(read.instances.counts) == dict(written.instances.counts)
    assert len(json.dumps(read.run.build_url)) - 2 <= FIELD_CAPS["build_url"]


def test_groups_past_the_limit_merge_into_other_and_names_are_printable_and_cut() -> None:
    outcomes = Groups.of({f"i-{n}": f"exit {n % 20}" for n in range(40)} | {f"i-y{n}": "y" * 60 for n in range(3)})
    assert len(outcomes.counts) == 16 and outcomes.total == 43
    assert outcomes.counts["y" * 40] == 3  # the largest groups keep their names
    assert outcomes.counts["other"] == 6 * 2  # 15 groups keep their names: y and 14 of the 20 "exit" ones
    assert Groups.of({"i-1": "naïve\n"}).counts == {"na?ve": 1}


WORDS = st.text(max_size=400)  # any Unicode: escapes count in the 4 KB, not the characters
IDS = st.from_regex(r"i-[0-9a-f]{8,17}", fullmatch=True)
RELEASE_IDS = st.from_regex(r"[0-9]{6,12}-[0-9a-z]{1,40}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(
    commit=WORDS,
    build_url=WORDS,
    triggered_by=WORDS,
    build_number=st.text(max_size=40),
    prefix=st.from_regex(r"[A-Za-z0-9_.-]{0,60}/", fullmatch=True),
    by_instance=st.dictionaries(IDS, st.text(min_size=1, max_size=60), max_size=3000),
    on_release=st.dictionaries(IDS, st.one_of(RELEASE_IDS, st.just(UNKNOWN_RELEASE)), max_size=3000),
)
def test_any_entry_stays_under_4096_bytes_and_keeps_every_count_property(
    commit: str,
    build_url: str,
    triggered_by: str,
    build_number: str,
    prefix: str,
    by_instance: dict[str, str],
    on_release: dict[str, str],
) -> None:
    outcomes = Groups.of(by_instance)
    releases = Groups.of(on_release, limit=FLEET_GROUPS_MAX, name_max=RELEASE_ID_MAX)
    written = entry(
        release=ReleaseInfo(A, commit, build_number, f"{prefix}{SHA}.tar.gz", SHA),
        run=RunInfo(build_number, commit, build_url, triggered_by),
        instances=outcomes,
        fleet=releases,
    )
    text = written.to_json()
    read = LedgerEntry.from_json(text)

    assert len(text.encode()) <= ENTRY_BUDGET < 4096
    assert dict(read.instances.counts) == dict(outcomes.counts)
    assert dict(read.fleet.counts) == dict(releases.counts)
    assert (read.release.id, read.release.artifact_key, read.release.sha256) == (A, f"{prefix}{SHA}.tar.gz", SHA)
    for name, ids in read.instances.ids.items():
        assert ids == outcomes.ids[name][: len(ids)]
    for name, ids in read.fleet.ids.items():
        assert ids == releases.ids[name][: len(ids)]


# --- choosing from the history ----------------------------------------------------------------------------


def history(*entries: LedgerEntry) -> tuple[Recorded, ...]:
    return tuple(Recorded(version, item) for version, item in enumerate(entries, start=1))


def newest_first(found: tuple[Recorded, ...]) -> list[Recorded]:
    return list(reversed(found))


def test_live_is_the_newest_success_and_previous_the_success_before_it_with_other_content() -> None:
    on_b = Groups.of({"i-0123456789abcdef0": B})  # C stopped or partial where no instance switched
    c_partial, c_stopped = entry(C, "partial", fleet=on_b), entry(C, "stopped", fleet=on_b)
    found = history(entry(A), entry(B), entry(C, "rolled back", fleet=on_b), entry(B), c_partial, c_stopped)

    assert live_in(newest_first(found)) == found[3]  # B, redeployed: C never ran on every instance
    chosen = previous_in(newest_first(found))
    assert (chosen.live, chosen.found) == (found[3], found[0])  # A: B's own earlier version is skipped
    assert chosen.skipped == (found[1],)


def test_previous_skips_a_release_with_the_live_ones_artifact_whatever_its_id() -> None:
    redeployed = "000043-bbbbbbb"  # B's bytes deployed again by a later build
    found = history(entry(A), entry(B), entry(redeployed, sha256=DIGESTS[B], action="redeploy"))

    chosen = previous_in(newest_first(found))
    assert chosen.found == found[0] and chosen.skipped == (found[1],)


def test_back_to_after_a_redeploy_of_the_live_build_is_what_release_previous_chooses_once_it_succeeded() -> None:
    """KEEP_RELEASES keeps it (test_attack23.py): A, B live; B's bytes again as a new build: then RELEASE: previous
    passes over the new id and B (the same artifact) to A."""
    found = history(entry(A), entry(B))
    chosen = back_to_after(newest_first(found), DIGESTS[B])
    assert chosen == found[0]
    redeployed = history(entry(A), entry(B), entry("000043-bbbbbbb", sha256=DIGESTS[B], action="redeploy"))
    assert previous_in(newest_first(redeployed)).found.entry.release.id == chosen.entry.release.id  # type: ignore[union-attr]
    assert back_to_after(newest_first(found), DIGESTS[C]) == found[1]  # a new build: the live release
    assert back_to_after(newest_first(history(entry(B))), DIGESTS[B]) is None


def test_previous_after_going_back_is_the_release_that_was_left() -> None:
    found = history(entry(A), entry(B), entry(A, previous_release=B, action="rollback"))
    chosen = previous_in(newest_first(found))
    assert (chosen.live, chosen.found) == (found[2], found[1])


@pytest.mark.parametrize("status", ["stopped", "partial"])
def test_previous_after_a_deploy_that_left_instances_on_its_release_is_the_live_one(status: str) -> None:
    # C went live on one instance of two before it was stopped (or failed): going back means B again, not A
    mixed = Groups.of({"i-0123456789abcdef0": C, "i-0123456789abcdef1": B})
    deploys = [entry(A), entry(B), entry(C, status, fleet=mixed)]
    found = history(*deploys)
    chosen = previous_in(newest_first(found))
    assert (chosen.live, chosen.found, chosen.left_off) == (found[1], found[1], found[2])
    # once a later version records the fleet back on B, previous is the release before B again
    back = history(*deploys, entry(B, action="redeploy"))
    assert previous_in(newest_first(back)).found == found[0]


@pytest.mark.parametrize("status", ["stopped", "partial"])
def test_previous_after_a_rollback_that_left_instances_on_its_release_finishes_going_back(status: str) -> None:
    # RELEASE: previous (B back to A) stopped with one instance of two on A: run again, it goes on to A,
    # never forward to B, the release it was leaving (attack 11)
    mixed = Groups.of({"i-0123456789abcdef0": A, "i-0123456789abcdef1": B})
    found = history(entry(A), entry(B), entry(A, status, fleet=mixed, previous_release=B, action="rollback"))
    chosen = previous_in(newest_first(found))
    assert (chosen.live, chosen.found, chosen.left_off) == (found[1], found[0], None)
    # RELEASE: <id> of C, a release rolled back earlier (recorded as a rollback: another artifact than the
    # live one's), stopped half-way: it was going to no release live before B, so going back is B
    ahead = Groups.of({"i-0123456789abcdef0": C, "i-0123456789abcdef1": B})
    rolled_back = entry(C, "rolled back", fleet=Groups.of({"i-0123456789abcdef0": B}))
    forward = history(entry(A), entry(B), rolled_back, entry(C, status, fleet=ahead, action="rollback"))
    chosen = previous_in(newest_first(forward))
    assert (chosen.live, chosen.found, chosen.left_off) == (forward[1], forward[1], forward[3])


def test_nothing_live_or_nothing_before_it() -> None:
    assert live_in([]) is None and previous_in([]).found is None
    assert live_in(history(entry(A, "failed"))) is None
    assert previous_in(newest_first(history(entry(A), entry(A)))).found is None


def test_a_release_is_found_by_id_whatever_its_outcome() -> None:
    found = history(entry(A), entry(B, "failed"), entry(A))
    assert release_in(newest_first(found), B) == found[1] and release_in(newest_first(found), A) == found[2]
    assert release_in(newest_first(found), C) is None


@dataclasses.dataclass
class FakeArchive:
    """What an Archive answers, and how far back it was asked."""

    recorded: list[Recorded]
    asked: list[int] = dataclasses.field(default_factory=list)

    def recorded_before(self, version: int) -> Iterator[Recorded]:
        for item in sorted(self.recorded, key=lambda r: -r.version):
            if item.version < version:
                self.asked.append(item.version)
                yield item


def versions(first: int, *entries: LedgerEntry | str) -> tuple[Version, ...]:
    return tuple(
        Version(number, item if isinstance(item, str) else item.to_json()) for number, item in enumerate(entries, first)
    )


def test_the_archive_is_read_only_when_a_question_goes_beyond_the_parameters_versions() -> None:
    archive = FakeArchive([Recorded(1, entry(A)), Recorded(2, entry(B))])
    kept = History(NAME, versions(3, *[entry(C, "failed")] * 100), archive)  # type: ignore[arg-type]

    assert kept.live() == Recorded(2, entry(B))
    assert archive.asked == [2]  # newest first, and no further than needed
    chosen = kept.previous()
    assert chosen.found == Recorded(1, entry(A))
    assert kept.release(C) is not None and kept.release("000001-zzzzzzz") is None


def test_a_full_ledger_whose_oldest_version_has_a_label_is_refused_before_anything_is_sent() -> None:
    full = [Version(n, entry(A).to_json(), labels=("first",) if n == 1 else ()) for n in range(1, 101)]
    with pytest.raises(LedgerError, match=r"version 1, has the label first.*--parameter-version 1 --labels first"):
        check_room(History(NAME, tuple(full)))
    check_room(History(NAME, tuple(full[1:])))  # 99 versions: room for one more
    check_room(History(NAME, (Version(0, entry(A).to_json()), *full[1:])))  # no label: the oldest goes


def test_a_history_from_version_1_never_reads_the_archive() -> None:
    archive = FakeArchive([Recorded(1, entry(A))])
    whole = History(NAME, versions(1, entry(B, "failed")), archive)  # type: ignore[arg-type]
    assert whole.live() is None and archive.asked == []


# --- Parameter Store (stubbed) -----------------------------------------------------------------------------


@pytest.fixture
def stubbed() -> Iterator[tuple[SSMClient, Stubber]]:
    client = ssm_client()
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def version(number: int, value: str) -> dict[str, Any]:
    return {"Name": NAME, "Type": "String", "Value": value, "Version": number, "LastModifiedUser": "arn:deploy"}


def test_the_history_is_read_page_by_page_and_ordered_by_version(
    stubbed: tuple[SSMClient, Stubber], caplog: pytest.LogCaptureFixture
) -> None:
    client, stubber = stubbed
    stubber.add_response(
        "get_parameter_history",
        {"Parameters": [version(3, entry(C).to_json()), version(1, entry(A).to_json())], "NextToken": "t"},
        {"Name": NAME, "MaxResults": 50},
    )
    stubber.add_response(
        "get_parameter_history",
        {"Parameters": [version(2, "hand-written"), version(4, entry(B).to_json())]},
        {"Name": NAME, "MaxResults": 50, "NextToken": "t"},
    )
    with caplog.at_level(logging.WARNING, logger="ssm-deploy"):
        found = read_history(client, NAME)

    assert [item.number for item in found.versions] == [1, 2, 3, 4]
    assert [(item.version, item.entry.release.id) for item in found.newest_first()] == [(4, B), (3, C), (1, A)]
    assert next(found.newest_first()).written_by == "arn:deploy"
    assert f"Release ledger {NAME}: version 2 skipped (not JSON" in caplog.text
    assert "written by arn:deploy" in caplog.text


def test_no_parameter_yet_is_an_empty_history(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error("get_parameter_history", "ParameterNotFound", "Parameter not found.")
    found = read_history(client, NAME)
    assert found.versions == () and found.live() is None


def test_a_denied_read_or_write_names_the_action_and_the_parameter(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error("get_parameter_history", "AccessDeniedException", "not authorized", 400)
    stubber.add_client_error("put_parameter", "AccessDeniedException", "not authorized", 400)

    with pytest.raises(LedgerError, match=rf"allow ssm:GetParameterHistory on arn:aws:ssm:\*:\*:parameter{NAME}"):
        read_history(client, NAME)
    with pytest.raises(LedgerError, match=rf"allow ssm:PutParameter on arn:aws:ssm:\*:\*:parameter{NAME}"):
        record(client, NAME, entry().to_json())


def test_a_labelled_oldest_version_is_explained(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error("put_parameter", "ParameterMaxVersionLimitExceeded", "Version 1 ... has a label")
    with pytest.raises(LedgerError, match="move the label to a newer version"):
        record(client, NAME, entry().to_json())


def test_record_overwrites_a_string_and_returns_the_version(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    written = entry().to_json()
    stubber.add_response(
        "put_parameter",
        {"Version": 7, "Tier": "Standard"},
        {
            "Name": NAME,
            "Value": written,
            "Type": "String",
            "Overwrite": True,
            "Description": "ssm-deploy release ledger: one version per deploy (get-parameter-history)",
        },
    )
    assert record(client, NAME, written) == 7


def test_the_readme_example_is_an_entry_written_as_the_pipe_writes_it() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    block = readme.split("### The release ledger", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
    example = LedgerEntry.from_json(block)

    assert json.loads(example.to_json()) == json.loads(block)
    assert example.fleet.counts == {"000042-0123456": 1, UNKNOWN_RELEASE: 1}
