"""SendCommand's AlarmConfiguration in the stand-in (sources in test/standin/command_alarm.py)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from standin import StandIn

FINAL = {"Success", "Failed", "TimedOut", "Cancelled"}


def alarm(standin: StandIn) -> str:
    name = f"deploy-5xx-{uuid.uuid4().hex[:6]}"
    standin.create_alarm(name)
    return name


def send(standin: StandIn, ids: list[str], script: str, configuration: dict[str, Any], **extra: Any) -> dict[str, Any]:
    command: dict[str, Any] = standin.client("ssm").send_command(
        InstanceIds=ids,
        DocumentName="AWS-RunShellScript",
        Parameters={"commands": script.splitlines()},
        AlarmConfiguration=configuration,
        **extra,
    )["Command"]
    return command


def wait_command(standin: StandIn, command_id: str, timeout: float = 20) -> dict[str, Any]:
    ssm = standin.client("ssm")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        command: dict[str, Any] = ssm.list_commands(CommandId=command_id)["Commands"][0]
        if command["Status"] in FINAL:
            return command
        time.sleep(0.05)
    raise AssertionError(f"{command_id} did not finish")


def invocations(standin: StandIn, command_id: str) -> dict[str, tuple[str, str]]:
    rows = standin.client("ssm").list_command_invocations(CommandId=command_id)["CommandInvocations"]
    return {row["InstanceId"]: (row["Status"], row["StatusDetails"]) for row in rows}


def test_an_alarm_that_stays_ok_lets_the_command_run_and_is_echoed(standin: StandIn) -> None:
    ids = standin.launch(2)
    name = alarm(standin)
    sent = send(standin, ids, "true", {"Alarms": [{"Name": name}]})
    done = wait_command(standin, sent["CommandId"])

    assert sent["AlarmConfiguration"] == {"IgnorePollAlarmFailure": False, "Alarms": [{"Name": name}]}
    assert (done["Status"], done["TriggeredAlarms"]) == ("Success", [])
    assert done["AlarmConfiguration"]["Alarms"] == [{"Name": name}]


def test_an_alarm_already_in_alarm_at_send_time_runs_nothing(standin: StandIn) -> None:
    ids = standin.launch(2)
    name = alarm(standin)
    standin.set_alarm(name, "ALARM")
    marker = "/srv/alarm-ran"
    sent = send(standin, ids, f"touch {marker}", {"Alarms": [{"Name": name}]})
    done = wait_command(standin, sent["CommandId"])

    assert done["Status"] == "Cancelled"
    assert done["TriggeredAlarms"] == [{"Name": name, "State": "ALARM"}]
    assert invocations(standin, sent["CommandId"]) == dict.fromkeys(ids, ("Cancelled", "Cancelled"))
    assert not any(standin.instance_path(i, marker).exists() for i in ids)


def test_an_alarm_during_the_rollout_stops_the_pending_invocations_only(standin: StandIn) -> None:
    ids = standin.launch(3)
    name = alarm(standin)
    sent = send(standin, ids, "sleep 0.6\ntouch /srv/alarm-done", {"Alarms": [{"Name": name}]}, MaxConcurrency="1")
    ssm = standin.client("ssm")
    while ssm.get_command_invocation(CommandId=sent["CommandId"], InstanceId=ids[0])["Status"] != "InProgress":
        time.sleep(0.02)
    standin.set_alarm(name, "ALARM", "5xx above threshold")
    while not ssm.list_commands(CommandId=sent["CommandId"])["Commands"][0]["TriggeredAlarms"]:
        time.sleep(0.02)
    standin.set_alarm(name, "OK")  # going back to OK does not undo the stop
    done = wait_command(standin, sent["CommandId"])

    assert invocations(standin, sent["CommandId"]) == {
        ids[0]: ("Success", "Success"),
        ids[1]: ("Cancelled", "Cancelled"),
        ids[2]: ("Cancelled", "Cancelled"),
    }
    assert (done["Status"], done["TriggeredAlarms"]) == ("Cancelled", [{"Name": name, "State": "ALARM"}])
    assert standin.instance_path(ids[0], "/srv/alarm-done").exists()


def test_an_alarm_that_cannot_be_read_stops_the_command_unless_poll_failures_are_ignored(standin: StandIn) -> None:
    ids = standin.launch(1)
    missing = f"no-such-alarm-{uuid.uuid4().hex[:6]}"
    strict = send(standin, ids, "true", {"Alarms": [{"Name": missing}]})
    lenient = send(standin, ids, "true", {"Alarms": [{"Name": missing}], "IgnorePollAlarmFailure": True})

    stopped, ran = wait_command(standin, strict["CommandId"]), wait_command(standin, lenient["CommandId"])

    assert (stopped["Status"], stopped["TriggeredAlarms"]) == ("Cancelled", [{"Name": missing, "State": "UNKNOWN"}])
    assert (ran["Status"], ran["TriggeredAlarms"]) == ("Success", [])


def test_an_alarm_configuration_names_exactly_one_alarm(standin: StandIn) -> None:
    ids = standin.launch(1)
    first, second = alarm(standin), alarm(standin)

    with pytest.raises(ClientError) as refused:
        send(standin, ids, "true", {"Alarms": [{"Name": first}, {"Name": second}]})

    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert "alarmConfiguration.alarms" in refused.value.response["Error"]["Message"]
