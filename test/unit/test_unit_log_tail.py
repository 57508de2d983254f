"""LogTail against a stubbed CloudWatch Logs client: order, de-duplication, look-back, denial."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from unit.unit_support import COMMAND_ID, INSTANCE_A, INSTANCE_B

from pipe.report.console import OutputPrinter
from pipe.runtime.redaction import Redactor
from pipe.stages.watch.log_tail import LOOKBACK_MS, LogTail

GROUP = "/aws/ssm/ssm-deploy"
START = 1_000_000


@pytest.fixture
def logs() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("logs", region_name="eu-west-1", aws_access_key_id="AKIA0000", aws_secret_access_key="x")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def event(instance: str, stream: str, timestamp: int, event_id: str, message: str) -> dict[str, Any]:
    return {
        "logStreamName": f"{COMMAND_ID}/{instance}/aws-runShellScript/{stream}",
        "timestamp": timestamp,
        "eventId": event_id,
        "message": message,
    }


def expect(stubber: Stubber, start: int, *events: dict[str, Any]) -> None:
    request = {"logGroupName": GROUP, "logStreamNamePrefix": f"{COMMAND_ID}/", "startTime": start, "limit": 1000}
    stubber.add_response("filter_log_events", {"events": list(events)}, request)


def tail_for(client: Any, stream: io.StringIO) -> LogTail:
    printer = OutputPrinter(Redactor(), label_lines=True, stream=stream, colour=False)
    return LogTail(client, GROUP, [COMMAND_ID], printer, START)


def test_prints_each_event_once_in_order(logs: tuple[Any, Stubber]) -> None:
    client, stubber = logs
    out = io.StringIO()
    tail = tail_for(client, out)
    expect(
        stubber,
        START,
        event(INSTANCE_A, "stdout", START + 5, "1", "one"),
        event(INSTANCE_A, "stdout", START + 9, "2", "two"),
    )
    # one instance: no look-back; the event at the newest timestamp is sent again and skipped
    expect(
        stubber,
        START + 9,
        event(INSTANCE_A, "stdout", START + 9, "2", "two"),
        event(INSTANCE_A, "stderr", START + 12, "3", "oops"),
    )

    assert tail.poll() == 2
    assert tail.poll() == 1
    assert out.getvalue() == f"{INSTANCE_A} | one\n{INSTANCE_A} | two\n{INSTANCE_A} | [stderr] oops\n"
    assert tail.streamed_chars(INSTANCE_A, "stdout") == len("one\ntwo\n")


def test_looks_back_once_two_instances_are_seen_and_skips_what_it_printed(logs: tuple[Any, Stubber]) -> None:
    client, stubber = logs
    out = io.StringIO()
    tail = tail_for(client, out)
    late = START + 50_000
    first_a = event(INSTANCE_A, "stdout", late, "a1", "a-first")
    first_b = event(INSTANCE_B, "stdout", late + 10, "b1", "b-first")
    expect(stubber, START, first_a, first_b)
    # A's next upload lagged behind B's: its event is older than the newest seen, and must not be lost
    lagged_a = event(INSTANCE_A, "stdout", late + 3, "a2", "a-lagged")
    expect(stubber, late + 10 - LOOKBACK_MS, first_a, lagged_a, first_b)

    assert tail.poll() == 2
    assert tail.poll() == 1
    lines = out.getvalue().splitlines()
    assert lines == [f"{INSTANCE_A} | a-first", f"{INSTANCE_B} | b-first", f"{INSTANCE_A} | a-lagged"]


def test_missing_group_is_not_an_error_and_denial_turns_streaming_off(logs: tuple[Any, Stubber]) -> None:
    client, stubber = logs
    tail = tail_for(client, io.StringIO())
    stubber.add_client_error("filter_log_events", service_error_code="ResourceNotFoundException")
    stubber.add_client_error("filter_log_events", service_error_code="AccessDeniedException", http_status_code=400)

    assert tail.poll() == 0 and tail.available
    assert tail.poll() == 0
    assert not tail.available
    assert tail.poll() == 0  # no further calls once off


def test_drain_waits_for_what_ssm_reported(logs: tuple[Any, Stubber]) -> None:
    client, stubber = logs
    tail = tail_for(client, io.StringIO())
    expect(stubber, START)
    expect(stubber, START, event(INSTANCE_A, "stdout", START + 1, "1", "done"))
    sleeps: list[float] = []

    assert tail.drain({(INSTANCE_A, "stdout"): 5}, limit_seconds=10, sleep=sleeps.append)
    assert len(sleeps) == 1
