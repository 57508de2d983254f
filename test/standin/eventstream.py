"""The ``application/vnd.amazon.eventstream`` wire format, as a server writes it.

Each message is a prelude (total length, headers length: two big-endian uint32, then the CRC32 of
those 8 bytes), the headers, the payload and the CRC32 of everything before it. A header is its
name's length (1 byte), the name, a value type (7: string) and the value's length (uint16) and
bytes. The AWS SDKs' decoders (botocore's ``eventstream.py``) check both CRCs and every length.
For the JSON protocol (CloudWatch Logs), the first message of a response is an ``initial-response``
event whose payload is the response's non-stream members (``{}`` for StartLiveTail).
"""

from __future__ import annotations

import json
import struct
from binascii import crc32
from typing import Any

STRING_HEADER = 7
CONTENT_TYPE = "application/vnd.amazon.eventstream"


def message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message."""
    encoded_headers = b"".join(_header(name, value) for name, value in headers.items())
    total = 12 + len(encoded_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded_headers))
    prelude += struct.pack(">I", crc32(prelude))
    body = prelude + encoded_headers + payload
    return body + struct.pack(">I", crc32(body))


def event(event_type: str, member: dict[str, Any]) -> bytes:
    """An event of the stream (``sessionStart``, ``sessionUpdate``, ``initial-response``)."""
    return message(
        {":message-type": "event", ":event-type": event_type, ":content-type": "application/json"},
        json.dumps(member).encode(),
    )


def exception(exception_type: str, text: str) -> bytes:
    """A modelled error inside the stream (``SessionTimeoutException``, ``SessionStreamingException``)."""
    return message(
        {":message-type": "exception", ":exception-type": exception_type, ":content-type": "application/json"},
        json.dumps({"message": text}).encode(),
    )


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return struct.pack(">B", len(raw_name)) + raw_name + struct.pack(">BH", STRING_HEADER, len(raw_value)) + raw_value
