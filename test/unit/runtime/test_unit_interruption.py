"""A stop between botocore's retry attempts: a real client, a fake endpoint, no network, no waiting."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.endpoint
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.config import Config
from botocore.exceptions import ClientError

from pipe.aws.clients import DEFAULT_MAX_ATTEMPTS, client_config
from pipe.errors import DeployStopped
from pipe.runtime.interruption import Interrupted, StopRequests, stop_between_attempts
from unit.unit_support import INSTANCE_A, REGION

THROTTLED = (400, {"__type": "ThrottlingException", "message": "Rate exceeded"})
COMMAND_ID = "0b7a4a1e-5c2f-4d8e-9a3b-1c2d3e4f5a6b"


class _Body:
    def __init__(self, content: bytes) -> None:
        self._content = content

    def stream(self, **_: object) -> Iterator[bytes]:
        yield self._content


@dataclass
class FakeEndpoint:
    """Answers every attempt that reaches the wire (``before-send``, after the pipe's hook) from
    ``answers`` (the last one repeats) and records the operation of each attempt."""

    answers: list[tuple[int, dict[str, Any]]]
    attempts: list[str] = field(default_factory=list)

    def __call__(self, request: Any, event_name: str, **_: object) -> AWSResponse:
        self.attempts.append(event_name.rsplit(".", 1)[-1])
        status, body = self.answers[min(len(self.attempts), len(self.answers)) - 1]
        headers = HTTPHeaders()
        headers["Content-Type"] = "application/x-amz-json-1.1"
        return AWSResponse(request.url, status, headers, _Body(json.dumps(body).encode()))

    def serve(self, client: Any) -> None:
        """Answer ``client``'s attempts; registered after the pipe's hook, so the hook runs first."""
        client.meta.events.register("before-send", self)


@pytest.fixture
def backoffs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """botocore's back-off delays between attempts, recorded instead of slept (``on_backoff`` runs in them)."""
    slept: list[float] = []

    class Clock:
        on_backoff: Callable[[], None] = staticmethod(lambda: None)

        @staticmethod
        def sleep(seconds: float) -> None:
            slept.append(seconds)
            Clock.on_backoff()

    monkeypatch.setattr(botocore.endpoint, "time", Clock)
    return slept


def ssm_client(stops: StopRequests, endpoint: FakeEndpoint, config: Config | None = None) -> Any:
    session = boto3.session.Session(aws_access_key_id="AKIAFAKE", aws_secret_access_key="fake", region_name=REGION)
    client = session.client("ssm", config=config or client_config())
    stop_between_attempts(client, stops)
    endpoint.serve(client)
    return client


def sigint_during_backoff(stops: StopRequests) -> None:
    botocore.endpoint.time.on_backoff = lambda: stops.handle(signal.SIGINT, None)  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["adaptive", "standard", "legacy"])
def test_a_stop_during_the_backoff_ends_the_call_before_the_next_attempt(
    backoffs: list[float], monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("AWS_RETRY_MODE", mode)
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    stops, endpoint = StopRequests(), FakeEndpoint([THROTTLED])
    ssm = ssm_client(stops, endpoint)
    sigint_during_backoff(stops)

    with pytest.raises(Interrupted, match="Received SIGINT"):
        ssm.describe_instance_information()

    assert endpoint.attempts == ["DescribeInstanceInformation"]  # not one more
    assert len(backoffs) == 1


def test_without_a_stop_every_attempt_is_made(backoffs: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    """The same throttled call, not stopped: the retries the hook cuts short really happen."""
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    endpoint = FakeEndpoint([THROTTLED])
    ssm = ssm_client(StopRequests(), endpoint)

    with pytest.raises(ClientError, match="ThrottlingException"):
        ssm.describe_instance_information()

    assert len(endpoint.attempts) >= DEFAULT_MAX_ATTEMPTS
    assert len(backoffs) == len(endpoint.attempts) - 1


def test_a_stop_before_the_call_sends_nothing(backoffs: list[float]) -> None:
    stops, endpoint = StopRequests(), FakeEndpoint([(200, {"InstanceInformationList": []})])
    ssm = ssm_client(stops, endpoint)
    stops.handle(signal.SIGTERM, None)

    with pytest.raises(Interrupted, match="Received SIGTERM"):
        ssm.get_command_invocation(CommandId=COMMAND_ID, InstanceId=INSTANCE_A)

    assert endpoint.attempts == []


def test_send_command_and_every_call_after_it_are_never_cut_short(backoffs: list[float]) -> None:
    """SendCommand's id must not be lost; after it, the follow loop acts on the stop and cancels."""
    sent = (200, {"Command": {"CommandId": COMMAND_ID}})
    stops, endpoint = StopRequests(), FakeEndpoint([THROTTLED, sent, (200, {"InstanceInformationList": []})])
    ssm = ssm_client(stops, endpoint, Config(retries={"mode": "standard", "max_attempts": 3}))
    stops.handle(signal.SIGINT, None)  # already stopped when SendCommand starts

    response = ssm.send_command(InstanceIds=[INSTANCE_A], DocumentName="AWS-RunShellScript")
    ssm.describe_instance_information()

    assert response["Command"]["CommandId"] == COMMAND_ID
    assert endpoint.attempts == ["SendCommand", "SendCommand", "DescribeInstanceInformation"]
    assert stops.sending_started


def test_one_stop_requests_is_shared_by_every_client(backoffs: list[float]) -> None:
    """SendCommand on the SSM client also ends interruption on the others (EC2, Logs, S3...)."""
    stops = StopRequests()
    ssm = ssm_client(stops, FakeEndpoint([(200, {"Command": {"CommandId": COMMAND_ID}})]))
    logs_endpoint = FakeEndpoint([(200, {"events": []})])
    session = boto3.session.Session(aws_access_key_id="AKIAFAKE", aws_secret_access_key="fake", region_name=REGION)
    logs = session.client("logs", config=client_config())
    stop_between_attempts(logs, stops)
    logs_endpoint.serve(logs)

    ssm.send_command(InstanceIds=[INSTANCE_A], DocumentName="AWS-RunShellScript")
    stops.handle(signal.SIGTERM, None)
    logs.filter_log_events(logGroupName="/aws/ssm/ssm-deploy")

    assert logs_endpoint.attempts == ["FilterLogEvents"]


def test_a_stop_the_pipe_asks_for_itself_acts_as_a_signal_with_its_reason() -> None:
    stops = StopRequests()
    stops.raise_if_requested()  # nothing asked yet
    reason = "The deploy lock /deploy-lock/web/prod was lost (it was deleted), so the deploy was stopped"

    stops.stop(reason)

    with pytest.raises(Interrupted) as before_sending:
        stops.raise_if_requested()
    assert str(before_sending.value) == reason
    with pytest.raises(DeployStopped) as while_deploying:
        stops.raise_stopped_if_requested("during the bake of batch 1/2: nothing more was sent.")
    assert str(while_deploying.value) == f"{reason} during the bake of batch 1/2: nothing more was sent."
    stops.handle(signal.SIGTERM, None)
    with pytest.raises(Interrupted, match="Received SIGTERM: the pipeline was stopped"):
        stops.raise_if_requested()
