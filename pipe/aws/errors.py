"""Shared boto3 client settings and AWS error helpers."""

from __future__ import annotations

import os
import re
from typing import Literal

from botocore.config import Config
from botocore.exceptions import ClientError

DEFAULT_MAX_ATTEMPTS = 10


def client_config() -> Config:
    """Adaptive retries back off on throttling (Rate exceeded) and on connection errors.

    boto3's standard AWS_MAX_ATTEMPTS (attempts in all, the first included) and AWS_RETRY_MODE
    environment variables tune them. SendCommand is retried only when it cannot have run: see
    ``pipe.stages.send.forbid_unsafe_retries``.
    """
    attempts_text = os.environ.get("AWS_MAX_ATTEMPTS", "").strip()
    attempts = DEFAULT_MAX_ATTEMPTS
    if re.fullmatch(r"[0-9]{1,3}", attempts_text) and int(attempts_text) > 0:
        attempts = int(attempts_text)
    mode: Literal["legacy", "standard", "adaptive"] = "adaptive"
    if os.environ.get("AWS_RETRY_MODE") in ("legacy", "standard"):
        mode = "standard" if os.environ.get("AWS_RETRY_MODE") == "standard" else "legacy"
    return Config(
        # total_max_attempts counts the first attempt, as AWS_MAX_ATTEMPTS does; Config's max_attempts
        # counts retries only, so it made AWS_MAX_ATTEMPTS=1 two attempts
        retries={"mode": mode, "total_max_attempts": attempts},
        connect_timeout=10,
        read_timeout=30,
        user_agent_extra="ssm-deploy",
    )


def error_code(error: ClientError) -> str:
    code = str(error.response.get("Error", {}).get("Code", ""))
    if code.isdigit():  # an error body botocore could not parse (e.g. XML from a proxy): use its <Code>
        found = re.search(r"<Code>([^<]+)</Code>", str(error.response.get("Error", {}).get("Message", "")))
        return found.group(1) if found else code
    return code


def error_message(error: ClientError) -> str:
    message = str(error.response.get("Error", {}).get("Message", "")) or str(error)
    found = re.search(r"<Message>([^<]+)</Message>", message)
    return found.group(1) if found else message


def is_access_denied(error: ClientError) -> bool:
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 403 or error_code(error) in {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}


_SERVICE_OF = {
    "FilterLogEvents": "logs",
    "GetCallerIdentity": "sts",
    "AssumeRole": "sts",
}


def permission_for(operation: str) -> str:
    """The IAM action behind an API operation, e.g. ListCommandInvocations -> ssm:ListCommandInvocations."""
    return f"{_SERVICE_OF.get(operation, 'ssm')}:{operation}"


def explain(error: ClientError) -> str:
    """One sentence for an AWS refusal outside any command: what was refused and, for a denial, the fix."""
    fix = f" Fix: allow {permission_for(error.operation_name)}." if is_access_denied(error) else ""
    return f"AWS refused {error.operation_name} ({error_code(error)}: {error_message(error)}).{fix}"
