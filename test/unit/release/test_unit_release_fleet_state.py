"""What the ledger may call a release deploy: which release each targeted instance runs at the end
(from the instances' own reports when there are some, otherwise from the commands' outcomes), and
the status that follows: live only when the deploy succeeded and every instance runs the release."""

from __future__ import annotations

import pytest

from pipe.model import UNKNOWN_RELEASE, DeployOutcome, Invocation, PhaseOutcome, Status
from pipe.release.fleet_state import entry_status, failed_back, fleet_at_end, instance_outcomes
from pipe.release.ledger import EntryStatus
from pipe.release.remote import ReleaseExit

NEW, OLD = "000043-89abcde", "000042-0123456"
I1, I2, I3 = "i-0000000000000000a", "i-0000000000000000b", "i-0000000000000000c"


def phase(**codes: int | None) -> PhaseOutcome:
    """An outcome with one invocation per instance: exit 0 succeeds, None never started."""
    record = PhaseOutcome()
    invocations = {}
    for instance_id, code in codes.items():
        if code is None:
            invocations[instance_id] = Invocation(instance_id, status="Pending", status_details="Pending")
        else:
            status = "Success" if code == 0 else "Failed"
            invocations[instance_id] = Invocation(instance_id, status=status, status_details=status, response_code=code)
    record.track(invocations)
    return record


def ended(
    status: Status = Status.FAILED, deploy: PhaseOutcome | None = None, rollback: PhaseOutcome | None = None
) -> DeployOutcome:
    return DeployOutcome(status=status, deploy=deploy or PhaseOutcome(), rollback=rollback or PhaseOutcome())


def test_every_instance_on_the_release_after_a_success_is_live() -> None:
    outcome = ended(Status.SUCCEEDED, phase(**{I1: 0, I2: 0}))
    fleet = fleet_at_end([I1, I2], outcome, NEW, OLD)

    assert fleet == {I1: NEW, I2: NEW}
    assert entry_status(outcome, False, fleet, NEW, OLD) is EntryStatus.SUCCEEDED


def test_an_alarm_during_the_bake_rolled_back_the_first_batch_and_the_second_never_started() -> None:
    """No deploy invocation failed (the old ledger's only test): the release is still not live."""
    outcome = ended(Status.FAILED, phase(**{I1: 0}), rollback=phase(**{I1: 0}))
    fleet = fleet_at_end([I1, I2], outcome, NEW, OLD)

    assert fleet == {I1: OLD, I2: OLD}
    assert entry_status(outcome, False, fleet, NEW, OLD) is EntryStatus.ROLLED_BACK
    assert instance_outcomes([I1, I2], outcome) == {I1: "rolled back", I2: "not started"}


@pytest.mark.parametrize(
    ("deploy", "rollback"),
    [
        ({I1: 0}, {I1: ReleaseExit.ACTIVATION_FAILED_ROLLBACK_FAILED}),  # the rollback's switch back left a process
        ({I1: ReleaseExit.ACTIVATION_FAILED_ROLLBACK_FAILED}, None),  # the install's own switch back did
    ],
    ids=["rollback phase", "install script"],
)
def test_every_instance_back_on_the_release_before_is_not_rolled_back_when_a_way_back_failed(
    deploy: dict[str, int], rollback: dict[str, int] | None
) -> None:
    # current points at the release before everywhere, but a process of the failed release still runs
    outcome = ended(Status.FAILED, phase(**deploy), rollback=phase(**rollback) if rollback else None)
    fleet = {I1: OLD}

    assert entry_status(outcome, False, fleet, NEW, OLD) is EntryStatus.FAILED


def test_a_stop_between_batches_is_stopped_with_the_instances_on_each_release() -> None:
    outcome = ended(Status.FAILED, phase(**{I1: 0}))
    fleet = fleet_at_end([I1, I2], outcome, NEW, OLD)

    assert fleet == {I1: NEW, I2: OLD}
    assert entry_status(outcome, True, fleet, NEW, OLD) is EntryStatus.STOPPED
    assert entry_status(outcome, False, fleet, NEW, OLD) is EntryStatus.PARTIAL


def test_a_failed_rollback_leaves_the_fleet_partial_with_the_instance_that_cannot_tell() -> None:
    outcome = ended(Status.FAILED, phase(**{I1: 0, I2: 0, I3: 7}), rollback=phase(**{I1: 0, I2: 1}))
    fleet = fleet_at_end([I1, I2, I3], outcome, NEW, OLD)

    assert fleet == {I1: OLD, I2: UNKNOWN_RELEASE, I3: UNKNOWN_RELEASE}
    assert entry_status(outcome, False, fleet, NEW, OLD) is EntryStatus.PARTIAL
    assert instance_outcomes([I1, I2, I3], outcome) == {I1: "rolled back", I2: "rollback failed", I3: "failed"}


