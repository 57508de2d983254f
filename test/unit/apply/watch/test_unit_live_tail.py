"""LogTail over Live Tail: one session per phase, what came before read once, each event printed once,
and FilterLogEvents when Live Tail cannot be used (denied, sessions used up, stream broken)."""

from __future__ import annotations

import io
import logging
import queue
import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from pipe.apply.watch.live_starts import (
    LIVE_TAIL_RETRY_SECONDS,
    THROTTLED_RETRY_MAX_SECONDS,
    THROTTLED_RETRY_SECONDS,
    throttled_retry_seconds,
)
from pipe.apply.watch.live_tail import LiveTailSession, log_group_arn
from pipe.apply.watch.log_tail import LogTail
from pipe.apply.watch.streams import Captured, Gap
from pipe.limits import LIVE_TAIL_MAX_PREFIXES
from pipe.report.console import OutputPrinter
from pipe.runtime.redaction import Redactor
from unit.unit_support import COMMAND_ID, INSTANCE_A, INSTANCE_B, INSTANCE_C, FakeClock

GROUP = "/aws/ssm/ssm-deploy"
ARN = log_group_arn("eu-west-1", "123456789012", GROUP)
_END = object()


class FakeStream:
    """A Live Tail response stream: messages pushed by the test, an error to raise, or the end."""

    def __init__(self) -> None:
        self.messages: queue.Queue[Any] = queue.Queue()
        self.closed = False
        self.messages.put({"sessionStart": {"sessionId": "s-1"}})

    def update(self, *events: dict[str, Any], sampled: bool = False) -> None:
        self.messages.put({"sessionUpdate": {"sessionMetadata": {"sampled": sampled}, "sessionResults": list(events)}})

    def fail(self, code: str) -> None:
        self.messages.put(ClientError({"Error": {"Code": code, "Message": "it broke"}}, "StartLiveTail"))

    def close(self) -> None:
        self.closed = True
        self.messages.put(_END)

    def __iter__(self) -> Any:
        while True:
            item = self.messages.get()
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            yield item


class FakeLogs:
    def __init__(self, start_errors: list[str] | None = None, pages: list[list[dict[str, Any]]] | None = None) -> None:
        self.start_errors = list(start_errors or [])
        self.pages = list(pages or [])
        self.sessions: list[tuple[dict[str, Any], FakeStream]] = []
        self.filter_requests: list[dict[str, Any]] = []
        self.start_calls = 0

    def start_live_tail(self, **request: Any) -> dict[str, Any]:
        self.start_calls += 1
        if self.start_errors:
            code = self.start_errors.pop(0)
            raise ClientError({"Error": {"Code": code, "Message": f"{code} here"}}, "StartLiveTail")
        stream = FakeStream()
        self.sessions.append((request, stream))
        return {"responseStream": stream}

    def filter_log_events(self, **request: Any) -> dict[str, Any]:
        self.filter_requests.append(request)
        return {"events": self.pages.pop(0) if self.pages else []}


def pushed(instance: str, ingested: int, message: str, stream: str = "stdout") -> dict[str, Any]:
    return {
        "logStreamName": f"{COMMAND_ID}/{instance}/aws-runShellScript/{stream}",
        "logGroupIdentifier": ARN,
        "timestamp": ingested - 5,
        "ingestionTime": ingested,
        "message": message,
    }


def read(instance: str, ingested: int, event_id: str, message: str) -> dict[str, Any]:
    return {**pushed(instance, ingested, message), "eventId": event_id}


def live_tail(
    logs: FakeLogs,
    out: io.StringIO,
    clock: Any = time.monotonic,
    commands: list[str] | None = None,
    jitter: Any = None,
) -> LogTail:
    printer = OutputPrinter(Redactor(), stream=out, colour=False)
    extra = {"jitter": jitter} if jitter is not None else {}
    return LogTail(logs, GROUP, commands or [COMMAND_ID], printer, clock=clock, group_arn=ARN, **extra)


def poll_until(tail: LogTail, done: Any, seconds: float = 5.0) -> None:
    """Poll while the reader thread hands over what the fake stream holds (no timing is asserted)."""
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        tail.poll()
        time.sleep(0.01)
    assert done(), "the tail did not get there"


