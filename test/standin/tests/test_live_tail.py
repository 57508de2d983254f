"""The stand-in's CloudWatch Logs read side: StartLiveTail as a real event stream (botocore decodes
it), sessions that push what is ingested after they start, and the quotas as token buckets."""

from __future__ import annotations

import contextlib
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from botocore.exceptions import ClientError

from standin import StandIn, eventstream

ACCOUNT = "123456789012"


@pytest.fixture
def reads(standin: StandIn) -> Iterator[Any]:
    """The stand-in's read side, back to AWS's default quotas after the test, its sessions ended (the
    server sees a closed stream at its next update)."""
    standin.logs_reads.reset()
    yield standin.logs_reads
    standin.logs_reads.reset()
    deadline = time.monotonic() + 5
    while standin.logs_reads.active_sessions and time.monotonic() < deadline:
        time.sleep(0.05)


def no_retries(standin: StandIn) -> Any:
    """A Logs client that shows a refusal at once (the SDK would retry a throttled call)."""
    return boto3.client(  # type: ignore[call-overload]
        "logs",
        endpoint_url=standin.endpoint,
        region_name=standin.region,
        config=Config(inject_host_prefix=False, retries={"mode": "standard", "total_max_attempts": 1}),
        **standin.admin_keys,
    )


def new_group(standin: StandIn) -> tuple[str, str]:
    name = f"/standin/live/{uuid.uuid4().hex[:8]}"
    standin.client("logs").create_log_group(logGroupName=name)
    return name, f"arn:aws:logs:{standin.region}:{ACCOUNT}:log-group:{name}"


def put(standin: StandIn, group: str, stream: str, *messages: str) -> None:
    logs = standin.client("logs")
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)
    logs.put_log_events(
        logGroupName=group, logStreamName=stream, logEvents=[{"timestamp": now, "message": m} for m in messages]
    )


