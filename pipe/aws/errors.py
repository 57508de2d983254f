"""AWS error helpers: what an error is, and the IAM action behind an operation."""

from __future__ import annotations

import re

from botocore.exceptions import ClientError


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
    "DescribeInstances": "ec2",
    **dict.fromkeys(
        (
            "DescribeTargetGroups",
            "DescribeTargetHealth",
            "DescribeTargetGroupAttributes",
            "RegisterTargets",
            "DeregisterTargets",
        ),
        "elasticloadbalancing",
    ),
}


def permission_for(operation: str) -> str:
    """The IAM action behind an API operation, e.g. ListCommandInvocations -> ssm:ListCommandInvocations."""
    return f"{_SERVICE_OF.get(operation, 'ssm')}:{operation}"


def explain(error: ClientError) -> str:
    """One sentence for an AWS refusal outside any command: what was refused and, for a denial, the fix."""
    fix = f" Fix: allow {permission_for(error.operation_name)}." if is_access_denied(error) else ""
    return f"AWS refused {error.operation_name} ({error_code(error)}: {error_message(error)}).{fix}"
