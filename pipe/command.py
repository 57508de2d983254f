"""Send the deploy with Run Command, and cancel it."""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError

from pipe.aws import error_code, error_message, is_access_denied
from pipe.errors import PipeError
from pipe.settings import DeploySettings

DOCUMENT_NAME = "AWS-RunShellScript"
log = logging.getLogger("ssm-deploy")


def send_parameters(settings: DeploySettings, script: list[str]) -> dict[str, list[str]]:
    parameters = {"commands": script, "executionTimeout": [str(settings.execution_timeout)]}
    if settings.working_directory:
        parameters["workingDirectory"] = [settings.working_directory]
    return parameters


def send_command(ssm: Any, settings: DeploySettings, script: list[str]) -> str:
    """Send the script to the instances; return the command id."""
    request: dict[str, Any] = {
        "InstanceIds": settings.instance_ids,
        "DocumentName": DOCUMENT_NAME,
        "Comment": settings.comment,
        "TimeoutSeconds": settings.delivery_timeout,
        "Parameters": send_parameters(settings, script),
    }
    if settings.stream_output:
        request["CloudWatchOutputConfig"] = {
            "CloudWatchLogGroupName": settings.log_group,
            "CloudWatchOutputEnabled": True,
        }
    try:
        response = ssm.send_command(**request)
    except ClientError as error:
        raise PipeError(_send_error_message(error, settings)) from None
    command_id = str(response["Command"]["CommandId"])
    return command_id


def cancel_command(ssm: Any, command_id: str, instance_ids: list[str] | None = None) -> bool:
    """Ask SSM to cancel the command (on every instance, or those given); True when SSM accepted."""
    try:
        if instance_ids:
            ssm.cancel_command(CommandId=command_id, InstanceIds=instance_ids)
        else:
            ssm.cancel_command(CommandId=command_id)
    except ClientError as error:
        log.error(f"Could not cancel command {command_id}: {error_code(error)}: {error_message(error)}")
        return False
    return True


def console_url(region: str, command_id: str) -> str:
    return f"https://{region}.console.aws.amazon.com/systems-manager/run-command/{command_id}?region={region}"


def _send_error_message(error: ClientError, settings: DeploySettings) -> str:
    code, message = error_code(error), error_message(error)
    if code == "InvalidInstanceId":
        return (
            f"INSTANCE_IDS: SSM refused the instances ({message}). Each must exist in "
            f"{settings.region}, be running, and be managed by SSM (agent online, instance profile "
            "with AmazonSSMManagedInstanceCore)."
        )
    if is_access_denied(error):
        return (
            f"The deploy role may not run commands ({message}). Fix: allow ssm:SendCommand on "
            f"arn:aws:ssm:{settings.region}::document/{DOCUMENT_NAME} and on the target instances "
            f"(arn:aws:ec2:{settings.region}:<account>:instance/*)."
        )
    if code == "InvalidParameters":
        return f"SSM refused the command's parameters ({message}). Check COMMANDS and WORKING_DIRECTORY."
    return f"SendCommand failed ({code}: {message})."