def collect(stream: Any, until: int, seconds: float = 10.0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(updates, their events) read from a session until ``until`` events arrived (or the time is up)."""
    updates: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    for message in stream:
        update = message.get("sessionUpdate")
        if update is not None:
            updates.append(update)
            events.extend(update["sessionResults"])
        if len(events) >= until or time.monotonic() > deadline:
            break
    return updates, events


# --- the framing ---------------------------------------------------------------------------------


def test_messages_carry_the_prelude_headers_and_both_crcs_that_botocores_decoder_checks() -> None:
    raw = eventstream.event("sessionUpdate", {"sessionResults": []})
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    (decoded,) = list(buffer)
    headers: Any = decoded.headers  # botocore-stubs types them loosely

    assert struct.unpack(">I", raw[:4])[0] == len(raw)
    assert headers == {
        ":message-type": "event",
        ":event-type": "sessionUpdate",
        ":content-type": "application/json",
    }
    assert decoded.payload == b'{"sessionResults": []}'
    corrupt = bytearray(raw)
    corrupt[-6] ^= 0xFF  # a payload byte: the message CRC no longer matches
    broken = EventStreamBuffer()
    broken.add_data(bytes(corrupt))
    with pytest.raises(ChecksumMismatch):
        list(broken)


# --- sessions ------------------------------------------------------------------------------------


def test_a_session_starts_then_pushes_each_second_what_is_ingested_after_it_started(
    standin: StandIn, reads: Any
) -> None:
    group, arn = new_group(standin)
    put(standin, group, "cmd-1/i-1/aws-runShellScript/stdout", "before the session")
    response = standin.client("logs").start_live_tail(logGroupIdentifiers=[arn], logStreamNamePrefixes=["cmd-1/"])
    stream = response["responseStream"]
    first = next(iter(stream))
    threading.Timer(0.2, put, (standin, group, "cmd-1/i-1/aws-runShellScript/stdout", "one", "two")).start()
    threading.Timer(0.3, put, (standin, group, "cmd-2/i-1/aws-runShellScript/stdout", "other command")).start()
    updates, events = collect(stream, until=2)
    stream.close()

    assert first["sessionStart"]["logStreamNamePrefixes"] == ["cmd-1/"]
    assert first["sessionStart"]["logGroupIdentifiers"] == [arn]
    assert [e["message"] for e in events] == ["one", "two"]  # not what came before, not another prefix
    assert {e["logGroupIdentifier"] for e in events} == {arn}
    assert all(e["ingestionTime"] >= e["timestamp"] for e in events)
    assert all(u["sessionMetadata"]["sampled"] is False for u in updates)
    assert reads.counters.tail_events >= 2


def test_a_session_times_out_with_session_timeout_exception(standin: StandIn, reads: Any) -> None:
    reads.configure(session_seconds=1.5)
    _, arn = new_group(standin)
    stream = standin.client("logs").start_live_tail(logGroupIdentifiers=[arn])["responseStream"]

    with pytest.raises(ClientError) as raised:
        collect(stream, until=10**6)

    assert raised.value.response["Error"]["Code"] == "SessionTimeoutException"


def test_a_broken_session_ends_with_session_streaming_exception(standin: StandIn, reads: Any) -> None:
    _, arn = new_group(standin)
    stream = standin.client("logs").start_live_tail(logGroupIdentifiers=[arn])["responseStream"]
    next(iter(stream))
    reads.break_sessions()

    with pytest.raises(ClientError) as raised:
        collect(stream, until=10**6)

    assert raised.value.response["Error"]["Code"] == "SessionStreamingException"


def test_more_than_the_update_can_hold_is_sampled_and_says_so(standin: StandIn, reads: Any) -> None:
    reads.configure(events_per_update=3)
    group, arn = new_group(standin)
    stream = standin.client("logs").start_live_tail(logGroupIdentifiers=[arn])["responseStream"]
    next(iter(stream))
    put(standin, group, "c/i/p/stdout", *[f"line {n}" for n in range(7)])
    updates, events = collect(stream, until=3)
    stream.close()

    assert [e["message"] for e in events] == ["line 0", "line 2", "line 4"]
    assert updates[-1]["sessionMetadata"]["sampled"] is True
    assert reads.counters.sampled_updates == 1


@pytest.mark.parametrize(
    ("identifiers", "code"),
    [
        (["/standin/live/by-name"], "InvalidParameterException"),  # "Specify each log group by its ARN"
        ([f"arn:aws:logs:eu-west-1:{ACCOUNT}:log-group:/no/such/group"], "ResourceNotFoundException"),
    ],
)
def test_start_live_tail_refuses_what_aws_refuses(
    standin: StandIn, reads: Any, identifiers: list[str], code: str
) -> None:
    with pytest.raises(ClientError) as raised:
        no_retries(standin).start_live_tail(logGroupIdentifiers=identifiers)

    assert raised.value.response["Error"]["Code"] == code


# --- quotas as token buckets and counters ----------------------------------------------------------


def test_sessions_beyond_the_concurrent_quota_are_refused_until_one_is_closed(standin: StandIn, reads: Any) -> None:
    reads.configure(concurrent_sessions=1)
    _, arn = new_group(standin)
    logs = no_retries(standin)
    first = logs.start_live_tail(logGroupIdentifiers=[arn])["responseStream"]
    next(iter(first))

    with pytest.raises(ClientError) as raised:
        logs.start_live_tail(logGroupIdentifiers=[arn])
    first.close()  # the server notices at its next update and frees the slot
    deadline = time.monotonic() + 5
    while reads.active_sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    again = logs.start_live_tail(logGroupIdentifiers=[arn])["responseStream"]
    again.close()

    assert raised.value.response["Error"]["Code"] == "LimitExceededException"
    assert reads.counters.sessions_refused == 1 and reads.counters.sessions_peak == 1


def test_start_live_tail_and_filter_log_events_are_held_to_their_tps(standin: StandIn, reads: Any) -> None:
    reads.configure(start_live_tail_tps=1, filter_log_events_tps=2)
    group, arn = new_group(standin)
    logs = no_retries(standin)
    logs.start_live_tail(logGroupIdentifiers=[arn])["responseStream"].close()

    with pytest.raises(ClientError) as start_refused:
        logs.start_live_tail(logGroupIdentifiers=[arn])
    answers = []
    for _ in range(3):
        try:
            logs.filter_log_events(logGroupName=group)
            answers.append("ok")
        except ClientError as error:
            answers.append(error.response["Error"]["Code"])

    assert start_refused.value.response["Error"]["Code"] == "ThrottlingException"
    assert answers == ["ok", "ok", "ThrottlingException"]  # the bucket holds one second's worth
    assert reads.counters.filter_throttled == 1 and reads.counters.start_throttled == 1


def test_start_live_tail_calls_are_recorded_and_can_find_the_accounts_tokens_taken(
    standin: StandIn, reads: Any
) -> None:
    _, arn = new_group(standin)
    logs = no_retries(standin)
    reads.throttle_starts(2)
    answers = []
    for _ in range(3):
        try:
            logs.start_live_tail(logGroupIdentifiers=[arn], logStreamNamePrefixes=["c/"])["responseStream"].close()
            answers.append("ok")
        except ClientError as error:
            answers.append(error.response["Error"]["Code"])

    attempts = reads.counters.start_attempts
    assert answers == ["ThrottlingException", "ThrottlingException", "ok"]
    assert [(attempt.prefixes, attempt.answer) for attempt in attempts] == [(("c/",), answer) for answer in answers]
    assert attempts[0].at <= attempts[1].at <= attempts[2].at
    assert reads.counters.start_throttled == 2 and reads.counters.sessions_started == 1


def test_filter_log_events_counts_the_events_and_bytes_it_served(standin: StandIn, reads: Any) -> None:
    group, _ = new_group(standin)
    put(standin, group, "c/i/p/stdout", "héllo", "world")
    standin.client("logs").filter_log_events(logGroupName=group, logStreamNamePrefix="c/")

    assert reads.counters.filter_events == 2
    assert reads.counters.filter_bytes == len("héllo".encode()) + len(b"world")
