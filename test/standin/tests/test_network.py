"""The stand-in's flaky network proxy: each fault does what it says, seen from a boto3 client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ConnectionClosedError

from standin import StandIn
from standin.network import FlakyProxy

NO_RETRY = Config(retries={"total_max_attempts": 1})


@pytest.fixture
def proxy(standin: StandIn) -> Iterator[FlakyProxy]:
    running = standin.flaky_proxy()
    yield running
    running.stop()


def ssm_through(standin: StandIn, proxy: FlakyProxy, config: Config = NO_RETRY) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        "ssm", endpoint_url=proxy.endpoint, region_name=standin.region, config=config, **standin.admin_keys
    )


def send(ssm: Any, instance_id: str, comment: str) -> str:
    response = ssm.send_command(
        InstanceIds=[instance_id],
        DocumentName="AWS-RunShellScript",
        Comment=comment,
        Parameters={"commands": ["echo proxied"]},
    )
    return str(response["Command"]["CommandId"])


def commands_with(standin: StandIn, comment: str) -> list[str]:
    return [sent.command_id for sent in standin.sent_commands() if sent.request.get("Comment") == comment]


def test_the_proxy_forwards_requests_and_answers_whole(standin: StandIn, proxy: FlakyProxy) -> None:
    (instance_id,) = standin.launch(1)
    ssm = ssm_through(standin, proxy)
    command_id = send(ssm, instance_id, "proxy forwards")

    assert commands_with(standin, "proxy forwards") == [command_id]
    listed = ssm.list_commands(CommandId=command_id)["Commands"]  # a second request on the same connection
    assert [command["CommandId"] for command in listed] == [command_id]


def test_a_dropped_response_is_a_reset_after_the_command_was_accepted(standin: StandIn, proxy: FlakyProxy) -> None:
    (instance_id,) = standin.launch(1)
    ssm = ssm_through(standin, proxy)
    proxy.drop_response_to("SendCommand")
    with pytest.raises(ConnectionClosedError):
        send(ssm, instance_id, "dropped reply")

    assert proxy.dropped_responses == ["SendCommand"]
    assert len(commands_with(standin, "dropped reply")) == 1  # AWS accepted it
    send(ssm, instance_id, "after the drop")  # the fault was used up: the next call is answered
    assert len(commands_with(standin, "after the drop")) == 1


def test_a_reset_request_never_reaches_the_stand_in(standin: StandIn, proxy: FlakyProxy) -> None:
    (instance_id,) = standin.launch(1)
    ssm = ssm_through(standin, proxy)
    proxy.reset_request_to("SendCommand")
    with pytest.raises(ConnectionClosedError):
        send(ssm, instance_id, "never arrived")

    assert proxy.reset_requests == ["SendCommand"]
    assert commands_with(standin, "never arrived") == []


def test_other_actions_pass_while_a_fault_waits_for_its_own(standin: StandIn, proxy: FlakyProxy) -> None:
    ssm = ssm_through(standin, proxy)
    proxy.drop_response_to("SendCommand")
    ssm.describe_instance_information()

    assert proxy.dropped_responses == []


def test_botocore_retries_a_lost_send_command_reply_and_so_sends_it_twice(standin: StandIn, proxy: FlakyProxy) -> None:
    """Why the pipe must not let the SDK retry SendCommand: a reset after the request was sent is a
    transient ConnectionClosedError to botocore's retry checker (standard and adaptive modes), and
    Config's ``max_attempts`` counts retries, not attempts (AWS_MAX_ATTEMPTS counts attempts)."""
    (instance_id,) = standin.launch(1)
    ssm = ssm_through(standin, proxy, Config(retries={"mode": "adaptive", "max_attempts": 1}))
    proxy.drop_response_to("SendCommand")
    send(ssm, instance_id, "sent twice")

    assert len(commands_with(standin, "sent twice")) == 2


def test_a_fault_can_spare_the_first_requests(standin: StandIn, proxy: FlakyProxy) -> None:
    (instance_id,) = standin.launch(1)
    ssm = ssm_through(standin, proxy)
    proxy.drop_response_to("SendCommand", after=1)
    send(ssm, instance_id, "spared")
    with pytest.raises(ConnectionClosedError):
        send(ssm, instance_id, "not spared")

    assert proxy.dropped_responses == ["SendCommand"]
    assert len(commands_with(standin, "not spared")) == 1


def test_a_callback_runs_as_the_request_arrives_before_it_is_answered(standin: StandIn, proxy: FlakyProxy) -> None:
    """``on_request`` matches JSON-protocol actions (X-Amz-Target) and query-protocol ones (Action= in the
    body, as Auto Scaling sends them); the request is then answered as usual."""
    seen: list[str] = []
    proxy.on_request("PutParameter", lambda: seen.append(f"put, stored: {stored()}"), after=1)
    proxy.on_request("DescribeAutoScalingGroups", lambda: seen.append("describe"))
    ssm = ssm_through(standin, proxy)

    def stored() -> list[str]:  # by name: DescribeParameters pages (10 a page) through the session's others
        found = standin.client("ssm").get_parameters(Names=["/proxy/first", "/proxy/second"])["Parameters"]
        return sorted(p["Name"] for p in found)

    ssm.put_parameter(Name="/proxy/first", Value="1", Type="String")
    ssm.put_parameter(Name="/proxy/second", Value="2", Type="String")
    autoscaling = boto3.client(  # type: ignore[call-overload]
        "autoscaling", endpoint_url=proxy.endpoint, region_name=standin.region, config=NO_RETRY, **standin.admin_keys
    )
    autoscaling.describe_auto_scaling_groups()

    assert seen == ["put, stored: ['/proxy/first']", "describe"]  # the second put called back before it was made
    assert stored() == ["/proxy/first", "/proxy/second"]
