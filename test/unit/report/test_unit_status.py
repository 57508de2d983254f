"""ACTION: status in words and values (pipe/report/status.py): the drift rule, the verdict, the printed
history and fleet; and the one registry that maps each ACTION to its entry point."""

from __future__ import annotations

import pytest

from pipe.actions import ACTIONS
from pipe.config.actions import ACTION_NAMES
from pipe.model import NO_RELEASE, UNKNOWN_RELEASE
from pipe.release.ledger import Groups, LedgerEntry, ReleaseInfo, RunInfo
from pipe.release.ledger_archive import Recorded
from pipe.release.remote import OtherProcess, OtherProcesses
from pipe.report.status import (
    HISTORY_SHOWN,
    FleetStatus,
    Verdict,
    drift,
    fleet_lines,
    history_lines,
    problem_lines,
    release_line,
    status_document,
    status_dotenv,
    verdict_message,
)
from unit.unit_support import make_settings

A, B, C = "000001-aaaaaaa", "000002-bbbbbbb", "000003-ccccccc"
URL = "https://bitbucket.org/acme/web-api/pipelines/results/{}"


def recorded(
    version: int, release: str, status: str = "succeeded", action: str = "deploy", url: bool = True
) -> Recorded:
    build = str(int(release.split("-")[0]))
    entry = LedgerEntry(
        release=ReleaseInfo(release, release.split("-")[1] * 5 + "12345", build, "", ""),
        run=RunInfo(str(version), "f" * 40, URL.format(version) if url else "", "{user-uuid}"),
        action=action,
        status=status,
        fleet=Groups(),
        instances=Groups(),
        time=f"2026-12-0{version}T10:00:00Z",
    )
    return Recorded(version, entry)


def status_of(fleet: dict[str, str], live: Recorded | None, **extra: object) -> FleetStatus:
    status = FleetStatus(ledger="/release-ledger/web-api/prod/release", live=live, fleet=fleet)
    for name, value in extra.items():
        setattr(status, name, value)
    return status


@pytest.mark.parametrize(
    ("fleet", "live", "drifted"),
    [
        ({"i-1": B, "i-2": B}, B, {}),
        ({"i-1": B, "i-2": A}, B, {"i-2": A}),  # switched back by hand
        ({"i-1": B, "i-2": NO_RELEASE}, B, {"i-2": NO_RELEASE}),  # a new instance, never deployed to
        ({"i-1": B, "i-2": UNKNOWN_RELEASE}, B, {}),  # not asked: unknown, not drift
        ({"i-1": NO_RELEASE}, None, {}),  # nothing live, nothing runs
        ({"i-1": A, "i-2": NO_RELEASE}, None, {"i-1": A}),  # runs a release the ledger never made live
    ],
)
def test_an_instance_drifts_when_current_points_elsewhere_than_the_live_release(
    fleet: dict[str, str], live: str | None, drifted: dict[str, str]
) -> None:
    assert drift(fleet, live) == drifted


def test_the_verdict_is_drift_before_unknown_and_failed_before_both() -> None:
    live = recorded(2, B)
    assert status_of({"i-1": B, "i-2": B}, live).verdict is Verdict.NO_DRIFT
    assert status_of({"i-1": B, "i-2": UNKNOWN_RELEASE}, live).verdict is Verdict.UNKNOWN
    assert status_of({"i-1": A, "i-2": UNKNOWN_RELEASE}, live).verdict is Verdict.DRIFT
    assert status_of({}, live).verdict is Verdict.UNKNOWN  # no instance asked proves nothing
    assert status_of({"i-1": A}, live, message="Release ledger x: denied.").verdict is Verdict.FAILED


def test_the_history_names_the_live_release_then_each_version_newest_first() -> None:
    recent = (recorded(3, C, status="failed"), recorded(2, B), recorded(1, A, url=False))
    lines = history_lines("/release-ledger/web-api/prod/release", recent[1], recent)

    assert lines[0] == f"Release ledger /release-ledger/web-api/prod/release: live release {B} (version 2)"
    assert lines[1] == "Last 3 release(s), newest first:"
    assert lines[2] == (
        f"  v3 {C} deploy failed commit ccccccc build #3 {URL.format(3)} by {{user-uuid}} at 2026-12-03T10:00:00Z"
    )
    assert lines[3].startswith(f"  v2 {B} deploy succeeded commit bbbbbbb build #2 {URL.format(2)} ")
    assert (
        release_line(recent[2])
        == f"v1 {A} deploy succeeded commit aaaaaaa build #1 by {{user-uuid}} at 2026-12-01T10:00:00Z"
    )


