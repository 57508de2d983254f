"""The stand-in's Run Command, through boto3 against the real HTTP endpoint, as AWS documents it."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest
from support import wait_until

from standin import StandIn
from standin.cloudwatch import AGENT_FINAL_TICKS
from standin.fleet import NEVER, UNDELIVERABLE

FINAL = {"Success", "Failed", "TimedOut", "Cancelled"}


def send(standin: StandIn, instance_ids: list[str], script: str, **extra: Any) -> str:
    parameters = {"commands": script.splitlines(), **extra.pop("parameters", {})}
    response = standin.client("ssm").send_command(
        InstanceIds=instance_ids, DocumentName="AWS-RunShellScript", Parameters=parameters, **extra
    )
    return str(response["Command"]["CommandId"])


def wait_final(standin: StandIn, command_id: str, instance_id: str, timeout: float = 20) -> dict[str, Any]:
    ssm = standin.client("ssm")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item: dict[str, Any] = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
        if item["Status"] in FINAL:
            return item
        time.sleep(0.05)
    raise AssertionError(f"{instance_id} did not finish: {item['Status']}")


def test_runs_the_script_and_reports_exit_code_and_output(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    command_id = send(standin, [instance_id], "echo out-$((6*7))\necho err-line >&2\nexit 5")
    item = wait_final(standin, command_id, instance_id)

    assert (item["Status"], item["StatusDetails"], item["ResponseCode"]) == ("Failed", "Failed", 5)
    assert item["StandardOutputContent"] == "out-42\n"
    assert item["StandardErrorContent"] == "err-line\n"


def test_statuses_move_pending_then_in_progress_then_success(standin: StandIn) -> None:
    # each status lasts 2 s, so a poll every 20 ms sees it even on a loaded machine
    (instance_id,) = standin.launch(1, delivery_delay=2.0)
    ssm = standin.client("ssm")
    command_id = send(standin, [instance_id], "sleep 2")
    seen: list[str] = []
    while not seen or seen[-1] not in FINAL:
        status = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)["Status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        time.sleep(0.02)

    assert seen == ["Pending", "InProgress", "Success"]
    assert ssm.list_commands(CommandId=command_id)["Commands"][0]["Status"] == "Success"


def test_output_fields_are_capped_like_aws(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    script = "head -c 30000 /dev/zero | tr '\\0' o\nhead -c 9000 /dev/zero | tr '\\0' e >&2"
    item = wait_final(standin, send(standin, [instance_id], script), instance_id)

    assert len(item["StandardOutputContent"]) == 24000
    assert len(item["StandardErrorContent"]) == 8000


def test_only_the_requested_instances_get_invocations(standin: StandIn) -> None:
    """moto alone adds every instance of the region when Targets is empty."""
    standin.launch(3)
    (wanted,) = standin.launch(1)
    command_id = send(standin, [wanted], "true")
    rows = standin.client("ssm").list_command_invocations(CommandId=command_id)["CommandInvocations"]

    assert [row["InstanceId"] for row in rows] == [wanted]


def test_list_command_invocations_pages_by_max_results(standin: StandIn) -> None:
    ids = standin.launch(5)
    command_id = send(standin, ids, "true")
    ssm = standin.client("ssm")
    first = ssm.list_command_invocations(CommandId=command_id, MaxResults=3)
    second = ssm.list_command_invocations(CommandId=command_id, MaxResults=3, NextToken=first["NextToken"])

    assert len(first["CommandInvocations"]) == 3
    assert "NextToken" not in second
    listed = [row["InstanceId"] for row in first["CommandInvocations"] + second["CommandInvocations"]]
    assert sorted(listed) == sorted(ids)


def test_execution_timeout_kills_the_process(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    marker = standin.instance(instance_id).home / "survived"
    command_id = send(standin, [instance_id], f"sleep 3\ntouch {marker}", parameters={"executionTimeout": ["1"]})
    item = wait_final(standin, command_id, instance_id)
    time.sleep(2.5)

    assert (item["Status"], item["StatusDetails"]) == ("TimedOut", "ExecutionTimedOut")
    assert not marker.exists()


def test_cancel_command_kills_the_running_process(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    marker = standin.instance(instance_id).home / "survived-cancel"
    command_id = send(standin, [instance_id], f"sleep 2\ntouch {marker}")
    ssm = standin.client("ssm")
    while ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)["Status"] == "Pending":
        time.sleep(0.02)
    ssm.cancel_command(CommandId=command_id)
    item = wait_final(standin, command_id, instance_id)
    time.sleep(2.5)

    assert item["Status"] == "Cancelled"
    assert not marker.exists()
    assert standin.sent_command(command_id).runs[instance_id].killed


@pytest.mark.parametrize("end", ["cancel", "timeout"])
def test_an_ended_invocations_child_processes_end_with_it(standin: StandIn, end: str) -> None:
    # the agent kills the invocation's process group; the invocation runs in its instance's PID
    # namespace, entered by a forking nsenter whose child must stay in that group
    (instance_id,) = standin.launch(1)
    script = "sleep 600 &\necho $! > /tmp/child.new && mv /tmp/child.new /tmp/child.pid\nwait"
    timeout = {"executionTimeout": ["3"]} if end == "timeout" else {}
    command_id = send(standin, [instance_id], script, parameters=timeout)
    pid_file = standin.instance_path(instance_id, "/tmp/child.pid")
    if end == "cancel":
        wait_until(pid_file.exists, "the child to start")
        standin.client("ssm").cancel_command(CommandId=command_id)
    item = wait_final(standin, command_id, instance_id)
    # a timeout can come before the child started on a loaded machine: then nothing can outlive it
    child = int(pid_file.read_text()) if pid_file.exists() else None

    assert item["Status"] == {"cancel": "Cancelled", "timeout": "TimedOut"}[end]
    if child is not None:
        wait_until(lambda: standin.host_pid(instance_id, child) is None, "the invocation's child to end")


def test_offline_agent_gives_undeliverable(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1, delivery=UNDELIVERABLE)
    item = wait_final(standin, send(standin, [instance_id], "true"), instance_id)

    assert (item["Status"], item["StatusDetails"]) == ("Failed", "Undeliverable")


def test_agent_that_never_picks_up_gives_delivery_timed_out(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1, delivery=NEVER)
    command_id = send(standin, [instance_id], "true", TimeoutSeconds=30)
    ssm = standin.client("ssm")
    time.sleep(0.3)
    assert ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)["Status"] == "Pending"
    ssm.cancel_command(CommandId=command_id)

    assert wait_final(standin, command_id, instance_id)["Status"] == "Cancelled"


def test_undelivered_invocation_times_out_after_delivery_plus_execution_timeout(standin: StandIn) -> None:
    """AWS: Pending turns DeliveryTimedOut after Timeout (seconds) + Execution timeout; the scale only
    shortens the wait (31 s here, reported after 0.31 s)."""
    (instance_id,) = standin.launch(1, delivery=NEVER, delivery_time_scale=0.01)
    command_id = send(standin, [instance_id], "true", TimeoutSeconds=30, parameters={"executionTimeout": ["1"]})
    item = wait_final(standin, command_id, instance_id)

    assert (item["Status"], item["StatusDetails"], item["ResponseCode"]) == ("TimedOut", "DeliveryTimedOut", -1)
    assert standin.sent_command(command_id).runs[instance_id].process is None  # nothing ran


def test_undelivered_invocation_stays_pending_within_the_execution_timeout(standin: StandIn) -> None:
    """The delivery timeout alone (30 s, 0.3 s scaled) does not end it: the execution timeout adds 3600 s."""
    (instance_id,) = standin.launch(1, delivery=NEVER, delivery_time_scale=0.01)
    command_id = send(standin, [instance_id], "true", TimeoutSeconds=30)
    ssm = standin.client("ssm")
    time.sleep(1.0)
    item = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
    ssm.cancel_command(CommandId=command_id)

    assert item["Status"] == "Pending"


def test_an_offline_agent_picks_a_command_up_only_once_it_is_back(standin: StandIn) -> None:
    """AWS: an invocation stays Pending while the agent has not received it. Sent with an online one,
    the lost instance's invocation is still Pending once the online one finished, and runs when its
    agent is back."""
    online, lost = standin.launch(2)
    standin.service.lose_instance(lost)
    command_id = send(standin, [online, lost], "echo ran-here")

    assert wait_final(standin, command_id, online)["Status"] == "Success"
    ssm = standin.client("ssm")
    assert ssm.get_command_invocation(CommandId=command_id, InstanceId=lost)["Status"] == "Pending"
    assert standin.sent_command(command_id).runs[lost].process is None
    standin.service.restore_instance(lost)
    item = wait_final(standin, command_id, lost)

    assert (item["Status"], item["StandardOutputContent"]) == ("Success", "ran-here\n")


def test_a_command_cut_short_by_a_reboot_runs_again_from_the_start_once_the_agent_is_back(standin: StandIn) -> None:
    """AWS's agent resubmits the documents it began and did not finish as it starts again (after a reboot),
    a CancelCommand sent meanwhile notwithstanding: the script runs again, with the same command id."""
    (instance_id,) = standin.launch(1)
    script = 'echo "run $SSM_COMMAND_ID" >> /tmp/runs\n[ -e /tmp/go ] || sleep 60\necho finished'
    command_id = send(standin, [instance_id], script)
    runs = standin.instance_path(instance_id, "/tmp/runs")
    wait_until(lambda: runs.exists(), "the first run")
    standin.service.lose_instance(instance_id)
    standin.client("ssm").cancel_command(CommandId=command_id)
    standin.instance_path(instance_id, "/tmp/go").touch()
    standin.service.restore_instance(instance_id, resume=True)
    item = wait_final(standin, command_id, instance_id)

    assert (item["Status"], item["StandardOutputContent"]) == ("Success", "finished\n")
    assert runs.read_text() == f"run {command_id}\nrun {command_id}\n"


def test_an_offline_agent_that_never_comes_back_gives_delivery_timed_out(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1, delivery_time_scale=0.01)
    standin.service.lose_instance(instance_id)
    command_id = send(standin, [instance_id], "true", TimeoutSeconds=30, parameters={"executionTimeout": ["1"]})
    item = wait_final(standin, command_id, instance_id)

    assert (item["Status"], item["StatusDetails"]) == ("TimedOut", "DeliveryTimedOut")


def test_describe_instance_information_reports_ping_status(standin: StandIn) -> None:
    online, lost = standin.launch(2)
    standin.instance(lost).ping_status = "ConnectionLost"
    rows = standin.client("ssm").describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": [online, lost, "i-0000000000000dead"]}]
    )["InstanceInformationList"]

    assert {row["InstanceId"]: row["PingStatus"] for row in rows} == {
        online: "Online",
        lost: "ConnectionLost",
    }


def test_cloudwatch_output_is_written_while_the_command_runs(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    group = "/ssm-deploy/standin-test"
    command_id = send(
        standin,
        [instance_id],
        "echo first\nsleep 1.5\necho second\necho oops >&2",
        CloudWatchOutputConfig={"CloudWatchOutputEnabled": True, "CloudWatchLogGroupName": group},
    )
    logs = standin.client("logs")
    stream = f"{command_id}/{instance_id}/aws-runShellScript/stdout"
    deadline = time.monotonic() + 5
    early: list[str] = []
    while time.monotonic() < deadline and not early:
        try:
            early = [e["message"] for e in logs.get_log_events(logGroupName=group, logStreamName=stream)["events"]]
        except logs.exceptions.ResourceNotFoundException:
            time.sleep(0.05)
    status_when_seen = standin.client("ssm").get_command_invocation(CommandId=command_id, InstanceId=instance_id)
    wait_final(standin, command_id, instance_id)
    final = [e["message"] for e in logs.get_log_events(logGroupName=group, logStreamName=stream)["events"]]
    errors = logs.get_log_events(logGroupName=group, logStreamName=stream.replace("stdout", "stderr"))

    assert early == ["first\n"]  # uploaded while the command runs: its line break kept
    assert status_when_seen["Status"] == "InProgress"
    assert final[0] == "first\n" and [message.removesuffix("\n") for message in final[1:]] == ["second"]
    assert [e["message"].removesuffix("\n") for e in errors["events"]] == ["oops"]


def test_instances_read_parameters_with_the_aws_cli(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    key = standin.create_key("cli test")
    standin.put_secret("/standin/cli/value", "from-parameter-store", key)
    script = "aws ssm get-parameter --name /standin/cli/value --with-decryption --query Parameter.Value --output text"
    item = wait_final(standin, send(standin, [instance_id], script), instance_id, timeout=30)

    assert item["StandardOutputContent"].strip() == "from-parameter-store", item["StandardErrorContent"]


@pytest.mark.parametrize("action", ["get_parameter", "get_parameters"])
def test_decrypt_denial_answers_access_denied_naming_kms(standin: StandIn, action: str) -> None:
    key = standin.create_key(f"denied {action}")
    standin.put_secret(f"/standin/denied/{action}", "nope", key)
    standin.service.deny_decrypt(key)
    ssm = standin.client("ssm")
    request: dict[str, Any] = (
        {"Name": f"/standin/denied/{action}"} if action == "get_parameter" else {"Names": [f"/standin/denied/{action}"]}
    )

    with pytest.raises(ssm.exceptions.ClientError) as caught:
        getattr(ssm, action)(WithDecryption=True, **request)
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "kms:Decrypt" in caught.value.response["Error"]["Message"]
    getattr(ssm, action)(WithDecryption=False, **request)  # reading without decryption still works


def test_records_the_role_that_sent_each_command(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    credentials = standin.client("sts").assume_role(
        RoleArn="arn:aws:iam::123456789012:role/deploy-recorded", RoleSessionName="recorder"
    )["Credentials"]
    import boto3

    ssm = boto3.client(
        "ssm",
        endpoint_url=standin.endpoint,
        region_name=standin.region,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
    command_id = ssm.send_command(
        InstanceIds=[instance_id], DocumentName="AWS-RunShellScript", Parameters={"commands": ["true"]}
    )["Command"]["CommandId"]

    assert standin.sent_command(command_id).caller_arn == (
        "arn:aws:sts::123456789012:assumed-role/deploy-recorded/recorder"
    )


def cloudwatch_messages(standin: StandIn, group: str, stream: str) -> list[dict[str, Any]]:
    logs = standin.client("logs")
    try:
        return list(logs.get_log_events(logGroupName=group, logStreamName=stream)["events"])
    except logs.exceptions.ResourceNotFoundException:
        return []


def send_streamed(standin: StandIn, instance_id: str, script: str, group: str) -> str:
    return send(
        standin,
        [instance_id],
        script,
        CloudWatchOutputConfig={"CloudWatchOutputEnabled": True, "CloudWatchLogGroupName": group},
    )


def test_lines_reach_cloudwatch_packed_in_events_crlf_as_lf(standin: StandIn) -> None:
    """The agent packs the lines of a tick in one event, line breaks kept (CRLF as LF), and drops an event's
    last line break only once the output ended (standin.cloudwatch; test_agent_output_file.py)."""
    (instance_id,) = standin.launch(1)
    group = "/ssm-deploy/standin-blank"
    command_id = send_streamed(standin, instance_id, "echo one\necho\nsleep 1\nprintf 'two\\r\\n\\n'", group)
    item = wait_final(standin, command_id, instance_id)
    stream = f"{command_id}/{instance_id}/aws-runShellScript/stdout"

    assert (item["Status"], item["StandardOutputContent"]) == ("Success", "one\n\ntwo\r\n\n")
    first, last = [e["message"] for e in cloudwatch_messages(standin, group, stream)]
    assert first == "one\n\n" and last in ("two\n\n", "two\n")  # "two" came as the command ended, or just before


def test_an_instance_clock_off_by_minutes_stamps_its_events_with_its_own_time(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1, clock_skew=-600)
    group = "/ssm-deploy/standin-skew"
    before = time.time() * 1000
    command_id = send_streamed(standin, instance_id, "echo late", group)
    wait_final(standin, command_id, instance_id)
    (logged,) = cloudwatch_messages(standin, group, f"{command_id}/{instance_id}/aws-runShellScript/stdout")

    assert before - 605_000 <= logged["timestamp"] <= time.time() * 1000 - 595_000


def test_an_instance_role_that_may_not_write_logs_streams_nothing_and_still_runs(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1, cloudwatch_writes=False)
    group = "/ssm-deploy/standin-denied"
    command_id = send_streamed(standin, instance_id, "echo still-ran", group)
    item = wait_final(standin, command_id, instance_id)

    assert (item["Status"], item["StandardOutputContent"]) == ("Success", "still-ran\n")
    assert cloudwatch_messages(standin, group, f"{command_id}/{instance_id}/aws-runShellScript/stdout") == []
    assert standin.sent_command(command_id).runs[instance_id].cloudwatch_refused


def test_a_line_longer_than_200000_bytes_reaches_cloudwatch_in_pieces_of_200000_bytes(standin: StandIn) -> None:
    """The agent reads its output file 200,000 bytes at most per ReadSlice: a longer line is cut there, each
    piece its own event, the rest of the line starting the next (amazon-ssm-agent cloudwatchlogsservice.go)."""
    (instance_id,) = standin.launch(1)
    group = "/ssm-deploy/standin-long-line"
    command_id = send_streamed(
        standin, instance_id, "printf 'a%.0s' $(seq 450000); printf 'b\\r\\n'; sleep 1; echo short", group
    )
    item = wait_final(standin, command_id, instance_id, timeout=60)
    stream = f"{command_id}/{instance_id}/aws-runShellScript/stdout"
    messages = [e["message"] for e in cloudwatch_messages(standin, group, stream)]

    assert item["Status"] == "Success"
    assert [len(message) for message in messages[:3]] == [200_000, 200_000, 50_002]
    assert messages[2].endswith("ab\n") and [message.removesuffix("\n") for message in messages[3:]] == ["short"]


def test_a_lone_blank_line_that_ends_the_output_never_reaches_cloudwatch_and_the_agent_waits_60_ticks(
    standin: StandIn,
) -> None:
    """Its event is empty once the output ended: the SDK refuses the call every tick (test_agent_output_file.py).
    A tick between the blank line's write and the output's end reads it before the end: an event "\\n" of its
    own, as the agent sends it (1 run in 15 on a loaded machine); the command is then sent again."""
    (instance_id,) = standin.launch(1)
    group = "/ssm-deploy/standin-lone-blank"
    for _ in range(5):
        command_id = send_streamed(standin, instance_id, "echo first\nsleep 1\necho", group)
        item = wait_final(standin, command_id, instance_id)
        stream = f"{command_id}/{instance_id}/aws-runShellScript/stdout"
        messages = [e["message"] for e in cloudwatch_messages(standin, group, stream)]
        if messages != ["first\n", "\n"]:  # the blank line was read once the output had ended
            break
    started, ended = (
        datetime.fromisoformat(item[field]) for field in ("ExecutionStartDateTime", "ExecutionEndDateTime")
    )

    assert (item["Status"], item["StandardOutputContent"]) == ("Success", "first\n\n")
    assert messages == ["first\n"]
    # the status turned final only once the agent gave up waiting for its upload
    assert (ended - started).total_seconds() >= 1 + AGENT_FINAL_TICKS * standin.service.upload_interval
