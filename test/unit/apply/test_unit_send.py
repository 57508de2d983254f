"""pipe.apply.send: SendCommand runs at most once, even when its answer is lost.

A fake SSM client scripts what SendCommand and ListCommands answer; the botocore tests use a real
client whose HTTP layer is replaced through botocore's ``before-send`` event."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

from pipe.apply import send
from pipe.apply.send import (
    RECONCILE_DELAYS,
    RECONCILE_PAGES,
    forbid_unsafe_retries,
    marked_comment,
    may_have_arrived,
    send_command,
    send_commands,
)
from pipe.aws.clients import client_config
from pipe.errors import PipeError
from pipe.limits import COMMENT_LIMIT
from unit.unit_support import COMMAND_ID, INSTANCE_A, REGION, make_settings, spec_for, ssm_client

SCRIPT = ["echo deploying"]
URL = "https://ssm.eu-west-1.amazonaws.com/"
OTHER_ID = "11111111-2222-4333-8444-555555555555"
LOST = ConnectionClosedError(endpoint_url=URL)
Listing = Callable[["FakeSSM"], dict[str, Any]]


def marker_of(comment: str) -> str:
    found = re.search(r"\(ref ([0-9a-f]{8})\)$", comment)
    assert found, comment
    return found.group(1)


class FakeSSM:
    """SendCommand answers from ``sends`` (a command id, or an error to raise); each ListCommands
    page is built by the next of ``listings`` (an empty page once they run out)."""

    def __init__(self, sends: list[str | Exception], listings: list[Listing | Exception] | None = None) -> None:
        self.meta = ssm_client().meta  # forbid_unsafe_retries registers on its events
        self._sends = sends
        self._listings = listings or []
        self.requests: list[dict[str, Any]] = []
        self.list_requests: list[dict[str, Any]] = []
        self.cancelled: list[dict[str, Any]] = []

    def send_command(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        outcome = self._sends.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return {"Command": {"CommandId": outcome}}

    def list_commands(self, **request: Any) -> dict[str, Any]:
        self.list_requests.append(json.loads(json.dumps(request)))
        listing = self._listings.pop(0) if self._listings else (lambda _: {"Commands": []})
        if isinstance(listing, Exception):
            raise listing
        return listing(self)

    def cancel_command(self, **request: Any) -> dict[str, Any]:
        self.cancelled.append(request)
        return {}

    @property
    def comment(self) -> str:
        return str(self.requests[0]["Comment"])


def listing(*rows: tuple[str, str], next_token: str | None = None) -> Listing:
    """A ListCommands page of (command id, comment) rows; the comment ``"SENT"`` stands for the
    comment of the first SendCommand request, marker included."""

    def page(ssm: FakeSSM) -> dict[str, Any]:
        commands = [
            {
                "CommandId": command_id,
                "Comment": ssm.comment if comment == "SENT" else comment,
                "RequestedDateTime": datetime.datetime(2026, 1, 1, 12, 0, number, tzinfo=datetime.UTC),
            }
            for number, (command_id, comment) in enumerate(rows)
        ]
        return {"Commands": commands, **({"NextToken": next_token} if next_token else {})}

    return page


def server_error(status: int, code: str) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": "boom"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "SendCommand")


def settings(**overrides: Any) -> Any:
    return make_settings(stream_output=False, instance_ids=[INSTANCE_A], **overrides)


# --- the comment marker --------------------------------------------------------------------------


def send_one(ssm: Any, **options: Any) -> str:
    chosen = settings()
    return send_command(ssm, chosen, spec_for(chosen, SCRIPT), (INSTANCE_A,), **options)


def test_the_marker_follows_the_comment_readably() -> None:
    assert (
        marked_comment("ssm-deploy team/app#42 0123456", "0a1b2c3d") == "ssm-deploy team/app#42 0123456 (ref 0a1b2c3d)"
    )


def test_a_long_comment_is_cut_and_the_marker_kept_within_the_limit() -> None:
    comment = marked_comment("x" * 300, "0a1b2c3d")
    assert len(comment) == COMMENT_LIMIT
    assert comment.endswith("… (ref 0a1b2c3d)")


def test_every_send_has_its_own_marker() -> None:
    ssm = FakeSSM([COMMAND_ID, OTHER_ID])
    send_one(ssm)
    send_one(ssm)
    first, second = (marker_of(request["Comment"]) for request in ssm.requests)
    assert first != second


# --- which errors leave the outcome unknown ------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "unknown"),
    [
        (ConnectionClosedError(endpoint_url=URL), True),  # reset after the request went out
        (ReadTimeoutError(endpoint_url=URL, error="timed out"), True),
        (server_error(500, "InternalServerError"), True),
        (server_error(503, "ServiceUnavailable"), True),
        (EndpointConnectionError(endpoint_url=URL), False),  # never connected
        (server_error(400, "ThrottlingException"), False),  # AWS answered: refused
        (server_error(400, "InvalidInstanceId"), False),
    ],
)
def test_may_have_arrived(error: Exception, unknown: bool) -> None:
    assert may_have_arrived(error) is unknown


# --- reconciling an unknown outcome --------------------------------------------------------------


def test_a_lost_answer_is_found_by_its_marker_and_not_sent_again() -> None:
    ssm = FakeSSM([LOST], [listing((OTHER_ID, "someone else's command"), (COMMAND_ID, "SENT"))])
    sleeps: list[float] = []
    (sent,) = send_commands(ssm, settings(), spec_for(settings(), SCRIPT), sleep=sleeps.append)

    assert sent.command_id == COMMAND_ID
    assert sent.instance_ids == (INSTANCE_A,)
    assert sent.comment == ssm.comment
    assert len(ssm.requests) == 1
    assert sleeps == [0.0]


def test_a_command_listed_late_is_found_within_the_wait() -> None:
    ssm = FakeSSM([LOST], [listing(), listing(), listing((COMMAND_ID, "SENT"))])
    sleeps: list[float] = []

    assert send_one(ssm, sleep=sleeps.append) == COMMAND_ID
    assert len(ssm.requests) == 1
    assert sleeps == list(RECONCILE_DELAYS[:3])


def test_nothing_listed_within_the_wait_means_it_never_arrived_so_it_is_sent_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ssm = FakeSSM([LOST, COMMAND_ID])
    sleeps: list[float] = []

    assert send_one(ssm, sleep=sleeps.append) == COMMAND_ID
    assert len(ssm.requests) == 2
    assert ssm.requests[0] == ssm.requests[1]  # the same request: a late listing would still match
    assert sleeps == list(RECONCILE_DELAYS)
    assert "never reached AWS. Sending it again." in caplog.text


def test_the_search_asks_for_the_commands_since_before_the_send() -> None:
    before = datetime.datetime.now(datetime.UTC)
    ssm = FakeSSM([LOST], [listing((COMMAND_ID, "SENT"))])
    send_one(ssm, sleep=lambda _: None)

    ((filter_,),) = [request["Filters"] for request in ssm.list_requests]
    assert filter_["key"] == "InvokedAfter"
    since = datetime.datetime.strptime(filter_["value"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    assert since <= before - datetime.timedelta(minutes=14)  # AWS's clock may be behind ours


def test_the_marker_is_found_on_a_later_page() -> None:
    ssm = FakeSSM([LOST], [listing((OTHER_ID, "other"), next_token="page-2"), listing((COMMAND_ID, "SENT"))])

    assert send_one(ssm, sleep=lambda _: None) == COMMAND_ID
    assert [request.get("NextToken") for request in ssm.list_requests] == [None, "page-2"]


def test_more_commands_than_the_search_covers_is_inconclusive_and_nothing_is_sent_again() -> None:
    pages: list[Listing | Exception] = [listing((OTHER_ID, "other"), next_token="more")] * RECONCILE_PAGES
    ssm = FakeSSM([LOST], pages)
    with pytest.raises(PipeError) as error:
        send_one(ssm, sleep=lambda _: None)

    assert len(ssm.requests) == 1
    assert "a command may be running on the instances" in str(error.value)


def test_list_commands_failing_leaves_it_unknown_and_nothing_is_sent_again() -> None:
    refused = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "ListCommands")
    ssm = FakeSSM([LOST], [refused])
    with pytest.raises(PipeError) as error:
        send_one(ssm, sleep=lambda _: None)

    message = str(error.value)
    assert len(ssm.requests) == 1
    assert "SendCommand's answer was lost (Connection was closed before we received a valid response" in message
    assert "(ListCommands: AccessDeniedException: no)" in message
    assert "a command may be running on the instances" in message
    assert f'look for the comment "{ssm.comment}"' in message


def test_an_answer_lost_every_time_ends_after_the_last_send_with_nothing_sent() -> None:
    ssm = FakeSSM([LOST, LOST, LOST])
    with pytest.raises(PipeError) as error:
        send_one(ssm, sleep=lambda _: None)

    assert len(ssm.requests) == send.MAX_SENDS
    assert str(error.value).endswith("appeared in ListCommands: nothing was sent.")


def test_two_listed_commands_keep_the_oldest_and_cancel_the_other() -> None:
    ssm = FakeSSM([LOST], [listing((COMMAND_ID, "SENT"), (OTHER_ID, "SENT"))])

    assert send_one(ssm, sleep=lambda _: None) == COMMAND_ID
    assert ssm.cancelled == [{"CommandId": OTHER_ID}]


def test_a_5xx_answer_is_looked_for() -> None:
    ssm = FakeSSM([server_error(500, "InternalServerError")], [listing((COMMAND_ID, "SENT"))])

    assert send_one(ssm, sleep=lambda _: None) == COMMAND_ID
    assert len(ssm.list_requests) == 1


def test_a_refusal_is_reported_without_looking() -> None:
    ssm = FakeSSM([server_error(400, "InvalidInstanceId")])
    with pytest.raises(PipeError, match="INSTANCE_IDS: SSM refused the instances"):
        send_one(ssm, sleep=lambda _: None)
    assert ssm.list_requests == []


def test_a_connection_that_never_opened_sent_nothing_and_is_not_looked_for() -> None:
    ssm = FakeSSM([EndpointConnectionError(endpoint_url=URL)])
    with pytest.raises(PipeError) as error:
        send_one(ssm, sleep=lambda _: None)
    reason = f'Could not connect to the endpoint URL: "{URL}"'
    assert str(error.value) == f"Could not reach AWS to send the command ({reason}): nothing was sent."
    assert ssm.list_requests == []


# --- botocore's own retries of SendCommand -------------------------------------------------------


class Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def answer(status: int, body: dict[str, Any]) -> AWSResponse:
    headers = HTTPHeaders()
    headers["Content-Type"] = "application/x-amz-json-1.1"
    return AWSResponse(URL, status, headers, Body(json.dumps(body).encode()))


def http_layer(client: Any, outcomes: list[AWSResponse | Exception]) -> list[str]:
    """Answer the client's requests with ``outcomes`` in turn instead of the network; returns the
    list of operations sent, one per attempt."""
    attempts: list[str] = []

    def respond(request: Any, **_: Any) -> AWSResponse:
        attempts.append(request.headers["X-Amz-Target"].decode())
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    client.meta.events.register("before-send.ssm", respond)
    return attempts


@pytest.fixture
def retrying_ssm(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A real SSM client with the pipe's retry settings: standard mode, three attempts."""
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    session = boto3.Session(aws_access_key_id="AKIAUNITTESTEXAMPLE", aws_secret_access_key="unit-test-secret-key")
    return session.client("ssm", region_name=REGION, config=client_config())


