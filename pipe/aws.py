"""Shared boto3 client settings and AWS error helpers."""

from __future__ import annotations

from botocore.config import Config
from botocore.exceptions import ClientError

# Adaptive retries back off on throttling (Rate exceeded) and on connection errors.
CLIENT_CONFIG = Config(
    retries={"mode": "adaptive", "max_attempts": 10},
    connect_timeout=10,
    read_timeout=30,
    user_agent_extra="ssm-deploy",
)


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def error_message(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Message", "")) or str(error)


def is_access_denied(error: ClientError) -> bool:
    return error_code(error) in {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}
