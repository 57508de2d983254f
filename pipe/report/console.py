"""Print what the instances printed into the build log: masked, labelled, coloured, within budget.

Bitbucket truncates a step's log beyond 50 MB, which would hide the summary. Each instance gets a
share of LOG_BUDGET_BYTES; past it, its lines are no longer printed but the last TAIL_LINES are
kept and shown at the end with a note saying how much was elided and where the full text is.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import TextIO

from colorlog.escape_codes import escape_codes

from pipe.runtime.redaction import Redactor

STDOUT_FIELD_LIMIT = 24000  # GetCommandInvocation StandardOutputContent
STDERR_FIELD_LIMIT = 8000  # GetCommandInvocation StandardErrorContent
LOG_BUDGET_BYTES = 40 * 1024 * 1024  # for all instances' output; Bitbucket cuts step logs at 50 MB
MIN_INSTANCE_BUDGET = 256 * 1024
TAIL_LINES = 100
PALETTE = ("cyan", "green", "yellow", "purple", "blue", "light_cyan", "light_green", "light_yellow", "light_purple")


@dataclass
class _InstanceLog:
    label: str
    printed_bytes: int = 0
    elided_lines: int = 0
    elided_bytes: int = 0
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))


class OutputPrinter:
    def __init__(
        self,
        redactor: Redactor,
        label_lines: bool,
        stream: TextIO | None = None,
        names: dict[str, str] | None = None,
        instance_count: int = 1,
        colour: bool | None = None,
        order: list[str] | None = None,
    ) -> None:
        """``order`` (the targeted instances) fixes each instance's colour across printers."""
        self._redactor = redactor
        self._label_lines = label_lines
        self._stream = stream or sys.stdout
        self._names = names or {}
        self._colour = colour if colour is not None else "NO_COLOR" not in os.environ
        self._budget = max(MIN_INSTANCE_BUDGET, LOG_BUDGET_BYTES // max(1, instance_count))
        self._instances: dict[str, _InstanceLog] = {}
        self._order = {instance_id: index for index, instance_id in enumerate(order or [])}

    def print_lines(self, instance_id: str, text: str, is_stderr: bool = False) -> None:
        if not text:
            return
        state = self._state(instance_id)
        prefix = f"{state.label} | " if self._label_lines else ""
        marker = "[stderr] " if is_stderr else ""
        out = []
        for line in self._redactor.redact(text).splitlines():
            rendered = f"{prefix}{marker}{line}\n"
            if state.printed_bytes + len(rendered) > self._budget:
                state.elided_lines += 1
                state.elided_bytes += len(rendered)
                state.tail.append(rendered)
                continue
            state.printed_bytes += len(rendered)
            out.append(rendered)
        if out:
            self._stream.write("".join(out))
            self._stream.flush()

    def print_header(self, text: str) -> None:
        self._stream.write(f"{text}\n")
        self._stream.flush()

    def flush_elided(self, where: str) -> None:
        """For each instance over budget: say what was left out and where it is, then its last lines."""
        for instance_id, state in self._instances.items():
            if not state.elided_lines:
                continue
            shown = len(state.tail)
            self.print_header(
                f"---- {instance_id}: {state.elided_lines - shown:,} lines ({state.elided_bytes / 1e6:.1f} MB) "
                f"left out to keep the build log under Bitbucket's 50 MB limit; full output: {where}. "
                f"Last {shown} lines: ----"
            )
            self._stream.write("".join(state.tail))
            self._stream.flush()

    def _state(self, instance_id: str) -> _InstanceLog:
        state = self._instances.get(instance_id)
        if state is None:
            label = self._names.get(instance_id, instance_id)
            if self._colour:
                index = self._order.get(instance_id, len(self._order) + len(self._instances))
                colour = escape_codes[PALETTE[index % len(PALETTE)]]
                label = f"{colour}{label}{escape_codes['reset']}"
            state = self._instances[instance_id] = _InstanceLog(label)
        return state


def cut_notice(text: str, limit: int, what: str) -> str | None:
    """A note when SSM's capped output field was probably cut."""
    if len(text) < limit:
        return None
    return (
        f"{what} reached SSM's {limit:,}-character limit for GetCommandInvocation and may be cut; "
        "set STREAM_OUTPUT: 'true' (the default) to get all of it through CloudWatch Logs."
    )