def test_one_session_by_command_prefix_reads_what_came_before_once_then_prints_each_pushed_event_once() -> None:
    logs = FakeLogs(pages=[[read(INSTANCE_A, 100, "e1", "before"), read(INSTANCE_A, 200, "e2", "racing")]])
    out = io.StringIO()
    tail = live_tail(logs, out)

    poll_until(tail, lambda: len(logs.filter_requests) == 1)
    request, stream = logs.sessions[0]
    assert request == {"logGroupIdentifiers": [ARN], "logStreamNamePrefixes": [f"{COMMAND_ID}/"]}
    assert "startTime" not in logs.filter_requests[0]  # the command's streams from their start
    # the batch ingested at 200 was read and pushed: printed once; the next batch only pushed
    stream.update(pushed(INSTANCE_A, 200, "racing"), pushed(INSTANCE_B, 250, "b"), pushed(INSTANCE_A, 300, "after"))
    poll_until(tail, lambda: tail.counts.events_read == 5)
    tail.close()

    assert out.getvalue().splitlines() == [
        f"{INSTANCE_A} | before",
        f"{INSTANCE_A} | racing",
        f"{INSTANCE_B} | b",
        f"{INSTANCE_A} | after",
    ]
    assert len(logs.filter_requests) == 1  # Live Tail costs no further FilterLogEvents calls
    assert tail.counts.events_printed == 4 and tail.live
    deadline = time.monotonic() + 30
    while not stream.closed and time.monotonic() < deadline:  # closed by a thread of its own
        time.sleep(0.01)
    assert stream.closed


