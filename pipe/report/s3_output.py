"""The full output of an invocation from S3, when SendCommand was given OUTPUT_S3_BUCKET.

The SSM Agent writes ``<prefix>/<command id>/<instance id>/awsrunShellScript/0.awsrunShellScript/
stdout`` (and ``stderr``) when the command ends; GetCommandInvocation keeps only the first 24,000
(8,000) characters, so this is where the rest is read from when it was not streamed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from pipe.aws.errors import error_code, error_message

PLUGIN_FOLDER = "awsrunShellScript/0.awsrunShellScript"
log = logging.getLogger("ssm-deploy")


def output_key(prefix: str, command_id: str, instance_id: str, stream: str, folder: str = PLUGIN_FOLDER) -> str:
    parts = (prefix.strip("/"), command_id, instance_id, folder, stream)
    return "/".join(part for part in parts if part)


def read_lines(s3: Any, bucket: str, key: str) -> Iterator[str] | None:
    """The object's lines, streamed (never held whole); None when it is missing or unreadable."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as error:
        if error_code(error) not in ("NoSuchKey", "404"):
            log.warning(f"Could not read s3://{bucket}/{key} ({error_message(error)}): allow s3:GetObject on it.")
        return None
    return (line.decode("utf-8", errors="replace") for line in body.iter_lines(keepends=True))
