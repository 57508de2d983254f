"""pipe.apply.watch.results.fetch_result and pipe.apply.send with a stubbed SSM client."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from mypy_boto3_ssm.client import SSMClient

from pipe.apply.send import (
    cancel_command,
    send_command,
    send_commands,
    send_parameters,
)
from pipe.apply.watch.results import NOT_YET_ATTEMPTS, fetch_result
from pipe.config.settings import DeploySettings
from pipe.errors import PipeError
from pipe.model import Invocation, SentCommand, Target
from unit.unit_support import COMMAND_ID, INSTANCE_A, INSTANCE_B, REGION, make_settings, spec_for, ssm_client

GET_PARAMS = {"CommandId": COMMAND_ID, "InstanceId": INSTANCE_A}
SCRIPT = ["# ssm-deploy team/app#42 0123456", "echo deploying", "./deploy.sh"]


def send_one(client: SSMClient, settings: DeploySettings) -> str:
    return send_command(client, settings, spec_for(settings, SCRIPT), tuple(settings.instance_ids))


@pytest.fixture
def stubbed() -> Iterator[tuple[SSMClient, Stubber]]:
    client = ssm_client()
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def not_yet(stubber: Stubber) -> None:
    stubber.add_client_error(
        "get_command_invocation",
        service_error_code="InvocationDoesNotExist",
        http_status_code=400,
        expected_params=GET_PARAMS,
    )


def invocation_response(**fields: Any) -> dict[str, Any]:
    response: dict[str, Any] = {
        "CommandId": COMMAND_ID,
        "InstanceId": INSTANCE_A,
        "Status": "Success",
        "StatusDetails": "Success",
        "ResponseCode": 0,
        "ExecutionElapsedTime": "PT3.25S",
        "StandardOutputContent": "deployed\n",
        "StandardErrorContent": "",
    }
    response.update(fields)
    return response


# --- fetch_result -------------------------------------------------------------------------------


def test_fetch_result_retries_until_the_invocation_exists(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    not_yet(stubber)
    not_yet(stubber)
    stubber.add_response(
        "get_command_invocation",
        invocation_response(
            Status="Failed",
            StatusDetails="Failed",
            ResponseCode=3,
            StandardOutputContent="step 1\nstep 2\n",
            StandardErrorContent="boom\n",
        ),
        GET_PARAMS,
    )
    sleeps: list[float] = []
    invocation = Invocation(INSTANCE_A, status="Failed", status_details="Failed")

    fetch_result(client, COMMAND_ID, invocation, sleep=sleeps.append)

    assert sleeps == [0.5, 0.5]
    assert invocation.response_code == 3
    assert invocation.stdout == "step 1\nstep 2\n"
    assert invocation.stderr == "boom\n"
    assert invocation.elapsed == "PT3.25S"
    assert invocation.describe() == "Failed (exit 3)"


def test_fetch_result_success(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_response("get_command_invocation", invocation_response(), GET_PARAMS)
    invocation = Invocation(INSTANCE_A)
    fetch_result(client, COMMAND_ID, invocation, sleep=lambda _: pytest.fail("no retry expected"))
    assert invocation.status == "Success"
    assert invocation.response_code == 0
    assert invocation.stdout == "deployed\n"
    assert invocation.stderr == ""
    assert invocation.succeeded


def test_fetch_result_not_executed_has_negative_code(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_response(
        "get_command_invocation",
        invocation_response(
            Status="Failed",
            StatusDetails="Undeliverable",
            ResponseCode=-1,
            StandardOutputContent="",
            ExecutionElapsedTime="",
        ),
        GET_PARAMS,
    )
    invocation = Invocation(INSTANCE_A)
    fetch_result(client, COMMAND_ID, invocation, sleep=lambda _: None)
    assert invocation.response_code == -1
    assert invocation.describe() == "Failed/Undeliverable"


def test_fetch_result_keeps_tracked_status_when_response_lacks_it(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_response("get_command_invocation", {"CommandId": COMMAND_ID, "InstanceId": INSTANCE_A}, GET_PARAMS)
    invocation = Invocation(INSTANCE_A, status="TimedOut", status_details="ExecutionTimedOut", stdout="old")
    fetch_result(client, COMMAND_ID, invocation, sleep=lambda _: None)
    assert (invocation.status, invocation.status_details) == ("TimedOut", "ExecutionTimedOut")
    assert invocation.response_code is None
    assert invocation.stdout == ""
    assert invocation.stderr == ""


def test_fetch_result_gives_up_after_the_last_attempt(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    for _ in range(NOT_YET_ATTEMPTS):
        not_yet(stubber)
    sleeps: list[float] = []
    with pytest.raises(ClientError) as error:
        fetch_result(client, COMMAND_ID, Invocation(INSTANCE_A), sleep=sleeps.append)
    assert error.value.response["Error"]["Code"] == "InvocationDoesNotExist"
    assert len(sleeps) == NOT_YET_ATTEMPTS - 1 == 9


def test_fetch_result_other_errors_are_not_retried(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error("get_command_invocation", service_error_code="InvalidCommandId", http_status_code=400)
    sleeps: list[float] = []
    with pytest.raises(ClientError):
        fetch_result(client, COMMAND_ID, Invocation(INSTANCE_A), sleep=sleeps.append)
    assert sleeps == []


# --- send_command -------------------------------------------------------------------------------


def test_send_parameters_without_working_directory() -> None:
    parameters = send_parameters(
        make_settings(execution_timeout=900), spec_for(make_settings(execution_timeout=900), SCRIPT)
    )
    assert parameters == {"commands": SCRIPT, "executionTimeout": ["900"]}


class MarkedComment:
    """Equals ``<comment> (ref <8 hex digits>)``: the comment with the marker the pipe finds it by."""

    def __init__(self, comment: str) -> None:
        self.comment = comment

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, str)
            and re.fullmatch(re.escape(self.comment) + r" \(ref [0-9a-f]{8}\)", other) is not None
        )

    def __repr__(self) -> str:
        return f"{self.comment!r} + ' (ref <marker>)'"


def exact_request(**extra: Any) -> dict[str, Any]:
    return {
        "InstanceIds": [INSTANCE_A, INSTANCE_B],
        "DocumentName": "AWS-RunShellScript",
        "Comment": MarkedComment("release production"),
        "TimeoutSeconds": 120,
        "Parameters": {
            "commands": SCRIPT,
            "executionTimeout": ["900"],
            "workingDirectory": ["/srv/app"],
        },
        "MaxConcurrency": "50",
        "MaxErrors": "0",
        **extra,
    }


def request_settings(**overrides: Any) -> DeploySettings:
    values: dict[str, Any] = {
        "instance_ids": [INSTANCE_A, INSTANCE_B],
        "comment": "release production",
        "delivery_timeout": 120,
        "execution_timeout": 900,
        "working_directory": "/srv/app",
    }
    return make_settings(**{**values, **overrides})


def test_send_command_sends_exact_request(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_response("send_command", {"Command": {"CommandId": COMMAND_ID, "Status": "Pending"}}, exact_request())
    assert send_one(client, request_settings(stream_output=False)) == COMMAND_ID


def test_send_command_with_streaming_enables_cloudwatch_output(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_response(
        "send_command",
        {"Command": {"CommandId": COMMAND_ID}},
        exact_request(
            CloudWatchOutputConfig={
                "CloudWatchLogGroupName": "/deploy/production/ssm",
                "CloudWatchOutputEnabled": True,
            }
        ),
    )
    settings = request_settings(stream_output=True, log_group="/deploy/production/ssm")
    assert send_one(client, settings) == COMMAND_ID


def test_send_command_invalid_instance_points_at_instance_ids(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error(
        "send_command", service_error_code="InvalidInstanceId", service_message="Instances not in a valid state"
    )
    with pytest.raises(PipeError) as error:
        send_one(client, make_settings())
    message = str(error.value)
    assert message.startswith("INSTANCE_IDS: SSM refused the instances (Instances not in a valid state).")
    assert f"exist in {REGION}" in message
    assert "AmazonSSMManagedInstanceCore" in message


def test_send_command_access_denied_names_the_permission(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error(
        "send_command",
        service_error_code="AccessDeniedException",
        service_message="User: arn:aws:sts::123456789012:assumed-role/deploy/s is not authorized",
    )
    with pytest.raises(PipeError) as error:
        send_one(client, make_settings())
    message = str(error.value)
    assert "Fix: allow ssm:SendCommand" in message
    assert f"arn:aws:ssm:{REGION}::document/AWS-RunShellScript" in message
    assert f"arn:aws:ec2:{REGION}:<account>:instance/*" in message
    assert "is not authorized" in message


def test_send_command_invalid_parameters(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error("send_command", service_error_code="InvalidParameters", service_message="too long")
    with pytest.raises(PipeError, match=r"refused the command's parameters \(too long\)\. Check COMMANDS"):
        send_one(client, make_settings())


def test_send_command_other_error(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error("send_command", service_error_code="ThrottlingException", service_message="Rate exceeded")
    with pytest.raises(PipeError) as error:
        send_one(client, make_settings())
    assert str(error.value) == "SendCommand failed (ThrottlingException: Rate exceeded)."


# --- cancel_command -------------------------------------------------------------------------


def test_cancel_command_accepted(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_response("cancel_command", {}, {"CommandId": COMMAND_ID})
    assert cancel_command(client, COMMAND_ID) is True


def test_cancel_command_refused_is_logged(stubbed: tuple[SSMClient, Stubber], caplog: pytest.LogCaptureFixture) -> None:
    client, stubber = stubbed
    stubber.add_client_error("cancel_command", service_error_code="InvalidCommandId", service_message="gone")
    with caplog.at_level(logging.ERROR, logger="ssm-deploy"):
        assert cancel_command(client, COMMAND_ID) is False
    assert f"Could not cancel command {COMMAND_ID}: InvalidCommandId: gone" in caplog.text


CMD_0 = "00000000-0000-4000-8000-00000000000a"
CMD_T = "00000000-0000-4000-8000-00000000000b"


def test_send_commands_splits_instance_ids_by_fifty(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    ids = [f"i-{n:017x}" for n in range(120)]
    # MAX_CONCURRENCY 50 over the whole deploy: split 21 + 21 + 8 in proportion to the chunks
    for number, (chunk, share) in enumerate(zip((ids[:50], ids[50:100], ids[100:]), ("21", "21", "8"), strict=True)):
        request = {**exact_request(), "InstanceIds": chunk, "MaxConcurrency": share}
        stubber.add_response(
            "send_command", {"Command": {"CommandId": f"{number:08d}-0000-4000-8000-000000000000"}}, request
        )
    sent = send_commands(
        client,
        request_settings(instance_ids=ids, stream_output=False),
        spec_for(request_settings(instance_ids=ids, stream_output=False), SCRIPT),
    )

    assert [len(c.instance_ids) for c in sent] == [50, 50, 20]
    assert [c.command_id[:8] for c in sent] == ["00000000", "00000001", "00000002"]
    assert [i for c in sent for i in c.instance_ids] == ids


def test_a_refused_later_chunk_cancels_the_chunks_already_sent(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    ids = [f"i-{n:017x}" for n in range(60)]
    first = {**exact_request(), "InstanceIds": ids[:50], "MaxConcurrency": "42"}  # its share of 50 over 60
    stubber.add_response("send_command", {"Command": {"CommandId": CMD_0}}, first)
    stubber.add_client_error("send_command", service_error_code="InvalidInstanceId", service_message="bad")
    stubber.add_response("cancel_command", {}, {"CommandId": CMD_0})
    with pytest.raises(PipeError) as error:
        send_commands(
            client,
            request_settings(instance_ids=ids, stream_output=False),
            spec_for(request_settings(instance_ids=ids, stream_output=False), SCRIPT),
        )

    assert f"The commands already sent were cancelled: {CMD_0}." in str(error.value)
    stubber.assert_no_pending_responses()


def test_targets_are_sent_as_one_command(stubbed: tuple[SSMClient, Stubber]) -> None:
    client, stubber = stubbed
    targets = [Target("tag:Service", ("api",)), Target("tag:Env", ("prod", "stg"))]
    request = {k: v for k, v in exact_request(MaxConcurrency="10%", MaxErrors="1").items() if k != "InstanceIds"}
    request["Targets"] = [{"Key": "tag:Service", "Values": ["api"]}, {"Key": "tag:Env", "Values": ["prod", "stg"]}]
    stubber.add_response("send_command", {"Command": {"CommandId": CMD_T}}, request)
    settings = request_settings(targets=targets, max_concurrency="10%", max_errors="1", stream_output=False)

    assert send_commands(client, settings, spec_for(settings, SCRIPT)) == [SentCommand(CMD_T, ())]