def test_closing_a_session_does_not_wait_for_the_read_in_progress() -> None:
    # urllib3 closes the response under the lock its reader holds while blocked in recv: the close
    # returns with the next update, up to a second later on AWS. Here the close blocks until released.
    released = threading.Event()

    class SlowToClose(FakeStream):
        def close(self) -> None:
            released.wait()
            super().close()

    stream = SlowToClose()
    logs = FakeLogs()
    logs.start_live_tail = lambda **request: {"responseStream": stream}  # type: ignore[method-assign]
    session = LiveTailSession(logs, ARN, [f"{COMMAND_ID}/"])
    session.start()
    threading.Timer(20, released.set).start()  # a close that waited returns only after this

    session.close()
    returned_while_blocked = not released.is_set()
    released.set()

    assert returned_while_blocked


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("AccessDeniedException", "allow logs:StartLiveTail"),
        ("LimitExceededException", "concurrent CloudWatch Logs Live Tail sessions are all in use"),
    ],
)
def test_without_live_tail_it_says_why_once_and_reads_with_filter_log_events(
    code: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    logs = FakeLogs(start_errors=[code], pages=[[read(INSTANCE_A, 100, "e1", "one")]])
    out = io.StringIO()
    clock = FakeClock()
    tail = live_tail(logs, out, clock)

    with caplog.at_level(logging.WARNING, logger="ssm-deploy"):
        assert tail.poll() == 0
        clock.sleep(1)
        assert tail.poll() == 1
        clock.sleep(1)
        tail.poll()

    warnings = [r.getMessage() for r in caplog.records if "falls back to FilterLogEvents" in r.getMessage()]
    assert len(warnings) == 1 and reason in warnings[0]
    assert not tail.live and tail.available
    assert out.getvalue() == f"{INSTANCE_A} | one\n"


def test_a_log_group_that_does_not_exist_yet_is_tried_again_later_without_reading() -> None:
    logs = FakeLogs(start_errors=["ResourceNotFoundException"])
    clock = FakeClock()
    tail = live_tail(logs, io.StringIO(), clock)

    tail.poll()
    clock.sleep(LIVE_TAIL_RETRY_SECONDS / 2)
    tail.poll()
    assert logs.sessions == [] and logs.filter_requests == []
    clock.sleep(LIVE_TAIL_RETRY_SECONDS)
    tail.poll()

    assert len(logs.sessions) == 1 and tail.live
    tail.close()


class LongestWait:
    """The jitter that always waits the longest it may, recording the bounds it was given."""

    def __init__(self) -> None:
        self.bounds: list[tuple[float, float]] = []

    def __call__(self, low: float, high: float) -> float:
        self.bounds.append((low, high))
        return high


def test_a_throttled_start_is_tried_again_after_a_random_wait_whose_bound_doubles_and_loses_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """StartLiveTail's 5 TPS are the account's: pipelines started together are throttled. Each waits
    at least a second and a random part of a bound that doubles (up to 8 s), then goes on live."""
    logs = FakeLogs(start_errors=["ThrottlingException"] * 3, pages=[[read(INSTANCE_A, 100, "e1", "before")]])
    out = io.StringIO()
    clock = FakeClock()
    jitter = LongestWait()
    tail = live_tail(logs, out, clock, jitter=jitter)

    with caplog.at_level(logging.WARNING, logger="ssm-deploy"):
        tail.poll()
        for tries, wait in enumerate((2.0, 4.0, 8.0), start=1):  # the longest each random wait may be
            clock.sleep(wait - 0.01)
            tail.poll()
            assert logs.start_calls == tries, "tried again before its wait was over"
            clock.sleep(0.01)
            tail.poll()
        poll_until(tail, lambda: tail.counts.events_printed == 1)
    tail.close()

    assert logs.start_calls == 4 and len(logs.sessions) == 1 and tail.live
    assert jitter.bounds == [(1.0, 2.0), (1.0, 4.0), (1.0, 8.0)]
    assert out.getvalue() == f"{INSTANCE_A} | before\n"  # what came before the late session, read once
    assert "falls back" not in caplog.text and not caplog.records


def test_the_wait_after_a_throttled_start_is_between_one_second_and_its_cap() -> None:
    assert [throttled_retry_seconds(n, lambda low, high: high) for n in (1, 2, 3, 4, 50, 5000)] == [2, 4, 8, 8, 8, 8]
    waits = [throttled_retry_seconds(n) for n in range(1, 6) for _ in range(200)]
    assert min(waits) >= THROTTLED_RETRY_SECONDS and max(waits) <= THROTTLED_RETRY_MAX_SECONDS
    assert len({round(wait, 3) for wait in waits}) > 100  # spread, so pipelines that collided do not again


def test_a_command_sent_later_gets_a_session_of_its_own_even_when_its_first_start_is_throttled() -> None:
    later = "1b7a4a1e-5c2f-4d8e-9a3b-1c2d3e4f5a6b"
    logs = FakeLogs()
    clock = FakeClock()
    tail = live_tail(logs, io.StringIO(), clock, commands=[COMMAND_ID], jitter=LongestWait())
    poll_until(tail, lambda: len(logs.filter_requests) == 1)

    logs.start_errors = ["ThrottlingException"]
    tail.add_command(later)
    tail.poll()
    assert len(logs.sessions) == 1  # throttled: tried again later, the first session goes on
    clock.sleep(2.0)
    poll_until(tail, lambda: len(logs.filter_requests) == 2)
    tail.close()

    assert [request["logStreamNamePrefixes"] for request, _ in logs.sessions] == [[f"{COMMAND_ID}/"], [f"{later}/"]]
    assert logs.filter_requests[1]["logStreamNamePrefix"] == f"{later}/" and tail.live


def test_a_command_sent_later_that_gets_no_session_is_read_at_the_end_while_the_others_stay_live() -> None:
    later = "1b7a4a1e-5c2f-4d8e-9a3b-1c2d3e4f5a6b"
    logs = FakeLogs()
    tail = live_tail(logs, io.StringIO(), commands=[COMMAND_ID])
    poll_until(tail, lambda: len(logs.filter_requests) == 1)

    logs.start_errors = ["LimitExceededException"]
    tail.add_command(later)
    tail.poll()
    tail.poll()
    assert logs.start_calls == 2 and tail.live  # asked once; no fallback for the others
    tail.drain({}, 0, sleep=lambda _: None)
    tail.close()

    assert [request["logStreamNamePrefix"] for request in logs.filter_requests] == [f"{COMMAND_ID}/", f"{later}/"]


def test_a_broken_stream_falls_back_to_filter_log_events_without_printing_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logs = FakeLogs()
    out = io.StringIO()
    tail = live_tail(logs, out)
    poll_until(tail, lambda: len(logs.filter_requests) == 1)
    _, stream = logs.sessions[0]
    stream.update(pushed(INSTANCE_A, 100, "one"))
    poll_until(tail, lambda: tail.counts.events_printed == 1)
    logs.pages = [[read(INSTANCE_A, 100, "e1", "one"), read(INSTANCE_A, 200, "e2", "two")]]

    with caplog.at_level(logging.WARNING, logger="ssm-deploy"):
        stream.fail("SessionStreamingException")
        poll_until(tail, lambda: not tail.live)
        time.sleep(1.1)  # FilterLogEvents at most once a second per command
        poll_until(tail, lambda: tail.counts.events_printed == 2)

    assert "the Live Tail stream broke (SessionStreamingException" in caplog.text
    assert out.getvalue() == f"{INSTANCE_A} | one\n{INSTANCE_A} | two\n"


def test_a_session_that_timed_out_after_three_hours_is_started_again() -> None:
    logs = FakeLogs()
    tail = live_tail(logs, io.StringIO())
    poll_until(tail, lambda: len(logs.filter_requests) == 1)
    logs.sessions[0][1].update(pushed(INSTANCE_A, 100, "one"))
    poll_until(tail, lambda: tail.counts.events_printed == 1)

    logs.sessions[0][1].fail("SessionTimeoutException")
    poll_until(tail, lambda: len(logs.filter_requests) == 2)

    assert len(logs.sessions) == 2 and tail.live
    assert "startTime" in logs.filter_requests[1]  # only a look-back, not the whole run again
    tail.close()


def test_a_phase_of_many_commands_takes_one_session_per_hundred_prefixes() -> None:
    commands = [f"{n:08d}-0000-4000-8000-000000000000" for n in range(LIVE_TAIL_MAX_PREFIXES + 1)]
    logs = FakeLogs()
    tail = live_tail(logs, io.StringIO(), commands=commands)
    tail.poll()
    tail.close()

    assert [len(request["logStreamNamePrefixes"]) for request, _ in logs.sessions] == [LIVE_TAIL_MAX_PREFIXES, 1]


def test_a_sampled_update_is_announced_and_no_stream_is_then_taken_as_complete(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logs = FakeLogs()
    tail = live_tail(logs, io.StringIO())
    poll_until(tail, lambda: len(logs.filter_requests) == 1)
    logs.sessions[0][1].update(pushed(INSTANCE_A, 100, "one"), sampled=True)
    with caplog.at_level(logging.WARNING, logger="ssm-deploy"):
        poll_until(tail, lambda: tail.counts.events_printed == 1)

    copy = "zero\none\ntwo\n"
    missing = tail.drain({(INSTANCE_A, "stdout"): Captured(copy, cut=False)}, 0, sleep=lambda _: None).gaps
    tail.close()

    assert "Live output is incomplete" in caplog.text
    # events were dropped: the lines of SSM's copy Live Tail left out are shown, the one it printed is not
    assert list(missing[(INSTANCE_A, "stdout")].rest([copy])) == ["zero", "two"]


def test_the_drain_does_not_wait_for_what_live_tail_is_still_delivering() -> None:
    # Live Tail sends each second's events a second later: at the end of a phase the last lines are
    # usually on their way. SSM's whole copy has them, so nothing is waited for, nor read again.
    logs = FakeLogs()
    clock = FakeClock()
    tail = live_tail(logs, io.StringIO(), clock)
    poll_until(tail, lambda: len(logs.filter_requests) == 1)
    logs.sessions[0][1].update(pushed(INSTANCE_A, 100, "first"))
    poll_until(tail, lambda: tail.counts.events_printed == 1)
    copy = "first\nlast\n"

    drained = tail.drain({(INSTANCE_A, "stdout"): Captured(copy, cut=False, command_id=COMMAND_ID)}, 35, clock.sleep)
    tail.close()

    gap = drained.gaps[(INSTANCE_A, "stdout")]
    assert gap.behind and list(gap.rest([copy])) == ["last\n"]  # the rest, from SSM's copy
    assert clock.sleeps == [] and drained.waited == 0
    assert len(logs.filter_requests) == 1  # only the read of what came before the session


def test_a_stream_nothing_of_which_came_is_read_once_instead_of_waited_for() -> None:
    # B printed only in its last second: nothing of it was pushed yet. One FilterLogEvents read brings
    # it (so the build log shows it as live output); C's output is not in CloudWatch at all.
    logs = FakeLogs()
    clock = FakeClock()
    out = io.StringIO()
    tail = live_tail(logs, out, clock)
    poll_until(tail, lambda: len(logs.filter_requests) == 1)
    logs.pages = [[read(INSTANCE_B, 100, "e1", "only line")]]
    captured = {
        (INSTANCE_B, "stdout"): Captured("only line\n", cut=False, command_id=COMMAND_ID),
        (INSTANCE_C, "stdout"): Captured("x\n", cut=False, command_id=COMMAND_ID),
    }

    drained = tail.drain(captured, 35, clock.sleep)
    tail.close()

    assert out.getvalue().splitlines() == [f"{INSTANCE_B} | only line"]
    assert drained.gaps == {(INSTANCE_C, "stdout"): Gap()}  # C's printed whole from SSM's copy
    assert len(logs.filter_requests) == 2  # one read for the command, not one per instance
    assert clock.sleeps == []


def test_the_log_group_arn_is_in_the_regions_partition() -> None:
    assert log_group_arn("eu-west-1", "123456789012", "/aws/ssm/x") == (
        "arn:aws:logs:eu-west-1:123456789012:log-group:/aws/ssm/x"
    )
    assert log_group_arn("us-gov-west-1", "123456789012", "/g").startswith("arn:aws-us-gov:logs:us-gov-west-1:")
    assert log_group_arn("cn-north-1", "123456789012", "/g").startswith("arn:aws-cn:logs:")
