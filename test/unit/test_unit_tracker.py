"""pipe.tracker.InvocationTracker with a stubbed ListCommandInvocations and a fake clock."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.stub import Stubber
from mypy_boto3_ssm.client import SSMClient
from unit.unit_support import COMMAND_ID, INSTANCE_A, INSTANCE_B, INSTANCE_C, FakeClock, ssm_client

from pipe.model import SentCommand
from pipe.stages.watch.tracker import FIRST_POLL_SECONDS, MAX_POLL_SECONDS, InvocationTracker, WaitTimedOut

LIST_PARAMS = {"CommandId": COMMAND_ID, "MaxResults": 50}


@pytest.fixture
def stubbed() -> Iterator[tuple[SSMClient, Stubber]]:
    client = ssm_client()
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def item(instance_id: str, status: str, details: str | None = None) -> dict[str, Any]:
    return {
        "CommandId": COMMAND_ID,
        "InstanceId": instance_id,
        "Status": status,
        "StatusDetails": details if details is not None else status,
    }


def page(stubber: Stubber, *items: dict[str, Any], token: str | None = None, after: str | None = None) -> None:
    """Queue one ListCommandInvocations response; ``after`` is the NextToken the request must carry."""
    response: dict[str, Any] = {"CommandInvocations": list(items)}
    if token:
        response["NextToken"] = token
    expected = dict(LIST_PARAMS, NextToken=after) if after else LIST_PARAMS
    stubber.add_response("list_command_invocations", response, expected)


def test_waits_until_every_invocation_is_final(
    stubbed: tuple[SSMClient, Stubber], caplog: pytest.LogCaptureFixture
) -> None:
    client, stubber = stubbed
    page(stubber, item(INSTANCE_A, "InProgress"))  # B not listed yet: eventual consistency
    page(stubber, item(INSTANCE_A, "Success"), item(INSTANCE_B, "InProgress"))
    page(stubber, item(INSTANCE_A, "Success"), item(INSTANCE_B, "Failed"))
    clock = FakeClock()
    polls: list[dict[str, str]] = []
    tracker = InvocationTracker(
        client,
        [
            SentCommand(
                COMMAND_ID,
                (
                    INSTANCE_A,
                    INSTANCE_B,
                ),
            )
        ],
        clock=clock,
        sleep=clock.sleep,
    )

    def on_poll() -> None:
        polls.append({i: inv.status for i, inv in tracker.invocations.items()})

    with caplog.at_level(logging.INFO, logger="ssm-deploy"):
        result = tracker.wait(600, on_poll)

    assert polls == [
        {INSTANCE_A: "InProgress", INSTANCE_B: "Pending"},
        {INSTANCE_A: "Success", INSTANCE_B: "InProgress"},
        {INSTANCE_A: "Success", INSTANCE_B: "Failed"},
    ]
    assert result is tracker.invocations
    assert result[INSTANCE_A].succeeded
    assert result[INSTANCE_B].finished
    assert not result[INSTANCE_B].succeeded
    assert clock.sleeps == [FIRST_POLL_SECONDS, FIRST_POLL_SECONDS * 1.5]
    # one log line per change, none for A's repeated Success
    assert [r.getMessage() for r in caplog.records] == [
        f"{INSTANCE_A}: InProgress",
        f"{INSTANCE_A}: Success",
        f"{INSTANCE_B}: InProgress",
        f"{INSTANCE_B}: Failed",
    ]


def test_poll_returns_changes_and_leaves_logging_to_wait(
    stubbed: tuple[SSMClient, Stubber], caplog: pytest.LogCaptureFixture
) -> None:
    client, stubber = stubbed
    page(stubber, item(INSTANCE_A, "InProgress"), item(INSTANCE_B, "Pending"))
    page(stubber, item(INSTANCE_A, "InProgress"), item(INSTANCE_B, "Success"))
    tracker = InvocationTracker(
        client,
        [
            SentCommand(
                COMMAND_ID,
                (
                    INSTANCE_A,
                    INSTANCE_B,
                ),
            )
        ],
    )
    with caplog.at_level(logging.INFO, logger="ssm-deploy"):
        # B starts as Pending/Pending, so its first listing is no change
        assert tracker.poll() == [f"{INSTANCE_A}: InProgress"]
        assert tracker.poll() == [f"{INSTANCE_B}: Success"]
    assert caplog.records == []


def test_output_printed_on_poll_comes_before_the_status_it_led_to(
    stubbed: tuple[SSMClient, Stubber], caplog: pytest.LogCaptureFixture
) -> None:
    client, stubber = stubbed
    page(stubber, item(INSTANCE_A, "Success"))
    tracker = InvocationTracker(client, [SentCommand(COMMAND_ID, (INSTANCE_A,))])
    log = logging.getLogger("ssm-deploy")
    with caplog.at_level(logging.INFO, logger="ssm-deploy"):
        tracker.wait(60, on_poll=lambda: log.info("output: deployed"))
    assert [r.getMessage() for r in caplog.records] == ["output: deployed", f"{INSTANCE_A}: Success"]


def test_unlisted_invocation_stays_pending(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    page(stubber)  # a new command: ListCommandInvocations may not list anything yet
    tracker = InvocationTracker(client, [SentCommand(COMMAND_ID, (INSTANCE_A,))])
    tracker.poll()
    invocation = tracker.invocations[INSTANCE_A]
    assert invocation.status == "Pending"
    assert not invocation.finished


def test_status_details_change_is_tracked(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    page(stubber, item(INSTANCE_A, "Failed", "Undeliverable"))
    tracker = InvocationTracker(client, [SentCommand(COMMAND_ID, (INSTANCE_A,))])
    tracker.poll()
    assert tracker.invocations[INSTANCE_A].describe() == "Failed/Undeliverable"


def test_instances_not_asked_for_are_ignored(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    page(stubber, item(INSTANCE_C, "Success"), item(INSTANCE_A, "Success"))
    tracker = InvocationTracker(client, [SentCommand(COMMAND_ID, (INSTANCE_A,))])
    tracker.poll()
    assert set(tracker.invocations) == {INSTANCE_A}
    assert tracker.invocations[INSTANCE_A].succeeded


def test_reads_every_page(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    page(stubber, item(INSTANCE_A, "Success"), token="token-1")
    page(stubber, item(INSTANCE_B, "TimedOut", "DeliveryTimedOut"), token="token-2", after="token-1")
    page(stubber, item(INSTANCE_C, "Cancelled"), after="token-2")
    clock = FakeClock()
    tracker = InvocationTracker(
        client,
        [
            SentCommand(
                COMMAND_ID,
                (
                    INSTANCE_A,
                    INSTANCE_B,
                    INSTANCE_C,
                ),
            )
        ],
        clock=clock,
        sleep=clock.sleep,
    )
    result = tracker.wait(60)
    assert {i: inv.status for i, inv in result.items()} == {
        INSTANCE_A: "Success",
        INSTANCE_B: "TimedOut",
        INSTANCE_C: "Cancelled",
    }
    assert clock.sleeps == []  # all final after one round


def test_times_out_naming_instances_still_running(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    clock = FakeClock()
    # polls at t=0, .25, .625, 1.1875, 2.03125: the fifth is past the 2 s limit
    for _ in range(5):
        page(stubber, item(INSTANCE_A, "Success"), item(INSTANCE_B, "InProgress"))
    tracker = InvocationTracker(
        client,
        [
            SentCommand(
                COMMAND_ID,
                (
                    INSTANCE_A,
                    INSTANCE_B,
                    INSTANCE_C,
                ),
            )
        ],
        clock=clock,
        sleep=clock.sleep,
    )
    with pytest.raises(WaitTimedOut) as error:
        tracker.wait(2)
    message = str(error.value)
    assert f"Command {COMMAND_ID} did not finish within 2 s" in message
    assert message.endswith(f"still running on {INSTANCE_B}, {INSTANCE_C}.")
    assert INSTANCE_A not in message
    assert clock.sleeps == [0.25, 0.375, 0.5625, 0.84375]


def test_poll_interval_grows_to_its_cap(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    clock = FakeClock()
    for _ in range(8):
        page(stubber, item(INSTANCE_A, "InProgress"))
    page(stubber, item(INSTANCE_A, "Success"))
    tracker = InvocationTracker(client, [SentCommand(COMMAND_ID, (INSTANCE_A,))], clock=clock, sleep=clock.sleep)
    tracker.wait(3600)
    assert len(clock.sleeps) == 8
    assert clock.sleeps == sorted(clock.sleeps)
    assert clock.sleeps[-3:] == [MAX_POLL_SECONDS] * 3
    assert max(clock.sleeps) == MAX_POLL_SECONDS


def test_wait_polls_once_even_with_no_time_left(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    page(stubber, item(INSTANCE_A, "Success"))
    clock = FakeClock()
    tracker = InvocationTracker(client, [SentCommand(COMMAND_ID, (INSTANCE_A,))], clock=clock, sleep=clock.sleep)
    assert tracker.wait(0)[INSTANCE_A].succeeded
