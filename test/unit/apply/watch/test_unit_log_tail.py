"""LogTail against a stubbed CloudWatch Logs client: order, de-duplication, look-back, denial."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from pipe.apply.watch.filter_reads import PAGE_EVENTS
from pipe.apply.watch.log_tail import DRAIN_POLL_SECONDS, FILTER_POLL_SECONDS, LogTail
from pipe.apply.watch.streams import LOOKBACK_MS, QUIET_SECONDS, Captured, Gap, StreamBook, after_streamed, cut_by_agent
from pipe.limits import AGENT_EVENT_BYTES
from pipe.report.console import OutputPrinter
from pipe.runtime.redaction import Redactor
from unit.unit_support import COMMAND_ID, INSTANCE_A, INSTANCE_B, FakeClock

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


def expect(stubber: Stubber, start: int | None, *events: dict[str, Any]) -> None:
    request: dict[str, Any] = {"logGroupName": GROUP, "logStreamNamePrefix": f"{COMMAND_ID}/", "limit": PAGE_EVENTS}
    if start is not None:
        request["startTime"] = start
    stubber.add_response("filter_log_events", {"events": list(events)}, request)


def ticking() -> Callable[[], float]:
    """A clock a second further on at each reading: every poll may read again."""
    ticks = itertools.count()
    return lambda: float(next(ticks))


def tail_for(client: Any, stream: io.StringIO, clock: Callable[[], float] | None = None) -> LogTail:
    clock = clock or ticking()
    printer = OutputPrinter(Redactor(), stream=stream, colour=False)
    return LogTail(client, GROUP, [COMMAND_ID], printer, clock=clock)


def test_prints_each_event_once_in_order(logs: tuple[Any, Stubber]) -> None:
    client, stubber = logs
    out = io.StringIO()
    tail = tail_for(client, out)
    expect(
        stubber,
        None,  # the stream prefix scopes the read: no time of the runner's, so no clock skew
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
    assert tail.streamed_any(INSTANCE_A) and not tail.streamed_any(INSTANCE_B)


def test_looks_back_once_two_instances_are_seen_and_skips_what_it_printed(logs: tuple[Any, Stubber]) -> None:
    client, stubber = logs
    out = io.StringIO()
    tail = tail_for(client, out)
    late = START + 50_000
    first_a = event(INSTANCE_A, "stdout", late, "a1", "a-first")
    first_b = event(INSTANCE_B, "stdout", late + 10, "b1", "b-first")
    expect(stubber, None, first_a, first_b)
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


def test_instance_clock_minutes_behind_the_runner_still_streams(logs: tuple[Any, Stubber]) -> None:
    client, stubber = logs
    out = io.StringIO()
    tail = tail_for(client, out)
    skewed = START - 10 * 60_000  # the instance's clock is ten minutes slow
    expect(stubber, None, event(INSTANCE_A, "stdout", skewed, "1", "early"))
    expect(stubber, skewed, event(INSTANCE_A, "stdout", skewed + 5, "2", "later"))

    assert tail.poll() + tail.poll() == 2
    assert out.getvalue() == f"{INSTANCE_A} | early\n{INSTANCE_A} | later\n"


# --- drain: decided on content, never on counts or clocks ------------------------------------------


class ScriptedLogs:
    """A CloudWatch Logs client whose FilterLogEvents answers the next scripted page (then empty ones)."""

    def __init__(self, *pages: list[dict[str, Any]]) -> None:
        self.pages = list(pages)
        self.calls = 0

    def filter_log_events(self, **request: Any) -> dict[str, Any]:
        self.calls += 1
        return {"events": self.pages.pop(0) if self.pages else []}


def drained(
    pages: list[list[dict[str, Any]]], captured: dict[tuple[str, str], Captured], limit: float = 35
) -> tuple[dict[tuple[str, str], Gap], FakeClock, str]:
    clock = FakeClock()
    out = io.StringIO()
    tail = tail_for(ScriptedLogs(*pages), out, clock)
    return tail.drain(captured, limit, sleep=clock.sleep).gaps, clock, out.getvalue()


def whole(text: str) -> Captured:
    return Captured(text, cut=False)


STDOUT = (INSTANCE_A, "stdout")


@pytest.mark.parametrize(
    ("ssm_copy", "messages"),
    [
        ("one\n\ntwo\n\n\n", ["one", "two"]),  # CloudWatch keeps no empty line
        ("one\ntwo\nthree\n", ["one\ntwo\n", "three"]),  # an agent puts several lines in one event
        ("one\r\ntwo\r\n", ["one\n", "two"]),  # and turns CRLF into LF
        ("a-very-long-line\n", ["a-very-", "long-line"]),  # or splits a long line over two events
        ("", []),  # printed nothing
    ],
)
def test_drain_ends_at_once_when_the_stream_holds_ssms_copy(ssm_copy: str, messages: list[str]) -> None:
    events = [event(INSTANCE_A, "stdout", START + n, str(n), text) for n, text in enumerate(messages)]
    missing, clock, _ = drained([events], {STDOUT: whole(ssm_copy)})

    assert missing == {}
    assert clock.sleeps == []


def test_output_never_streamed_is_handed_back_at_once_when_ssms_copy_is_whole() -> None:
    """The instance role may not write to CloudWatch: waiting could not add anything SSM lacks."""
    missing, clock, out = drained([], {STDOUT: whole("deployed\n"), (INSTANCE_A, "stderr"): whole("")})

    assert missing == {STDOUT: Gap()}
    assert clock.sleeps == [] and out == ""


def test_a_partly_streamed_whole_copy_is_handed_back_with_what_was_printed() -> None:
    missing, clock, _ = drained([[event(INSTANCE_A, "stdout", START, "1", "one")]], {STDOUT: whole("one\ntwo\n")})

    assert missing == {STDOUT: Gap(streamed=3)}
    assert clock.sleeps == []


def test_a_stream_that_is_not_ssms_copy_is_handed_back_with_the_lines_it_printed() -> None:
    missing, _, _ = drained([[event(INSTANCE_A, "stdout", START, "1", "other")]], {STDOUT: whole("one\nother\n")})

    assert list(missing[STDOUT].rest(["one\nother\n"])) == ["one"]  # what was printed is not printed again


def test_a_cut_copy_is_waited_for_until_covered_and_quiet() -> None:
    cut = Captured("x" * 24000, cut=True)
    first = [event(INSTANCE_A, "stdout", START, "1", "x" * 20000)]
    rest = [event(INSTANCE_A, "stdout", START + 1, "2", "x" * 10000)]
    missing, clock, out = drained([first, [], rest], {STDOUT: cut})

    assert missing == {}
    assert out.count("x") == 30000  # CloudWatch had all of it
    polls_after_the_rest = len(clock.sleeps) - 2
    assert polls_after_the_rest * DRAIN_POLL_SECONDS >= QUIET_SECONDS
    assert sum(clock.sleeps) < 35


def test_a_cut_copy_the_stream_never_covers_is_handed_back_at_the_limit() -> None:
    missing, clock, _ = drained(
        [[event(INSTANCE_A, "stdout", START, "1", "x" * 100)]], {STDOUT: Captured("x" * 8000, True)}, 2
    )

    assert missing == {STDOUT: Gap(streamed=100, late=True)}
    assert 2 <= sum(clock.sleeps) <= 2 + DRAIN_POLL_SECONDS


@pytest.mark.parametrize(
    ("chunks", "streamed", "rest"),
    [
        (["one\ntwo\nthree\n"], 3, ["two\nthree\n"]),
        (["one\r\n", "\r\n", "two\r\n", "three\r\n"], 6, ["three\r\n"]),  # S3's lines, blank ones included
        (["one\ntwo\n"], 0, ["one\ntwo\n"]),
        (["one\ntwo\n"], 6, []),
        (["long-line\n"], 5, ["line\n"]),  # the stream ended inside a line
    ],
)
def test_after_streamed_skips_what_the_build_log_already_has(chunks: list[str], streamed: int, rest: list[str]) -> None:
    assert list(after_streamed(chunks, streamed)) == rest


def test_filter_log_events_is_read_at_most_once_a_second_per_command_however_often_polled() -> None:
    logs = ScriptedLogs([event(INSTANCE_A, "stdout", START, "1", "one")])
    clock = FakeClock()
    tail = tail_for(logs, io.StringIO(), clock)

    for _ in range(8):  # the end-of-phase drain polls four times a second
        tail.poll()
        clock.sleep(DRAIN_POLL_SECONDS)

    assert logs.calls == 8 * DRAIN_POLL_SECONDS / FILTER_POLL_SECONDS


def test_an_event_the_agent_cut_at_200000_bytes_is_printed_with_the_next_one_and_a_value_across_the_cut_masked() -> (
    None
):
    # attack 40: the agent reads 200,000 bytes at most per line (AGENT_EVENT_BYTES): a longer line is in two events
    out = io.StringIO()
    redactor = Redactor()
    redactor.add("Wj4r-Hx7q-0123456789")
    printer = OutputPrinter(redactor, stream=out, colour=False)
    book = StreamBook([COMMAND_ID], printer)
    head = "0" * (AGENT_EVENT_BYTES - 8) + "Wj4r-Hx7"
    book.print_read([event(INSTANCE_A, "stdout", START, "1", head)], 0.0)
    assert out.getvalue() == ""  # held for the line's next piece
    book.print_read([event(INSTANCE_A, "stdout", START + 1, "2", "q-0123456789 tail\nnext\n")], 0.0)
    assert out.getvalue() == f"{INSTANCE_A} | {'0' * (AGENT_EVENT_BYTES - 8)}**** tail\n{INSTANCE_A} | next\n"
    assert cut_by_agent(head) and not cut_by_agent(head[4:]) and not cut_by_agent(head + "\n")


def test_an_event_of_whole_lines_near_200000_bytes_sent_after_the_command_ended_is_not_joined_to_the_next() -> None:
    # attack 42: the agent packs whole lines in an event up to 200,000 bytes and, once the command ended, drops the
    # event's last line break (cloudwatchlogsservice.go, getNextMessage and buildEventInfo); 2,000 lines of 99
    # characters make an event of 199,999 bytes with no line break at its end: no cut, its last line is whole
    out = io.StringIO()
    book = StreamBook([COMMAND_ID], OutputPrinter(Redactor(), stream=out, colour=False))
    packed = "\n".join(f"{n:099d}" for n in range(2000))
    book.print_read([event(INSTANCE_A, "stdout", START, "1", packed)], 0.0)
    book.print_read([event(INSTANCE_A, "stdout", START + 1, "2", "next")], 0.0)
    printed = out.getvalue().splitlines()
    assert printed[-2:] == [f"{INSTANCE_A} | {1999:099d}", f"{INSTANCE_A} | next"]
    # one line of 199,998 characters (its line break dropped too) is no cut either: a cut piece is 200,000 bytes
    # (a character it splits arrives as U+FFFD, 3 bytes, no shorter), one ReadSlice, no line break in it
    assert not cut_by_agent(packed) and not cut_by_agent("x" * (AGENT_EVENT_BYTES - 2))
    assert cut_by_agent("x" * (AGENT_EVENT_BYTES - 1) + "\ufffd")
