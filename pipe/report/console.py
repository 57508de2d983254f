"""Print what the instances printed into the build log: masked, neutralised, labelled, within budget.

Every line from an instance starts with its label (``i-0abc | ``, or its Name tag), even when only
one instance runs, and control characters are shown as escapes (``\\x1b``, ``\\r``): remote output
can neither pass for one of the pipe's own lines (``✔ Deployed``) nor recolour, erase or retitle
the log.

Bitbucket truncates a step's log beyond 50 MB, which would hide the summary. The instances' output
of the whole run (every phase) shares LOG_BUDGET_BYTES, counted in UTF-8 bytes, and each instance
gets a share of it. Past its share an instance's lines are no longer printed; its last lines are
kept (at most TAIL_LINES and TAIL_BYTES, long lines cut) and shown at the end with a note saying
how much was left out and where the full text is. All tails together stay within
TAIL_BUDGET_BYTES, so the summary after them always fits.
"""

from __future__ import annotations

import os
import re
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import TextIO

from colorlog.escape_codes import escape_codes

from pipe.runtime.redaction import Redactor

LOG_BUDGET_BYTES = 40 * 1024 * 1024  # for all instances' output; Bitbucket cuts step logs at 50 MB
MIN_INSTANCE_BUDGET = 256 * 1024
TAIL_LINES = 100
TAIL_BYTES = 64 * 1024  # per instance
TAIL_LINE_BYTES = 4 * 1024  # a longer line is cut in the tail
TAIL_BUDGET_BYTES = 4 * 1024 * 1024  # all tails of the run: with LOG_BUDGET_BYTES, well under 50 MB
HELD_CHARS = 4 * 1024 * 1024  # the most of a line printed in pieces held back for its next piece, per stream
PALETTE = ("cyan", "green", "yellow", "purple", "blue", "light_cyan", "light_green", "light_yellow", "light_purple")
# C0 and C1 controls (but tab), DEL, lone surrogates, and the line, paragraph and bidirectional
# controls a viewer could act on (U+2028/2029, U+202A-202E, U+2066-2069, U+200E/200F, U+061C)
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\r": "\\r", "\n": "\\n"}


@dataclass
class BuildLog:
    """What the run may still print of the instances' output, shared by every phase's printer, and
    the notices already given (each is said once per run)."""

    output_bytes: int = LOG_BUDGET_BYTES
    tail_bytes: int = TAIL_BUDGET_BYTES
    said: set[str] = field(default_factory=set)

    def first_time(self, notice: str) -> bool:
        if notice in self.said:
            return False
        self.said.add(notice)
        return True


@dataclass
class _InstanceLog:
    label: str
    printed_bytes: int = 0
    elided_lines: int = 0
    elided_bytes: int = 0
    tail: deque[tuple[str, int]] = field(default_factory=deque)
    tail_bytes: int = 0

    def keep(self, rendered: str, size: int) -> None:
        """Count a line left out, and keep it among the last lines (bounded in lines and bytes)."""
        self.elided_lines += 1
        self.elided_bytes += size
        if size > TAIL_LINE_BYTES:
            rendered = cut_bytes(rendered, TAIL_LINE_BYTES, size)
            size = utf8_size(rendered)
        self.tail.append((rendered, size))
        self.tail_bytes += size
        while len(self.tail) > TAIL_LINES or self.tail_bytes > TAIL_BYTES:
            self.tail_bytes -= self.tail.popleft()[1]


