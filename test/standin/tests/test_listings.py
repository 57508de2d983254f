"""The stand-in's ListCommands and ListCommandInvocations: filters, pages, counts and the plugin
Output, as the SSM API Reference and the SSM Agent's source describe them."""

from __future__ import annotations

import datetime
import time
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from standin import StandIn
from standin.fleet import UNDELIVERABLE
from standin.listings import ERROR_TITLE, PLUGIN_OUTPUT_CAPACITY, TRUNC_ERROR, TRUNC_OUT, truncate_output

FINAL = {"Success", "Failed", "TimedOut", "Cancelled"}


def send(standin: StandIn, instance_ids: list[str], script: str, **extra: Any) -> dict[str, Any]:
    response = standin.client("ssm").send_command(
        InstanceIds=instance_ids, DocumentName="AWS-RunShellScript", Parameters={"commands": [script]}, **extra
    )
    command: dict[str, Any] = response["Command"]
    return command


def wait_done(standin: StandIn, command_id: str, timeout: float = 20) -> dict[str, Any]:
    ssm = standin.client("ssm")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        command: dict[str, Any] = ssm.list_commands(CommandId=command_id)["Commands"][0]
        if command["Status"] in FINAL:
            return command
        time.sleep(0.05)
    raise AssertionError(f"{command_id} did not finish")


def since(command: dict[str, Any]) -> str:
    moment: datetime.datetime = command["RequestedDateTime"]
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the agent's Output, pure --------------------------------------------------------------------
def test_output_that_fits_is_stdout_then_the_error_title_then_stderr() -> None:
    assert truncate_output("out\n", "") == "out\n"
    assert truncate_output("out\n", "err\n") == "out\n" + ERROR_TITLE + "err\n"


def test_long_output_is_cut_to_the_agents_capacity_with_marks() -> None:
    both = truncate_output("o" * 5000, "e" * 5000)
    only_out = truncate_output("o" * 5000, "e" * 10)
    only_err = truncate_output("o" * 10, "e" * 5000)

    assert both.endswith(TRUNC_ERROR) and TRUNC_OUT + ERROR_TITLE in both
    assert only_out.endswith(ERROR_TITLE + "e" * 10) and TRUNC_OUT in only_out
    assert only_err.startswith("o" * 10 + ERROR_TITLE) and only_err.endswith(TRUNC_ERROR)
    for text in (both, only_out, only_err):
        assert len(text.encode()) <= PLUGIN_OUTPUT_CAPACITY


# --- through the API -------------------------------------------------------------------------------
def test_list_commands_filters_by_time_and_document_newest_first_with_counts(standin: StandIn) -> None:
    ids = standin.launch(3, delivery=UNDELIVERABLE)
    good = standin.launch(2)
    first = send(standin, good, "exit 3")
    second = send(standin, good + ids, "true", Comment=uuid.uuid4().hex)
    for command in (first, second):
        wait_done(standin, command["CommandId"])
    ssm = standin.client("ssm")
    filters = [
        {"key": "InvokedAfter", "value": since(first)},
        {"key": "DocumentName", "value": "AWS-RunShellScript"},
    ]
    listed = ssm.list_commands(Filters=filters)["Commands"]
    ours = [row for row in listed if row["CommandId"] in (first["CommandId"], second["CommandId"])]

    assert [row["CommandId"] for row in ours] == [second["CommandId"], first["CommandId"]]
    newer, older = ours
    assert (older["TargetCount"], older["CompletedCount"], older["ErrorCount"]) == (2, 2, 2)
    assert (newer["TargetCount"], newer["CompletedCount"], newer["ErrorCount"]) == (5, 5, 0)
    assert not ssm.list_commands(Filters=[{"key": "DocumentName", "value": "AWS-Nothing"}])["Commands"]
    later = [{"key": "InvokedAfter", "value": "2999-01-01T00:00:00Z"}]
    assert not ssm.list_commands(Filters=later)["Commands"]


def test_list_commands_pages_at_most_fifty(standin: StandIn) -> None:
    (instance_id,) = standin.launch(1)
    for _ in range(3):
        send(standin, [instance_id], "true")
    ssm = standin.client("ssm")
    first = ssm.list_commands(MaxResults=2)
    second = ssm.list_commands(MaxResults=2, NextToken=first["NextToken"])

    assert len(first["Commands"]) == 2
    assert not {row["CommandId"] for row in first["Commands"]} & {row["CommandId"] for row in second["Commands"]}
    with pytest.raises(ClientError) as refused:
        ssm.list_commands(MaxResults=51)
    assert refused.value.response["Error"]["Code"] == "ValidationException"


def test_invocations_filter_by_status_and_details(standin: StandIn) -> None:
    (good,) = standin.launch(1)
    (gone,) = standin.launch(1, delivery=UNDELIVERABLE)
    command = send(standin, [good, gone], "true")
    wait_done(standin, command["CommandId"])
    ssm = standin.client("ssm")

    def listed(value: str) -> list[str]:
        rows = ssm.list_command_invocations(CommandId=command["CommandId"], Filters=[{"key": "Status", "value": value}])
        return [row["InstanceId"] for row in rows["CommandInvocations"]]

    assert listed("Success") == [good]
    assert listed("Failed") == [gone]
    assert listed("Undeliverable") == [gone]
    assert listed("TimedOut") == []
    with pytest.raises(ClientError) as refused:
        ssm.list_command_invocations(
            CommandId=command["CommandId"], Filters=[{"key": "ExecutionStage", "value": "Executing"}]
        )
    assert refused.value.response["Error"]["Code"] == "InvalidFilterKey"


def test_details_carry_the_agents_output_exit_code_and_times(standin: StandIn) -> None:
    (short, long) = standin.launch(2)
    big = f'if [ "$AWS_SSM_INSTANCE_ID" = "{long}" ]; then head -c 6000 /dev/zero | tr "\\0" o; fi'
    command = send(standin, [short, long], big + "\necho out\necho err >&2\nexit 2")
    wait_done(standin, command["CommandId"])
    rows = standin.client("ssm").list_command_invocations(CommandId=command["CommandId"], Details=True)
    plugins = {row["InstanceId"]: row["CommandPlugins"][0] for row in rows["CommandInvocations"]}

    assert plugins[short]["Output"] == "out\n" + ERROR_TITLE + "err\n"
    assert plugins[short]["ResponseCode"] == 2
    assert plugins[short]["ResponseFinishDateTime"] >= plugins[short]["ResponseStartDateTime"]
    assert TRUNC_OUT + ERROR_TITLE + "err\n" in plugins[long]["Output"]
