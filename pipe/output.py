"""Print what the instances printed into the build log, masked, labelled by instance and stream."""

from __future__ import annotations

import sys
from typing import TextIO

from pipe.redaction import Redactor

STDOUT_FIELD_LIMIT = 24000  # GetCommandInvocation StandardOutputContent
STDERR_FIELD_LIMIT = 8000  # GetCommandInvocation StandardErrorContent


class OutputPrinter:
    def __init__(self, redactor: Redactor, label_lines: bool, stream: TextIO | None = None) -> None:
        self._redactor = redactor
        self._label_lines = label_lines
        self._stream = stream or sys.stdout

    def print_lines(self, instance_id: str, text: str, is_stderr: bool = False) -> None:
        if not text:
            return
        prefix = f"{instance_id} | " if self._label_lines else ""
        marker = "[stderr] " if is_stderr else ""
        lines = self._redactor.redact(text).splitlines()
        self._stream.write("".join(f"{prefix}{marker}{line}\n" for line in lines))
        self._stream.flush()

    def print_header(self, text: str) -> None:
        self._stream.write(f"{text}\n")
        self._stream.flush()


def cut_notice(text: str, limit: int, what: str) -> str | None:
    """A note when SSM's capped output field was probably cut."""
    if len(text) < limit:
        return None
    return (
        f"{what} reached SSM's {limit:,}-character limit for GetCommandInvocation and may be cut; "
        "the full text is in the instance's SSM Agent logs (CloudWatch or S3 output when configured)."
    )
