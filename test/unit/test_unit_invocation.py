"""pipe.model.Invocation: which invocations may have run their script, and which ran it to its own end."""

from __future__ import annotations

import pytest

from pipe.model import Invocation


@pytest.mark.parametrize(
    ("status", "details", "lost", "may_have_run", "ended_by_script"),
    [
        ("Success", "Success", "", True, True),
        ("Failed", "Failed", "", True, True),
        ("TimedOut", "ExecutionTimedOut", "", True, False),
        ("Cancelled", "Cancelled", "", True, False),
        ("InProgress", "InProgress", "agent ConnectionLost for 120 s", True, False),
        ("Pending", "Pending", "agent ConnectionLost for 120 s", False, False),  # never reached the agent
        ("Delayed", "Delayed", "", False, False),
        ("TimedOut", "DeliveryTimedOut", "", False, False),
        ("Failed", "Undeliverable", "", False, False),
        ("Cancelled", "Terminated", "", False, False),  # MAX_ERRORS stopped it before it started
    ],
)
def test_which_invocations_may_have_switched_and_which_told_how_they_ended(
    status: str, details: str, lost: str, may_have_run: bool, ended_by_script: bool
) -> None:
    invocation = Invocation("i-1", "c-1", status=status, status_details=details, lost=lost)
    assert (invocation.may_have_run, invocation.ended_by_script) == (may_have_run, ended_by_script)


def test_an_invocation_given_up_before_its_agent_received_it_never_ran_even_once_cancelled() -> None:
    invocation = Invocation("i-1", "c-1", lost="agent ConnectionLost for 120 s", lost_undelivered=True)
    invocation.status = invocation.status_details = "Cancelled"  # the pipe cancels what it gave up on
    assert not invocation.may_have_run


def test_an_instance_never_sent_a_command_never_ran_it() -> None:
    assert not Invocation("i-1", status="Cancelled", status_details="Cancelled").may_have_run
    assert not Invocation("i-1", "c-1", status="Success", stopped_at_max_errors=True).may_have_run
