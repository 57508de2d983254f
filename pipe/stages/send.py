"""Send the deploy with Run Command, and cancel it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from pipe.aws.errors import error_code, error_message, is_access_denied
from pipe.config.documents import SCRIPT_DOCUMENTS, SHELL
from pipe.config.settings import DeploySettings
from pipe.config.targets import Target
from pipe.errors import PipeError

DOCUMENT_NAME = SHELL  # the default
MAX_INSTANCE_IDS = 50  # SendCommand InstanceIds
log = logging.getLogger("ssm-deploy")


def send_parameters(settings: DeploySettings, script: list[str]) -> dict[str, list[str]]:
    if settings.document_name not in SCRIPT_DOCUMENTS:
        return dict(settings.document_parameters)
    parameters = {"commands": script, "executionTimeout": [str(settings.execution_timeout)]}
    if settings.working_directory:
        parameters["workingDirectory"] = [settings.working_directory]
    return {**settings.document_parameters, **parameters}


@dataclass(frozen=True)
class SentCommand:
    command_id: str
    instance_ids: tuple[str, ...]  # empty for a TARGETS command: SSM resolves its instances


def send_commands(ssm: Any, settings: DeploySettings, script: list[str]) -> list[SentCommand]:
    """One command for TARGETS, else one per 50 instance ids (SendCommand's limit).

    If a later command is refused, the ones already sent are cancelled: nothing is left half-done.
    """
    if settings.targets:
        return [SentCommand(send_command(ssm, settings, script, targets=settings.targets), ())]
    sent: list[SentCommand] = []
    for start in range(0, len(settings.instance_ids), MAX_INSTANCE_IDS):
        chunk = settings.instance_ids[start : start + MAX_INSTANCE_IDS]
        try:
            sent.append(SentCommand(send_command(ssm, settings, script, instance_ids=chunk), tuple(chunk)))
        except PipeError as error:
            if not sent:
                raise
            for command in sent:
                cancel_command(ssm, command.command_id)
            cancelled = ", ".join(command.command_id for command in sent)
            raise PipeError(f"{error} The commands already sent were cancelled: {cancelled}.") from None
    return sent


def send_command(
    ssm: Any,
    settings: DeploySettings,
    script: list[str],
    instance_ids: list[str] | None = None,
    targets: list[Target] | None = None,
) -> str:
    """Send the script to ``instance_ids`` (default: all of them) or ``targets``; return the command id."""
    request: dict[str, Any] = {
        "DocumentName": settings.document_name,
        "Comment": settings.comment,
        "TimeoutSeconds": settings.delivery_timeout,
        "Parameters": send_parameters(settings, script),
        **({"DocumentVersion": settings.document_version} if settings.document_version else {}),
        "MaxConcurrency": settings.max_concurrency,
        "MaxErrors": settings.max_errors,
    }
    if targets:
        request["Targets"] = [target.to_api() for target in targets]
    else:
        request["InstanceIds"] = instance_ids if instance_ids is not None else settings.instance_ids
    if settings.output_s3_bucket:
        request["OutputS3BucketName"] = settings.output_s3_bucket
        request["OutputS3Region"] = settings.region
        if settings.output_s3_prefix:
            request["OutputS3KeyPrefix"] = settings.output_s3_prefix
    if settings.stream_output:
        request["CloudWatchOutputConfig"] = {
            "CloudWatchLogGroupName": settings.log_group,
            "CloudWatchOutputEnabled": True,
        }
    try:
        response = ssm.send_command(**request)
    except ClientError as error:
        raise PipeError(_send_error_message(error, settings)) from None
    return str(response["Command"]["CommandId"])


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
            f"arn:aws:ssm:{settings.region}::document/{settings.document_name} and on the target instances "
            f"(arn:aws:ec2:{settings.region}:<account>:instance/*)."
        )
    if code in ("InvalidDocument", "InvalidDocumentVersion"):
        return (
            f"DOCUMENT_NAME: SSM refused {settings.document_name}"
            + (f" version {settings.document_version}" if settings.document_version else "")
            + f" ({message}). Check the name and version, and that the document is in {settings.region} "
            "and shared with this account."
        )
    if code == "InvalidParameters":
        return f"SSM refused the command's parameters ({message}). Check COMMANDS and WORKING_DIRECTORY."
    return f"SendCommand failed ({code}: {message})."
