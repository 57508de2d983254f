"""Read each invocation's final result: exit code and the output SSM kept."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from pipe.aws.errors import error_code
from pipe.model import Invocation

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

NOT_YET_ATTEMPTS = 10


def fetch_result(
    ssm: SSMClient, command_id: str, invocation: Invocation, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Fill in response code and output; retries the InvocationDoesNotExist race of a new command."""
    for attempt in range(NOT_YET_ATTEMPTS):
        try:
            item = ssm.get_command_invocation(CommandId=command_id, InstanceId=invocation.instance_id)
            break
        except ClientError as error:
            if error_code(error) != "InvocationDoesNotExist" or attempt == NOT_YET_ATTEMPTS - 1:
                raise
            sleep(0.5)
    invocation.status = item.get("Status", invocation.status)
    invocation.status_details = item.get("StatusDetails", invocation.status_details)
    code = item.get("ResponseCode")
    invocation.response_code = int(code) if code is not None else None
    invocation.elapsed = item.get("ExecutionElapsedTime", "")
    invocation.stdout = item.get("StandardOutputContent", "") or ""
    invocation.stderr = item.get("StandardErrorContent", "") or ""