def send_request() -> dict[str, Any]:
    return {"InstanceIds": [INSTANCE_A], "DocumentName": "AWS-RunShellScript"}


def test_botocore_does_not_retry_a_send_command_whose_connection_dropped(retrying_ssm: Any) -> None:
    forbid_unsafe_retries(retrying_ssm)
    attempts = http_layer(retrying_ssm, [ConnectionClosedError(endpoint_url=URL), answer(200, {})])
    with pytest.raises(ConnectionClosedError):
        retrying_ssm.send_command(**send_request())
    assert attempts == ["AmazonSSM.SendCommand"]


def test_botocore_does_not_retry_a_send_command_answered_with_a_5xx(retrying_ssm: Any) -> None:
    forbid_unsafe_retries(retrying_ssm)
    attempts = http_layer(retrying_ssm, [answer(500, {"__type": "InternalServerError", "message": "boom"})])
    with pytest.raises(ClientError):
        retrying_ssm.send_command(**send_request())
    assert len(attempts) == 1


def test_botocore_still_retries_a_throttled_send_command(retrying_ssm: Any) -> None:
    forbid_unsafe_retries(retrying_ssm)
    throttled = answer(400, {"__type": "ThrottlingException", "message": "Rate exceeded"})
    attempts = http_layer(retrying_ssm, [throttled, answer(200, {"Command": {"CommandId": COMMAND_ID}})])

    assert retrying_ssm.send_command(**send_request())["Command"]["CommandId"] == COMMAND_ID
    assert len(attempts) == 2


def test_other_calls_keep_their_retries(retrying_ssm: Any) -> None:
    forbid_unsafe_retries(retrying_ssm)
    attempts = http_layer(retrying_ssm, [ConnectionClosedError(endpoint_url=URL), answer(200, {"Commands": []})])

    assert retrying_ssm.list_commands()["Commands"] == []
    assert attempts == ["AmazonSSM.ListCommands", "AmazonSSM.ListCommands"]