def test_a_ledger_without_a_live_release_or_without_any_says_so() -> None:
    failed = (recorded(1, A, status="failed"),)
    assert history_lines("/l", None, failed)[0] == "Release ledger /l: live release none (no deploy succeeded)"
    assert history_lines("/l", None, ()) == ["Release ledger /l: no release recorded yet"]
    assert HISTORY_SHOWN >= 2


def test_each_instance_is_printed_with_what_it_runs_and_why_it_is_unknown() -> None:
    status = status_of(
        {"i-1": B, "i-2": NO_RELEASE, "i-3": UNKNOWN_RELEASE},
        recorded(2, B),
        why_unknown={"i-3": "SSM Agent not online: ConnectionLost"},
        names={"i-1": "web-1"},
    )
    assert fleet_lines(status, "/srv/web-api") == [
        "/srv/web-api/current on 3 instance(s):",
        f"  i-1 (web-1): {B}",
        "  i-2: no release",
        "  i-3: unknown (SSM Agent not online: ConnectionLost)",
    ]
    assert problem_lines(status) == [
        f"Drift: i-2 runs no release; the ledger says {B} is live",
        "Unknown: i-3 could not be asked (SSM Agent not online: ConnectionLost)",
    ]
    assert verdict_message(status) == (
        f"Drift on 1 of 3 instance(s) (i-2); 1 instance(s) could not be asked (i-3); the ledger says {B} is live"
    )


def test_no_drift_names_the_count_and_the_live_release() -> None:
    assert verdict_message(status_of({"i-1": B, "i-2": B, "i-3": B}, recorded(2, B))) == (
        f"No drift: 3 instance(s) run {B}, the live release"
    )
    assert verdict_message(status_of({"i-1": NO_RELEASE}, None)) == (
        "No drift: the ledger names no live release and none of the 1 instance(s) runs one"
    )


def test_every_action_name_has_one_entry_point() -> None:
    assert tuple(ACTIONS) == ACTION_NAMES


def test_a_process_of_another_release_than_current_is_drift_naming_it_and_the_fix() -> None:
    stale = OtherProcesses(3, (OtherProcess(4242, C, False, "web", "node"), OtherProcess(4243, B, True, "web", "x")))
    status = status_of(
        {"i-1": B, "i-2": B},
        recorded(2, B),
        processes={"i-1": OtherProcesses(), "i-2": stale},
        app_dir="/srv/web-api",
        names={"i-2": "web-2"},
    )

    assert status.verdict is Verdict.DRIFT
    assert status.drifted == {}  # current is where the ledger says
    lines = problem_lines(status)
    assert lines[0].startswith(
        f"Drift: on i-2 (web-2) process 4242 (node, user web) runs release {C}, while current points to {B}; "
        "fix: stop that process (for pm2: set cwd: '/srv/web-api/current' in the ecosystem file"
    )
    assert f"process 4243 (x, user web) runs a deleted copy of release {B}" in lines[1]
    assert (
        lines[2]
        == f"Drift: on i-2 (web-2) 1 more process(es) run from another release than {B} (the first 2 are named above)"
    )
    assert verdict_message(status) == (
        f"Drift on 1 of 2 instance(s) (i-2); 3 process(es) run from another release than current on i-2; "
        f"the ledger says {B} is live"
    )
    settings = make_settings()
    document = status_document(settings, status)
    assert document["status"] == "drift"
    assert document["processes_of_other_releases"] == [
        {
            "instance_id": "i-2",
            "current": B,
            "count": 3,
            "processes": [
                {"pid": 4242, "user": "web", "command": "node", "release": C, "deleted_copy": False},
                {"pid": 4243, "user": "web", "command": "x", "release": B, "deleted_copy": True},
            ],
        }
    ]
    assert status_dotenv(settings, status)["SSM_DEPLOY_DRIFTED_INSTANCES"] == "i-2"


def test_processes_that_could_not_be_read_leave_the_status_unknown() -> None:
    status = status_of(
        {"i-1": B, "i-2": B, "i-3": UNKNOWN_RELEASE},
        recorded(2, B),
        processes={"i-1": OtherProcesses(not_read="the read does not run as root"), "i-2": None, "i-3": None},
    )

    assert status.verdict is Verdict.UNKNOWN
    assert problem_lines(status)[-2:] == [
        "Unknown: the processes of i-1 could not be read (the read does not run as root)",
        "Unknown: the processes of i-2 could not be read (the read's list of processes is missing from its output)",
    ]
    assert "the processes of 2 instance(s) could not be read (i-1, i-2)" in verdict_message(status)


def test_a_clean_fleet_with_its_processes_read_has_no_drift() -> None:
    status = status_of({"i-1": B}, recorded(2, B), processes={"i-1": OtherProcesses()})
    assert status.verdict is Verdict.NO_DRIFT
    assert problem_lines(status) == []
