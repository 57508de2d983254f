"""The full output of an invocation from S3, when SendCommand was given OUTPUT_S3_BUCKET.

The SSM Agent writes ``<prefix>/<command id>/<instance id>/awsrunShellScript/0.awsrunShellScript/
stdout`` (and ``stderr``) when the command ends; GetCommandInvocation keeps only the first 24,000
(8,000) characters, so this is where the rest is read from when it was not streamed.
"""

from __future__ import annotations

import codecs
import itertools
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from botocore.exceptions import ClientError

from pipe.aws.errors import error_code, error_message

PLUGIN_FOLDER = "awsrunShellScript/0.awsrunShellScript"
MAX_PIECE_CHARS = 1024 * 1024  # a longer line is handed on in pieces, so memory stays flat
CHUNK_BYTES = 64 * 1024
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
    return split_lines(body.iter_chunks(CHUNK_BYTES))


def split_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """The text of ``chunks`` a line at a time, ends kept, split at ``\\n`` only: a carriage return
    or a form feed is part of a line, for the printer to show (botocore's ``iter_lines`` splits there)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    parts: list[str] = []  # the line being read, in pieces: no copying as a long line grows
    size = 0
    for chunk in itertools.chain(chunks, [b""]):  # the empty chunk ends the decoding
        *ended, last = decoder.decode(chunk, final=not chunk).split("\n")
        if ended:
            yield "".join(parts) + ended[0] + "\n"
            yield from (f"{line}\n" for line in ended[1:])
            parts, size = [], 0
        parts.append(last)
        size += len(last)
        if size > MAX_PIECE_CHARS:
            yield "".join(parts)
            parts, size = [], 0
    if size:
        yield "".join(parts)
