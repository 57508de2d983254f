"""Run a script on stand-in instances through Run Command (boto3, the real HTTP endpoint) and wait."""

from __future__ import annotations

import time
from typing import Any

from standin import StandIn

FINAL = {"Success", "Failed", "TimedOut", "Cancelled"}
TIMEOUT = 30


def run(
    standin: StandIn, instance_ids: list[str], script: str, parameters: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Each instance's final GetCommandInvocation answer, in the order of ``instance_ids``.
    ``parameters``: other AWS-RunShellScript parameters (``{"workingDirectory": "/srv"}``)."""
    ssm = standin.client("ssm")
    command_id = ssm.send_command(
        InstanceIds=instance_ids,
        DocumentName="AWS-RunShellScript",
        Parameters={"commands": script.splitlines(), **{k: [v] for k, v in (parameters or {}).items()}},
    )["Command"]["CommandId"]
    deadline = time.monotonic() + TIMEOUT
    answers = []
    for instance_id in instance_ids:
        while True:
            item: dict[str, Any] = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
            if item["Status"] in FINAL:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{instance_id} did not finish: {item['Status']}")
            time.sleep(0.05)
        answers.append(item)
    return answers


def run_one(standin: StandIn, instance_id: str, script: str, **parameters: str) -> dict[str, Any]:
    (answer,) = run(standin, [instance_id], script, parameters)
    return answer