@pytest.mark.parametrize(
    ("code", "runs"),
    [
        (ReleaseExit.CHECKSUM_MISMATCH, OLD),
        (ReleaseExit.RELEASE_COMMANDS_FAILED, OLD),
        (ReleaseExit.ACTIVATION_FAILED_ROLLED_BACK, OLD),
        (ReleaseExit.STALE_PROCESS, OLD),
        (ReleaseExit.ACTIVATION_FAILED_NO_ROLLBACK, NEW),
        (ReleaseExit.ACTIVATION_FAILED_ROLLBACK_FAILED, UNKNOWN_RELEASE),
        (1, UNKNOWN_RELEASE),
    ],
)
def test_a_failed_release_script_says_where_current_points_by_its_exit_code(code: int, runs: str) -> None:
    outcome = ended(deploy=phase(**{I1: code}))
    assert fleet_at_end([I1], outcome, NEW, OLD) == {I1: runs}


def test_nothing_switched_anywhere_is_failed_and_a_switch_back_by_the_script_is_rolled_back() -> None:
    unpacked = ended(deploy=phase(**{I1: ReleaseExit.UNPACK_FAILED, I2: None}))
    activated = ended(deploy=phase(**{I1: ReleaseExit.ACTIVATION_FAILED_ROLLED_BACK, I2: None}))

    for outcome, status in ((unpacked, EntryStatus.FAILED), (activated, EntryStatus.ROLLED_BACK)):
        fleet = fleet_at_end([I1, I2], outcome, NEW, OLD)
        assert fleet == {I1: OLD, I2: OLD}
        assert entry_status(outcome, False, fleet, NEW, OLD) is status


def test_a_lost_instance_cannot_tell() -> None:
    deploy = phase(**{I1: 0})
    deploy.invocations[I1].lost = "agent ConnectionLost for 120 s"
    assert fleet_at_end([I1], ended(deploy=deploy), NEW, OLD) == {I1: UNKNOWN_RELEASE}


def test_what_the_instances_reported_wins_and_an_instance_it_omits_was_never_touched() -> None:
    outcome = ended(Status.SUCCEEDED, phase(**{I1: 0, I2: 0}))
    outcome.fleet = {I1: NEW, I2: OLD}  # i2's script said success, yet current points to the old release
    fleet = fleet_at_end([I1, I2, I3], outcome, NEW, OLD)

    assert fleet == {I1: NEW, I2: OLD, I3: OLD}
    assert entry_status(outcome, False, fleet, NEW, OLD) is EntryStatus.PARTIAL


def test_without_known_instances_the_fleet_is_what_the_deploy_reached() -> None:
    outcome = ended(Status.SUCCEEDED, phase(**{I2: 0, I1: 0}))
    assert fleet_at_end(None, outcome, NEW, OLD) == {I1: NEW, I2: NEW}


def test_the_first_release_on_an_instance_it_never_reached_cannot_tell_what_runs_there() -> None:
    outcome = ended(Status.FAILED, phase(**{I1: 0}), rollback=phase(**{I1: 0}))
    fleet = fleet_at_end([I1, I2], outcome, NEW, "")

    assert fleet == {I1: UNKNOWN_RELEASE, I2: UNKNOWN_RELEASE}
    assert entry_status(outcome, False, fleet, NEW, "") is EntryStatus.FAILED


def test_a_succeeded_deploy_with_an_instance_off_the_release_is_not_live() -> None:
    outcome = ended(Status.SUCCEEDED, phase(**{I1: 0}))
    fleet = fleet_at_end([I1, I2], outcome, NEW, OLD)  # i2 was targeted but never received the deploy

    assert fleet == {I1: NEW, I2: OLD}
    assert entry_status(outcome, False, fleet, NEW, OLD) is EntryStatus.PARTIAL


def test_a_failed_way_back_is_named_unless_the_rollback_then_succeeded_or_never_ran() -> None:
    # I1: its own switch back failed (86), nothing after; I2: 86, then the pipe's rollback succeeded there;
    # I3: the rollback failed there; I4: the rollback was never delivered (it ran nowhere)
    i4 = "i-0000000000000000d"
    rollback = phase(**{I2: 0, I3: 86, i4: None})
    rollback.invocations[i4] = Invocation(i4, status="Failed", status_details="Undeliverable")
    for invocation in rollback.invocations.values():
        invocation.command_id = "rollback-command"  # sent: each has its command
    outcome = ended(deploy=phase(**{I1: 86, I2: 86, I3: 0, i4: 0}), rollback=rollback)

    assert failed_back(outcome) == {I1: "its switch back Failed (exit 86)", I3: "its rollback Failed (exit 86)"}
