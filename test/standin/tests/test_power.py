"""EC2 StopInstances and StartInstances in the stand-in (``power.py``), through boto3 against the real HTTP
endpoint, as AWS documents them for SSM: a stopped instance runs nothing, its agent is ConnectionLost, a
command sent to it is Delayed until it starts, and one it was running is run again from the start then."""

from __future__ import annotations

from typing import Any

from support import wait_until

from standin import StandIn
from standin.tests.test_run_command import send, wait_final


def ping_status(standin: StandIn, instance_id: str) -> str:
    ssm = standin.client("ssm")
    rows = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [instance_id]}])
    return str(rows["InstanceInformationList"][0]["PingStatus"])


def invocation(standin: StandIn, command_id: str, instance_id: str) -> dict[str, Any]:
    item: dict[str, Any] = standin.client("ssm").get_command_invocation(CommandId=command_id, InstanceId=instance_id)
    return item


def test_a_stopped_instance_runs_nothing_and_a_command_sent_to_it_is_delayed_until_it_starts(
    standin: StandIn,
) -> None:
    (instance_id,) = standin.launch(1)
    started = send(standin, [instance_id], "setsid sleep 600 >/dev/null 2>&1 < /dev/null &\necho $!")
    pid = int(wait_final(standin, started, instance_id)["StandardOutputContent"])
    assert standin.host_pid(instance_id, pid) is not None  # a daemon it runs (pm2, say)
    ec2 = standin.client("ec2")

    ec2.stop_instances(InstanceIds=[instance_id])

    state = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "stopped"
    assert ping_status(standin, instance_id) == "ConnectionLost"
    assert standin.host_pid(instance_id, pid) is None  # it died with the instance
    command_id = send(standin, [instance_id], "echo ran-after-the-start")
    wait_until(lambda: invocation(standin, command_id, instance_id)["Status"] == "Delayed", "Delayed", 10)
    assert invocation(standin, command_id, instance_id)["StatusDetails"] == "Delayed"

    ec2.start_instances(InstanceIds=[instance_id])

    item = wait_final(standin, command_id, instance_id)
    assert (item["Status"], item["StandardOutputContent"]) == ("Success", "ran-after-the-start\n")
    assert ping_status(standin, instance_id) == "Online"


def test_a_command_running_when_its_instance_stops_stays_in_progress_and_runs_again_once_it_starts(
    standin: StandIn,
) -> None:
    (instance_id,) = standin.launch(1)
    script = 'echo "run $SSM_COMMAND_ID" >> /tmp/runs\n[ -e /tmp/go ] || sleep 60\necho finished'
    command_id = send(standin, [instance_id], script)
    runs = standin.instance_path(instance_id, "/tmp/runs")
    wait_until(lambda: runs.exists(), "the first run")
    ec2 = standin.client("ec2")

    ec2.stop_instances(InstanceIds=[instance_id])

    assert invocation(standin, command_id, instance_id)["Status"] == "InProgress"  # no agent reports its end
    assert standin.sent_command(command_id).runs[instance_id].killed
    standin.instance_path(instance_id, "/tmp/go").touch()
    ec2.start_instances(InstanceIds=[instance_id])
    item = wait_final(standin, command_id, instance_id)

    assert (item["Status"], item["StandardOutputContent"]) == ("Success", "finished\n")
    assert runs.read_text() == f"run {command_id}\nrun {command_id}\n"
