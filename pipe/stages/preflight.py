"""Checks made before anything is sent: instances reachable by SSM, parameters readable."""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError

from pipe.aws.errors import error_code, error_message, is_access_denied, permission_for
from pipe.config.settings import SecretRef
from pipe.errors import PipeError
from pipe.runtime.redaction import Redactor

GET_PARAMETERS_BATCH = 10  # ssm:GetParameters takes at most 10 names
DESCRIBE_FILTER_BATCH = 50
log = logging.getLogger("ssm-deploy")


def check_instances(ssm: Any, instance_ids: list[str], region: str) -> None:
    """Refuse instances that SSM does not manage or whose agent is not online."""
    seen: dict[str, str] = {}
    try:
        for start in range(0, len(instance_ids), DESCRIBE_FILTER_BATCH):
            batch = instance_ids[start : start + DESCRIBE_FILTER_BATCH]
            paginator = ssm.get_paginator("describe_instance_information")
            pages = paginator.paginate(Filters=[{"Key": "InstanceIds", "Values": batch}])
            for page in pages:
                for info in page.get("InstanceInformationList", []):
                    seen[info["InstanceId"]] = info.get("PingStatus", "Unknown")
    except ClientError as error:
        if is_access_denied(error):
            log.warning(
                "Skipping the agent check: the deploy role lacks ssm:DescribeInstanceInformation "
                f"({error_message(error)}). Offline instances will show up as failed invocations instead."
            )
            return
        raise
    unmanaged = [i for i in instance_ids if i not in seen]
    offline = [f"{i} ({seen[i]})" for i in instance_ids if i in seen and seen[i] != "Online"]
    problems = []
    if unmanaged:
        problems.append(
            f"not managed by SSM in {region}: {', '.join(unmanaged)}. Check that the instance exists in "
            f"{region}, runs the SSM Agent, and has an instance profile with AmazonSSMManagedInstanceCore"
        )
    if offline:
        problems.append(
            f"SSM Agent not online: {', '.join(offline)}. Check that the instance is running and the "
            "agent is started (systemctl status amazon-ssm-agent) and can reach the SSM endpoints"
        )
    if problems:
        raise PipeError("INSTANCE_IDS: nothing was sent. Instances " + "; ".join(problems) + ".")
    log.info(f"All {len(instance_ids)} instance(s) have the SSM Agent online")


PROBE_COMMAND_ID = "00000000-0000-4000-8000-000000000000"  # a command id that never exists


def check_follow_permissions(ssm: Any, role: str, instance_id: str) -> None:
    """Refuse to send a command the deploy role could not follow: probe the read calls first."""
    for operation, request in (
        ("list_commands", {"CommandId": PROBE_COMMAND_ID, "MaxResults": 1}),
        ("list_command_invocations", {"CommandId": PROBE_COMMAND_ID, "MaxResults": 1}),
        ("get_command_invocation", {"CommandId": PROBE_COMMAND_ID, "InstanceId": instance_id}),
    ):
        try:
            getattr(ssm, operation)(**request)
        except ClientError as error:
            if is_access_denied(error):
                raise PipeError(
                    f"Nothing was sent: {role} could send the command but not follow it ({error_message(error)}). "
                    f"Fix: allow {permission_for(error.operation_name)} for the deploy role."
                ) from None
            # any other answer (no such command or invocation) proves the permission


def check_parameters(ssm: Any, secrets: list[SecretRef], redactor: Redactor, role: str) -> None:
    """Read every SECRETS parameter with decryption; keep values only to mask them in output."""
    names = list(dict.fromkeys(ref.parameter for ref in secrets))
    missing: list[str] = []
    for start in range(0, len(names), GET_PARAMETERS_BATCH):
        batch = names[start : start + GET_PARAMETERS_BATCH]
        try:
            response = ssm.get_parameters(Names=batch, WithDecryption=True)
        except ClientError as error:
            raise PipeError(_parameter_access_message(error, batch, role)) from None
        for parameter in response.get("Parameters", []):
            redactor.add(parameter.get("Value"), name=f"SECRETS parameter {parameter.get('Name')}")
        missing.extend(response.get("InvalidParameters", []))
    if missing:
        owners = [ref.env_name for ref in secrets if ref.parameter in missing]
        raise PipeError(
            f"SECRETS: nothing was sent. Parameter(s) not found: {', '.join(missing)} "
            f"(for {', '.join(owners)}). Create them in Parameter Store in this region and account, "
            "or fix the names."
        )
    if names:
        log.info(f"Checked {len(names)} parameter(s): they exist and the deploy role can decrypt them")


def _parameter_access_message(error: ClientError, names: list[str], role: str) -> str:
    message = error_message(error)
    listed = ", ".join(names)
    if is_access_denied(error) and "kms" in message.lower():  # "kms:Decrypt", "Service: AWSKMS"
        return (
            f"SECRETS: nothing was sent. {role} may read {listed} but cannot decrypt them: KMS denied "
            f"kms:Decrypt ({message}). Fix: allow kms:Decrypt for {role} in the key policy of the "
            "parameters' KMS key (or by IAM with a kms:ViaService condition for ssm.<region>.amazonaws.com)."
        )
    if is_access_denied(error):
        return (
            f"SECRETS: nothing was sent. {role} is not allowed ssm:GetParameters on {listed} "
            f"({message}). Fix: allow ssm:GetParameters on arn:aws:ssm:<region>:<account>:parameter"
            "/deploy/<environment>/* in the deploy role's policy."
        )
    return f"SECRETS: could not read {listed} ({error_code(error)}: {message})."
