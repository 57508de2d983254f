"""pipe.stages.release.ledger without a server: names, the 4 KB entry, choosing releases from the
history, and Parameter Store's paging and refusals through a stubbed SSM client."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.stub import Stubber
from hypothesis import given, settings
from hypothesis import strategies as st
from mypy_boto3_ssm.client import SSMClient
from unit.unit_support import ssm_client

from pipe.config.release import check_ledger_name, release_id
from pipe.stages.release.ledger import (
    ENTRY_BUDGET,
    LedgerEntry,
    LedgerError,
    Outcomes,
    Recorded,
    before_live_in,
    ledger_name,
    live_in,
    read_history,
    record,
    release_in,
    utc_timestamp,
)

NAME = "/release-ledger/web-api/production/release"
SHA = "ab" * 32


def entry(release: str = "000042-0123456", status: str = "succeeded", **changes: Any) -> LedgerEntry:
    base = LedgerEntry(
        release_id=release,
        commit="0123456789abcdef0123456789abcdef01234567",
        build_number="42",
        build_url="https://bitbucket.org/acme/web-api/pipelines/results/42",
        triggered_by="{5f1c2a3b-0000-4000-8000-000000000001}",
        artifact_key=f"web-api/{SHA}.tar.gz",
        sha256=SHA,
        status=status,
        instances=Outcomes.of({"i-0123456789abcdef0": status}),
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


def test_the_ledger_name_is_per_service_and_environment() -> None:
    assert ledger_name("web-api", "production") == NAME


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


def test_an_entry_round_trips_through_its_json() -> None:
    written = entry(previous_release="000041-abcdef0")
    assert LedgerEntry.from_json(written.to_json()) == written
    assert json.loads(written.to_json())["previous"] == "000041-abcdef0"


@pytest.mark.parametrize(
    "changes",
    [
        {"release_id": "42-abc"},
        {"previous_release": "previous"},
        {"sha256": "AB" * 32},
        {"artifact_key": "web api/x.tar.gz"},
        {"status": "done"},
        {"instances": Outcomes({f"outcome {n}": 1 for n in range(17)}, {})},
    ],
)
def test_an_entry_with_a_field_that_cannot_be_cut_or_trusted_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        entry(**changes)


def test_2000_instances_fit_in_4_kb_with_every_count_and_the_failures_named() -> None:
    written = entry(status="rolled back", instances=Outcomes.of(fleet(2000, failed=3)))
    text = written.to_json()
    read = LedgerEntry.from_json(text)

    assert len(text.encode()) < 4096
    assert dict(read.instances.counts) == {"rolled back": 3, "succeeded": 1997}
    assert read.instances.ids["rolled back"] == written.instances.ids["rolled back"]
    assert 0 < len(read.instances.ids["succeeded"]) < 1997 and not read.instances.complete
    assert read.instances.ids["succeeded"] == written.instances.ids["succeeded"][: len(read.instances.ids["succeeded"])]


def test_outcomes_past_16_merge_into_other_and_long_names_are_cut() -> None:
    outcomes = Outcomes.of({f"i-{n}": f"exit {n % 20}" for n in range(40)} | {f"i-y{n}": "y" * 60 for n in range(3)})
    assert len(outcomes.counts) == 16 and outcomes.total == 43
    assert outcomes.counts["y" * 40] == 3  # the largest groups keep their names
    assert outcomes.counts["other"] == 6 * 2  # 15 groups keep their names: y and 14 of the 20 "exit" ones


WORDS = st.text(max_size=400)  # any Unicode: escapes count in the 4 KB, not the characters
IDS = st.from_regex(r"i-[0-9a-f]{8,17}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(
    commit=WORDS,
    build_url=WORDS,
    triggered_by=WORDS,
    build_number=st.text(max_size=40),
    prefix=st.from_regex(r"[A-Za-z0-9_.-]{0,60}/", fullmatch=True),
    by_instance=st.dictionaries(IDS, st.text(min_size=1, max_size=60), max_size=3000),
)
def test_any_entry_stays_under_4096_bytes_and_keeps_every_count_property(
    commit: str, build_url: str, triggered_by: str, build_number: str, prefix: str, by_instance: dict[str, str]
) -> None:
    outcomes = Outcomes.of(by_instance)
    written = entry(
        commit=commit,
        build_url=build_url,
        triggered_by=triggered_by,
        build_number=build_number,
        artifact_key=f"{prefix}{SHA}.tar.gz",
        instances=outcomes,
    )
    text = written.to_json()
    read = LedgerEntry.from_json(text)

    assert len(text.encode()) <= ENTRY_BUDGET < 4096
    assert dict(read.instances.counts) == dict(outcomes.counts)
    assert (read.release_id, read.artifact_key, read.sha256) == (written.release_id, written.artifact_key, SHA)
    for name, ids in read.instances.ids.items():
        assert ids == outcomes.ids[name][: len(ids)]


# --- choosing from the history ----------------------------------------------------------------------------


def history(*entries: LedgerEntry) -> tuple[Recorded, ...]:
    return tuple(Recorded(version, item) for version, item in enumerate(entries, start=1))


A, B, C = "000040-aaaaaaa", "000041-bbbbbbb", "000042-ccccccc"


def test_live_is_the_newest_success_and_previous_the_success_before_it_with_another_id() -> None:
    found = history(entry(A), entry(B), entry(C, "failed"), entry(B), entry(C, "rolled back"))

    assert live_in(found) == found[3]  # B, redeployed: the failed and rolled-back C never went live
    assert before_live_in(found) == found[0]  # A: B's own earlier version is not "the one before"


def test_previous_after_going_back_is_the_release_that_was_left() -> None:
    found = history(entry(A), entry(B), entry(A, previous_release=B))  # RELEASE: previous went back to A
    assert live_in(found) == found[2] and before_live_in(found) == found[1]


def test_nothing_live_or_nothing_before_it() -> None:
    assert live_in(()) is None and before_live_in(()) is None
    assert live_in(history(entry(A, "failed"))) is None
    assert before_live_in(history(entry(A), entry(A))) is None


def test_a_release_is_found_by_id_whatever_its_outcome() -> None:
    found = history(entry(A), entry(B, "failed"), entry(A))
    assert release_in(found, B) == found[1] and release_in(found, A) == found[2]
    assert release_in(found, C) is None


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

    assert [(item.version, item.entry.release_id) for item in found] == [(1, A), (3, C), (4, B)]
    assert found[0].written_by == "arn:deploy"
    assert "version 2 skipped" in caplog.text


def test_no_parameter_yet_is_an_empty_history(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error("get_parameter_history", "ParameterNotFound", "Parameter not found.")
    assert read_history(client, NAME) == ()


def test_a_denied_read_or_write_names_the_action_and_the_parameter(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error("get_parameter_history", "AccessDeniedException", "not authorized", 400)
    stubber.add_client_error("put_parameter", "AccessDeniedException", "not authorized", 400)

    with pytest.raises(LedgerError, match=rf"allow ssm:GetParameterHistory on arn:aws:ssm:\*:\*:parameter{NAME}"):
        read_history(client, NAME)
    with pytest.raises(LedgerError, match=rf"allow ssm:PutParameter on arn:aws:ssm:\*:\*:parameter{NAME}"):
        record(client, NAME, entry())


def test_a_labelled_oldest_version_is_explained(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error("put_parameter", "ParameterMaxVersionLimitExceeded", "Version 1 ... has a label")
    with pytest.raises(LedgerError, match="move the label to a newer version"):
        record(client, NAME, entry())


def test_record_overwrites_a_string_and_returns_the_version(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    written = entry()
    stubber.add_response(
        "put_parameter",
        {"Version": 7, "Tier": "Standard"},
        {
            "Name": NAME,
            "Value": written.to_json(),
            "Type": "String",
            "Overwrite": True,
            "Description": "ssm-deploy release ledger: one version per deploy (get-parameter-history)",
        },
    )
    assert record(client, NAME, written) == 7
