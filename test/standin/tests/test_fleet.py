"""The stand-in as a fleet: targets, rate controls and call counting, through boto3 as AWS documents them.

The stand-in is shared by the whole session, so every test tags its instances with values of its
own (``unique()``) and never relies on how many other instances exist.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
import uuid
from typing import Any

import boto3
import moto
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from standin import StandIn
from standin.fleet import UNDELIVERABLE
from standin.rollout import command_status, rate_limit

FINAL = {"Success", "Failed", "TimedOut", "Cancelled"}
FAIL_ON = 'case " {ids} " in *" $(basename "$HOME") "*) echo failing >&2; exit 3;; esac'


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def send(standin: StandIn, script: str, **request: Any) -> str:
    response = standin.client("ssm").send_command(
        DocumentName="AWS-RunShellScript", Parameters={"commands": script.splitlines()}, **request
    )
    return str(response["Command"]["CommandId"])


def command(standin: StandIn, command_id: str) -> dict[str, Any]:
    found: dict[str, Any] = standin.client("ssm").list_commands(CommandId=command_id)["Commands"][0]
    return found


def wait_command(standin: StandIn, command_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = command(standin, command_id)
        if found["Status"] not in ("Pending", "InProgress"):
            return found
        time.sleep(0.1)
    raise AssertionError(f"command {command_id} still {found['Status']}")


def invocations(standin: StandIn, command_id: str, details: bool = False) -> list[dict[str, Any]]:
    """Every invocation, page by page (AWS pages at 50)."""
    pages = standin.client("ssm").get_paginator("list_command_invocations")
    rows: list[dict[str, Any]] = []
    for page in pages.paginate(CommandId=command_id, Details=details, PaginationConfig={"PageSize": 50}):
        rows.extend(page["CommandInvocations"])
    return rows


def targeted(standin: StandIn, targets: list[dict[str, Any]]) -> list[str]:
    command_id = send(standin, "true", Targets=targets)
    found = command(standin, command_id)
    ids = [row["InstanceId"] for row in invocations(standin, command_id)]
    assert found["TargetCount"] == len(ids)
    return ids


def most_at_once(rows: list[dict[str, Any]]) -> int:
    """The most invocations whose execution windows overlap (from CommandPlugins' start/finish)."""
    edges: list[tuple[datetime.datetime, int]] = []
    for row in rows:
        plugin = row["CommandPlugins"][0]
        edges += [(plugin["ResponseStartDateTime"], 1), (plugin["ResponseFinishDateTime"], -1)]
    running = peak = 0
    for _, step in sorted(edges):  # at equal times an end (-1) sorts before a start
        running += step
        peak = max(peak, running)
    return peak


# --- targets ---------------------------------------------------------------------------------------
def test_tag_targets_and_across_keys_or_within_values(standin: StandIn) -> None:
    api, web, other = unique("api"), unique("web"), unique("other")
    prod, dev = unique("prod"), unique("dev")
    api_prod = standin.launch(2, tags={"Service": api, "Env": prod})
    web_prod = standin.launch(1, tags={"Service": web, "Env": prod})
    standin.launch(1, tags={"Service": api, "Env": dev})
    standin.launch(1, tags={"Service": other, "Env": prod})

    both = targeted(standin, [{"Key": "tag:Service", "Values": [api, web]}, {"Key": "tag:Env", "Values": [prod]}])
    assert both == api_prod + web_prod  # registration order
    assert len(targeted(standin, [{"Key": "tag:Service", "Values": [api]}])) == 3


def test_tag_key_targets_instances_having_the_key(standin: StandIn) -> None:
    key, other_key = unique("Key"), unique("Key")
    with_key = standin.launch(2, tags={key: "anything"}) + standin.launch(1, tags={key: ""})
    with_other = standin.launch(1, tags={other_key: "x"})
    standin.launch(1)

    assert targeted(standin, [{"Key": "tag-key", "Values": [key]}]) == with_key
    assert targeted(standin, [{"Key": "tag-key", "Values": [key, other_key]}]) == with_key + with_other


def test_resource_group_applies_its_tag_filters(standin: StandIn) -> None:
    team, stage = unique("team"), unique("stage")
    wanted = standin.launch(2, tags={"Team": team, "Stage": stage})
    standin.launch(1, tags={"Team": team})  # lacks Stage: the empty-values filter needs the key
    standin.launch(1, tags={"Team": unique("team"), "Stage": stage})
    unmanaged = standin.launch_unmanaged(1, tags={"Team": team, "Stage": stage})
    group = unique("group")
    standin.create_resource_group(group, {"Team": [team], "Stage": []})
    listed = standin.client("resource-groups").list_group_resources(Group=group)["ResourceIdentifiers"]

    assert sorted(row["ResourceArn"].rsplit("/", 1)[-1] for row in listed) == sorted(wanted + unmanaged)
    assert targeted(standin, [{"Key": "resource-groups:Name", "Values": [group]}]) == wanted  # managed only
    assert (
        targeted(
            standin,
            [{"Key": "resource-groups:Name", "Values": [group]}, {"Key": "tag:Stage", "Values": [unique()]}],
        )
        == []
    )


def test_instances_not_registered_with_ssm_are_never_targeted(standin: StandIn) -> None:
    role = unique("role")
    managed = standin.launch(2, tags={"Role": role})
    unmanaged = standin.launch_unmanaged(3, tags={"Role": role})
    ec2_view = standin.client("ec2").describe_instances(Filters=[{"Name": "tag:Role", "Values": [role]}])
    in_ec2 = [i["InstanceId"] for r in ec2_view["Reservations"] for i in r["Instances"]]

    assert sorted(in_ec2) == sorted(managed + unmanaged)  # moto alone would target all five
    assert targeted(standin, [{"Key": "tag:Role", "Values": [role]}]) == managed
    assert targeted(standin, [{"Key": "InstanceIds", "Values": managed[:1] + unmanaged}]) == managed[:1]
    everything_with_role = [{"Key": "InstanceIds", "Values": ["*"]}, {"Key": "tag:Role", "Values": [role]}]
    assert targeted(standin, everything_with_role) == managed


def test_targets_matching_nothing_give_an_empty_failed_command(standin: StandIn) -> None:
    command_id = send(standin, "true", Targets=[{"Key": "tag:Service", "Values": [unique("none")]}])
    found = command(standin, command_id)

    assert (found["TargetCount"], found["Status"], found["StatusDetails"]) == (0, "Failed", "NoInstancesInTag")
    assert invocations(standin, command_id) == []


def test_bad_targets_and_rate_controls_are_refused(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    ssm = standin.client("ssm")
    tag = [{"Key": "tag:Service", "Values": ["x"]}]
    refused: list[tuple[dict[str, Any], str]] = [
        ({"InstanceIds": [instance_id], "Targets": tag}, "InvalidParameters"),
        ({"Targets": [{"Key": "resource-groups:Name", "Values": [unique("missing")]}]}, "InvalidParameters"),
        ({"Targets": [{"Key": "colour", "Values": ["blue"]}]}, "InvalidParameters"),
        ({"Targets": tag, "MaxConcurrency": "0"}, "ValidationException"),
        ({"Targets": tag, "MaxErrors": "101%"}, "ValidationException"),
    ]
    before = len(ssm.list_commands()["Commands"])
    for request, code in refused:
        with pytest.raises(ssm.exceptions.ClientError) as caught:
            send(standin, "true", **request)
        assert caught.value.response["Error"]["Code"] == code, request
    assert len(ssm.list_commands()["Commands"]) == before  # nothing was created


# --- rate controls --------------------------------------------------------------------------------
def test_percentages_round_down_with_at_least_one_to_run() -> None:
    assert rate_limit("MaxConcurrency", "10%", 200) == 20
    assert rate_limit("MaxConcurrency", "10%", 5) == 1
    assert rate_limit("MaxConcurrency", "33%", 10) == 3
    assert rate_limit("MaxConcurrency", "7", 3) == 7
    assert rate_limit("MaxErrors", "10%", 50) == 5  # AWS: 50 instances, 10%: stops at the sixth error
    assert rate_limit("MaxErrors", "10%", 5) == 0
    assert rate_limit("MaxErrors", "0", 5) == 0


def test_command_status_follows_the_documented_details() -> None:
    s, f, u = ("Success", "Success"), ("Failed", "Failed"), ("Failed", "Undeliverable")
    terminated, timed_out = ("Cancelled", "Terminated"), ("TimedOut", "ExecutionTimedOut")
    assert command_status([("Pending", "Pending")] * 2, 0, False) == ("Pending", "Pending")
    assert command_status([s, ("InProgress", "InProgress")], 0, False) == ("InProgress", "InProgress")
    assert command_status([s, s], 0, False) == ("Success", "Success")
    assert command_status([s, f, terminated], 0, False) == ("Failed", "Failed")
    assert command_status([s, f, s], 1, False) == ("Failed", "Failed")  # MaxErrors reached
    assert command_status([s, f, s], 2, False) == ("Success", "Incomplete")  # not reached
    assert command_status([s, timed_out], 0, False) == ("TimedOut", "ExecutionTimedOut")
    assert command_status([u, u, u, u, s], 0, False) == ("Success", "Incomplete")  # the guide's example
    assert command_status([u, u], 0, False) == ("Failed", "Failed")
    assert command_status([("TimedOut", "DeliveryTimedOut")], 0, False) == ("TimedOut", "DeliveryTimedOut")
    assert command_status([s, ("Cancelled", "Cancelled")], 0, False) == ("Cancelled", "Cancelled")
    assert command_status([], 0, True) == ("Failed", "NoInstancesInTag")


def test_ten_percent_of_200_never_runs_more_than_20(standin: StandIn) -> None:
    fleet = unique("fleet")
    ids = standin.launch(200, tags={"Fleet": fleet})
    command_id = send(standin, "sleep 0.1", Targets=[{"Key": "tag:Fleet", "Values": [fleet]}], MaxConcurrency="10%")
    listed_at_once = invocations(standin, command_id)
    found = wait_command(standin, command_id, timeout=60)
    rows = invocations(standin, command_id, details=True)

    assert [row["InstanceId"] for row in listed_at_once] == ids  # all listed from SendCommand on
    assert (found["Status"], found["StatusDetails"], found["TargetCount"]) == ("Success", "Success", 200)
    assert (found["MaxConcurrency"], found["CompletedCount"], found["ErrorCount"]) == ("10%", 200, 0)
    assert standin.service.max_running[command_id] == 20
    assert most_at_once(rows) <= 20
    assert standin.service.started_order(command_id) == ids


def test_max_concurrency_one_runs_strictly_one_at_a_time_in_order(standin: StandIn) -> None:
    group = unique("serial")
    ids = standin.launch(5, tags={"Group": group})
    command_id = send(standin, "sleep 0.1", Targets=[{"Key": "tag:Group", "Values": [group]}], MaxConcurrency="1")
    assert wait_command(standin, command_id)["Status"] == "Success"
    rows = invocations(standin, command_id, details=True)
    windows = [(row["CommandPlugins"][0]["ResponseStartDateTime"], row["InstanceId"]) for row in rows]

    assert standin.service.started_order(command_id) == ids
    assert [instance_id for _, instance_id in sorted(windows)] == ids
    assert most_at_once(rows) == 1
    assert standin.service.max_running[command_id] == 1


def test_max_errors_zero_stops_the_rollout_at_the_first_error(standin: StandIn) -> None:
    ids = standin.launch(8)
    slow, failing = ids[0], ids[1]
    script = f'{FAIL_ON.format(ids=failing)}\nif [ "$(basename "$HOME")" = "{slow}" ]; then sleep 1; fi'
    command_id = send(standin, script, InstanceIds=ids, MaxConcurrency="2", MaxErrors="0")
    found = wait_command(standin, command_id)
    by_id = {row["InstanceId"]: (row["Status"], row["StatusDetails"]) for row in invocations(standin, command_id)}

    assert by_id[slow] == ("Success", "Success")  # already running: it finishes normally
    assert by_id[failing] == ("Failed", "Failed")
    assert [by_id[i] for i in ids[2:]] == [("Cancelled", "Terminated")] * 6
    assert (found["Status"], found["StatusDetails"]) == ("Failed", "Failed")
    assert (found["ErrorCount"], found["CompletedCount"], found["TargetCount"]) == (1, 8, 8)
    item = standin.client("ssm").get_command_invocation(CommandId=command_id, InstanceId=ids[-1])
    assert (item["Status"], item["StatusDetails"]) == ("Cancelled", "Terminated")
    assert not standin.sent_command(command_id).runs[ids[-1]].thread.is_alive()


def test_max_errors_one_allows_one_failure_and_stops_at_the_second(standin: StandIn) -> None:
    ids = standin.launch(6)
    command_id = send(
        standin, FAIL_ON.format(ids=f"{ids[1]} {ids[3]}"), InstanceIds=ids, MaxConcurrency="1", MaxErrors="1"
    )
    found = wait_command(standin, command_id)
    statuses = [row["StatusDetails"] for row in invocations(standin, command_id)]

    assert statuses == ["Success", "Failed", "Success", "Failed", "Terminated", "Terminated"]
    assert (found["Status"], found["StatusDetails"], found["ErrorCount"]) == ("Failed", "Failed", 2)


def test_undeliverable_does_not_count_against_max_errors(standin: StandIn) -> None:
    offline = standin.launch(1, delivery=UNDELIVERABLE)
    online = standin.launch(3)
    command_id = send(standin, "true", InstanceIds=offline + online, MaxConcurrency="1", MaxErrors="0")
    found = wait_command(standin, command_id)
    statuses = [row["StatusDetails"] for row in invocations(standin, command_id)]

    assert statuses == ["Undeliverable", "Success", "Success", "Success"]
    assert (found["Status"], found["StatusDetails"], found["ErrorCount"]) == ("Success", "Incomplete", 0)


def test_cancel_command_cancels_pending_invocations_too(standin: StandIn) -> None:
    ids = standin.launch(4)
    command_id = send(standin, "sleep 5", InstanceIds=ids, MaxConcurrency="1")
    ssm = standin.client("ssm")
    while ssm.get_command_invocation(CommandId=command_id, InstanceId=ids[0])["Status"] == "Pending":
        time.sleep(0.02)
    ssm.cancel_command(CommandId=command_id)
    found = wait_command(standin, command_id)

    assert [row["StatusDetails"] for row in invocations(standin, command_id)] == ["Cancelled"] * 4
    assert (found["Status"], found["StatusDetails"]) == ("Cancelled", "Cancelled")
    assert standin.service.started_order(command_id) == ids[:1]


# --- CloudWatch at scale and call counting -------------------------------------------------------------
def test_hundreds_of_invocations_stream_to_cloudwatch_through_one_client(standin: StandIn) -> None:
    fleet, group = unique("cw"), f"/standin/{unique('fleet')}"
    ids = standin.launch(100, tags={"Fleet": fleet})
    clients_before = standin.logs_sinks.created
    command_id = send(
        standin,
        'echo "hello from $(basename "$HOME")"\nsleep 0.2\necho done',
        Targets=[{"Key": "tag:Fleet", "Values": [fleet]}],
        MaxConcurrency="50",
        CloudWatchOutputConfig={"CloudWatchOutputEnabled": True, "CloudWatchLogGroupName": group},
    )
    assert wait_command(standin, command_id, timeout=60)["Status"] == "Success"
    logs = standin.client("logs")
    streams = logs.get_paginator("describe_log_streams").paginate(logGroupName=group)
    names = {stream["logStreamName"] for page in streams for stream in page["logStreams"]}
    first = logs.get_log_events(logGroupName=group, logStreamName=f"{command_id}/{ids[0]}/aws-runShellScript/stdout")

    assert names == {f"{command_id}/{i}/aws-runShellScript/stdout" for i in ids}  # no stderr output: no stream
    # the agent packs the lines of a tick in one event, line breaks kept (the last one dropped only when the
    # output had ended as the event was read): how the two lines fall in events depends on the 1-s ticks
    assert "".join(e["message"] for e in first["events"]).removesuffix("\n") == f"hello from {ids[0]}\ndone"
    assert standin.logs_sinks.created - clients_before <= 1  # not one client per invocation
    assert standin.service.max_running[command_id] == 50


def test_calls_are_counted_per_service_and_api(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    group = f"/standin/{unique('calls')}"
    before, before_ours = standin.calls_snapshot(), standin.calls_snapshot(include_instances=False)
    standin.client("ec2").describe_instances(InstanceIds=[instance_id])
    standin.client("sts").assume_role(RoleArn="arn:aws:iam::123456789012:role/counted", RoleSessionName="counted")
    logs = standin.client("logs")
    logs.create_log_group(logGroupName=group)
    logs.filter_log_events(logGroupName=group)
    command_id = send(
        standin,
        "aws sts get-caller-identity --output text > /dev/null\necho streamed",
        InstanceIds=[instance_id],
        CloudWatchOutputConfig={"CloudWatchOutputEnabled": True, "CloudWatchLogGroupName": group},
    )
    assert wait_command(standin, command_id)["Status"] == "Success"
    standin.client("ssm").list_command_invocations(CommandId=command_id)
    everything = standin.calls_snapshot() - before

    assert everything["ec2:DescribeInstances"] == 1
    assert everything["ec2:RunInstances"] == 0  # launched before the first snapshot
    assert everything["sts:AssumeRole"] == 1
    assert everything["logs:FilterLogEvents"] == everything["FilterLogEvents"] == 1
    assert everything["ssm:SendCommand"] == everything["SendCommand"] == 1
    assert everything["ssm:ListCommandInvocations"] == everything["ListCommandInvocations"] == 1
    assert everything["sts:GetCallerIdentity"] == 1  # from the instance, by the AWS CLI
    assert everything["logs:PutLogEvents"] >= 1  # from the instance's agent
    assert "AssumeRole" not in everything  # bare names only for SSM and CloudWatch Logs
    assert standin.calls_snapshot() is not standin.service.calls
    ours = standin.calls_snapshot(include_instances=False) - before_ours
    assert ours["sts:GetCallerIdentity"] == 0
    assert ours["logs:PutLogEvents"] == 0
    assert ours["ssm:ListCommandInvocations"] == 1


def test_the_tests_clients_are_shared_per_service_unless_a_test_asks_for_its_own(standin: StandIn) -> None:
    shared = standin.client("ssm")

    assert standin.client("ssm") is shared
    assert standin.client("ec2") is not shared
    own = standin.client("ssm", own=True)
    assert own is not shared and own is not standin.client("ssm", own=True)
    assert own.describe_instance_information()["InstanceInformationList"] is not None  # it works


def test_moto_routes_requests_without_reading_its_package_folder_each_time(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    moto_folder = os.path.dirname(moto.__file__)
    listed: list[str] = []
    listdir = os.listdir

    def counting(path: Any = ".") -> list[str]:
        if str(path) == moto_folder:
            listed.append(str(path))
        return listdir(path)

    monkeypatch.setattr(os, "listdir", counting)
    for _ in range(3):
        standin.client("ssm").describe_instance_information()
        standin.client("ec2").describe_vpcs()

    assert listed == []


# --- hybrid (on-premises) nodes: mi- ids, tagged in SSM, unknown to EC2 ------------------------------


def test_hybrid_nodes_are_targeted_by_their_ssm_tags(standin: StandIn) -> None:
    service = unique("svc")
    (hybrid,) = standin.register_hybrid(1, tags={"Service": service})
    (ec2,) = standin.launch(1, tags={"Service": service})

    assert sorted(targeted(standin, [{"Key": "tag:Service", "Values": [service]}])) == sorted([hybrid, ec2])
    assert targeted(standin, [{"Key": "InstanceIds", "Values": [hybrid]}]) == [hybrid]


def test_describe_instance_information_filters_by_tag_and_resource_type(standin: StandIn) -> None:
    service = unique("svc")
    (hybrid,) = standin.register_hybrid(1, tags={"Service": service})
    (ec2,) = standin.launch(1, tags={"Service": service})
    ssm = standin.client("ssm")

    def described(filters: list[dict[str, Any]]) -> dict[str, str]:
        pages = ssm.get_paginator("describe_instance_information").paginate(Filters=filters)
        return {row["InstanceId"]: row["ResourceType"] for page in pages for row in page["InstanceInformationList"]}

    assert described([{"Key": "tag:Service", "Values": [service]}]) == {hybrid: "ManagedInstance", ec2: "EC2Instance"}
    assert described([{"Key": "tag-key", "Values": [f"absent-{service}"]}]) == {}
    assert hybrid in described([{"Key": "ResourceType", "Values": ["ManagedInstance"]}])
    assert ec2 not in described([{"Key": "ResourceType", "Values": ["ManagedInstance"]}])
    with pytest.raises(ssm.exceptions.InvalidFilterKey, match="can't be combined"):
        described([{"Key": "tag:Service", "Values": [service]}, {"Key": "ResourceType", "Values": ["EC2Instance"]}])


def test_throttle_answers_rate_exceeded_until_its_limit(standin: StandIn) -> None:
    ssm = boto3.client(
        "ssm",
        endpoint_url=standin.endpoint,
        region_name=standin.region,
        config=Config(retries={"total_max_attempts": 1}),  # every answer seen, none retried
        aws_access_key_id=standin.admin_keys["aws_access_key_id"],
        aws_secret_access_key=standin.admin_keys["aws_secret_access_key"],
    )
    standin.service.throttle(failures=1, out_of=1, seconds=60, actions={"DescribeInstanceInformation"}, limit=2)
    try:
        answers = []
        for _ in range(3):
            try:
                ssm.describe_instance_information()
                answers.append("ok")
            except ClientError as error:
                answers.append(error.response["Error"]["Code"])
        ssm.list_commands()  # not among the throttled actions
    finally:
        standin.service.clear_faults()

    assert answers == ["ThrottlingException", "ThrottlingException", "ok"]


def test_throttle_applies_to_parameter_writes_too(standin: StandIn) -> None:
    """PutParameter goes through the stand-in's own handler (atomic creates, value sizes): a test's
    throttling reaches it as it reaches every call on AWS."""
    ssm = boto3.client(
        "ssm",
        endpoint_url=standin.endpoint,
        region_name=standin.region,
        config=Config(retries={"total_max_attempts": 1}),
        aws_access_key_id=standin.admin_keys["aws_access_key_id"],
        aws_secret_access_key=standin.admin_keys["aws_secret_access_key"],
    )
    name = f"/throttled/{uuid.uuid4().hex[:8]}"
    standin.service.throttle(failures=1, out_of=1, seconds=60, actions={"PutParameter"}, limit=1)
    try:
        with pytest.raises(ClientError, match="ThrottlingException"):
            ssm.put_parameter(Name=name, Value="one", Type="String")
        ssm.put_parameter(Name=name, Value="one", Type="String")
    finally:
        standin.service.clear_faults()

    assert ssm.get_parameter(Name=name)["Parameter"]["Version"] == 1


def test_flaky_proxy_resets_from_the_first_connection_then_forwards(standin: StandIn) -> None:
    proxy = standin.flaky_proxy()
    try:
        proxy.reset_from_first_connection(0.5)
        time.sleep(0.7)  # longer than the period: it has not started yet
        with pytest.raises(ConnectionError), socket.create_connection(("127.0.0.1", proxy.port)) as first:
            first.sendall(b"GET / HTTP/1.0\r\n\r\n")
            first.recv(1)
        time.sleep(0.7)  # now it is over
        with socket.create_connection(("127.0.0.1", proxy.port)) as later:
            later.sendall(b"GET / HTTP/1.0\r\n\r\n")
            answer = later.recv(12)
    finally:
        proxy.stop()

    assert proxy.resets >= 1
    assert answer.startswith(b"HTTP/")