class OutputPrinter:
    def __init__(
        self,
        redactor: Redactor,
        stream: TextIO | None = None,
        names: dict[str, str] | None = None,
        instance_count: int = 1,
        colour: bool | None = None,
        order: list[str] | None = None,
        build_log: BuildLog | None = None,
    ) -> None:
        """``order`` (the targeted instances) fixes each instance's colour across printers;
        ``build_log`` is shared by the printers of one run."""
        self._redactor = redactor
        self._stream = stream or sys.stdout
        self._names = names or {}
        self._colour = colour if colour is not None else "NO_COLOR" not in os.environ
        self._share = max(MIN_INSTANCE_BUDGET, LOG_BUDGET_BYTES // max(1, instance_count))
        self._instances: dict[str, _InstanceLog] = {}
        self._order = {instance_id: index for index, instance_id in enumerate(order or [])}
        self.build_log = build_log or BuildLog()
        self._held: dict[tuple[str, bool], str] = {}  # the start of a line whose next piece is to come
        self._after_cut: set[tuple[str, bool]] = set()  # streams whose next text continues a line printed cut

    def print_lines(self, instance_id: str, text: str, is_stderr: bool = False, continues: bool = False) -> None:
        """``continues``: ``text`` may end inside a line whose next piece is the next text of the stream
        (the SSM Agent cuts a line over 200,000 bytes in CloudWatch events, S3 lines come in pieces). Its
        last line is then held back and printed with that piece, so a secret the cut split is masked whole;
        past HELD_CHARS it is printed with an end that begins a value masked, and the next piece with a
        start that ends one masked (``Redactor.mask_cut_end``, ``mask_cut_start``)."""
        text = self._joined((instance_id, is_stderr), text, continues)
        if not text:
            return
        state = self._state(instance_id)
        prefix = f"{state.label} | {'[stderr] ' if is_stderr else ''}"
        out = []
        for line in split_lines(self._redactor.redact_output(text)):
            rendered = f"{prefix}{neutralise(line)}\n"
            size = utf8_size(rendered)
            # once an instance is over its share its lines stay out, so the log shows a head and a tail
            if state.elided_lines or state.printed_bytes + size > self._share or size > self.build_log.output_bytes:
                state.keep(rendered, size)
                continue
            state.printed_bytes += size
            self.build_log.output_bytes -= size
            out.append(rendered)
        if out:
            self._stream.write("".join(out))
            self._stream.flush()

    def flush_held(self) -> None:
        """Print the lines held back for a next piece that did not come (the command ended, or a stop), the
        end masked where it is the start of a value the agent's cut may have split (Redactor.mask_cut_end)."""
        for (instance_id, is_stderr), text in list(self._held.items()):
            self._held.pop((instance_id, is_stderr), None)
            self.print_lines(instance_id, self._redactor.mask_cut_end(text), is_stderr)

    def _joined(self, key: tuple[str, bool], text: str, continues: bool) -> str:
        """``text`` after what was held back of its stream, without the end held back now (``print_lines``)."""
        if key in self._after_cut and text:
            self._after_cut.discard(key)
            text = self._redactor.mask_cut_start(text)
        text = self._held.pop(key, "") + text
        if not continues:
            return text
        end = text.rfind("\n") + 1
        text, rest = text[:end], text[end:]
        if len(rest) > HELD_CHARS:
            self._after_cut.add(key)
            return text + self._redactor.mask_cut_end(rest)
        if rest:
            self._held[key] = rest
        return text

    def cut_end_masked(self, text: str) -> str:
        """SSM's copy of a stream it cut at its field limit, a value it split in two masked (Redactor.mask_cut_end)."""
        return self._redactor.mask_cut_end(text)

    def print_header(self, text: str) -> None:
        self._stream.write(f"{text}\n")
        self._stream.flush()

    def flush_elided(self, where: str) -> None:
        """For each instance over budget: say what was left out and where it is, then its last lines."""
        over = [(instance_id, state) for instance_id, state in self._instances.items() if state.elided_lines]
        for instance_id, state in over:
            allowance = min(TAIL_BYTES, self.build_log.tail_bytes // len(over))
            shown: list[str] = []
            for rendered, size in reversed(state.tail):
                if size > allowance:
                    break
                allowance -= size
                self.build_log.tail_bytes -= size
                shown.append(rendered)
            left_out = state.elided_lines - len(shown)
            self.print_header(
                f"---- {instance_id}: {left_out:,} lines ({state.elided_bytes / 1e6:.1f} MB) left out to keep the "
                f"build log under Bitbucket's 50 MB limit; full output: {where}."
                + (f" Last {len(shown)} lines: ----" if shown else " ----")
            )
            self._stream.write("".join(reversed(shown)))
            self._stream.flush()
            state.tail.clear()
            state.tail_bytes = 0

    def _state(self, instance_id: str) -> _InstanceLog:
        state = self._instances.get(instance_id)
        if state is None:
            label = neutralise(self._names.get(instance_id, instance_id))
            if self._colour:
                index = self._order.get(instance_id, len(self._order) + len(self._instances))
                colour = escape_codes[PALETTE[index % len(PALETTE)]]
                label = f"{colour}{label}{escape_codes['reset']}"
            state = self._instances[instance_id] = _InstanceLog(label)
        return state


def split_lines(text: str) -> list[str]:
    """Lines at ``\\n`` (a ``\\r\\n`` ending is one line break); any other control stays in the line,
    where ``neutralise`` shows it."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def neutralise(line: str) -> str:
    """Control characters as visible escapes (``\\x1b[31m``, ``\\r``), so nothing in a line can act
    on the terminal or the log viewer: no colour, no erased or overwritten line, no window title."""
    return _CONTROL.sub(_escape, line)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def utf8_size(text: str) -> int:
    return len(text.encode("utf-8"))


def cut_bytes(rendered: str, limit: int, size: int) -> str:
    """``rendered`` (one line) cut to about ``limit`` UTF-8 bytes, saying how much was cut."""
    kept = rendered.encode("utf-8")[:limit].decode("utf-8", errors="ignore")
    return f"{kept} [... {size - utf8_size(kept):,} more bytes]\n"


def cut_notice(text: str, limit: int, what: str, remedy: str) -> str | None:
    """A note when SSM's capped output field was probably cut; ``remedy`` says how to see all of it."""
    if len(text) < limit:
        return None
    return f"{what} reached SSM's {limit:,}-character limit for GetCommandInvocation and may be cut; {remedy}"
