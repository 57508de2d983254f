"""Masks values the pipe must never print: secret values and AWS credentials.

A value is masked in the forms a deploy script commonly prints it (``masked_forms``): as it is;
without surrounding whitespace (``$(...)`` drops trailing newlines); line by line when it has
several lines (PEM and JSON keys: CloudWatch events, S3 lines and the build log carry output a line
or an event at a time, so the whole value is rarely in one piece); each string inside a JSON value
(``jq -r .private_key``); and each of those shell-quoted as ``set -x`` and ``${var@Q}`` print it
(``'it'\\''s'``), as ``printf %q`` prints it (``it\\'s``, ``$'a\\tb'``), JSON-escaped and
percent-encoded. No mask can catch another encoding (base64, hex, a hash) or a value printed in
pieces; README "Security" says so.

Values shorter than MIN_LENGTH are not masked: such a mask would hide ordinary text everywhere.
A value that is one plain word or number is masked in the instances' output but not in the pipe's
own lines (``redact``), which never carry a secret: masking ``Success`` or ``2024`` there would
garble the statuses and the summary, and give the value away by where the mask appears. ``add``
warns, by name, about a secret of either kind.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator
from urllib.parse import quote

MASK = "****"
MIN_LENGTH = 4
CUT_CHARACTER = "\ufffd"  # what a character cut in two becomes in SSM's JSON answer
PLAIN_WORD = re.compile(r"[A-Za-z]+|[0-9]+")
_SIGNIFICANT = re.compile(r"[^\W_]")  # a line of only punctuation ("-----", "},") is no secret
# bash's printf %q puts a backslash before these (sh_backslash_quote in bash's lib/sh/shquote.c)
_BACKSLASHED = frozenset(" !\"$&'()*,;<>?[\\]^`{|}")
# ... and writes a value with a non-printable character as $'...' (ansic_quote in lib/sh/strtrans.c)
_ANSI_C = {"\a": "\\a", "\b": "\\b", "\x1b": "\\E", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
log = logging.getLogger("ssm-deploy")


class Redactor:
    """Holds sensitive values and replaces every occurrence of them in text."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._words: set[str] = set()  # plain-word forms: masked in the instances' output only
        self._everywhere: list[str] | None = None  # longest first, so a value containing another goes whole
        self._output: list[str] | None = None

    def add(self, value: str | None, name: str = "") -> None:
        """Mask ``value`` from now on. ``name`` says where it came from ("SECRETS parameter /x") for a
        warning when it is too short to mask, or a plain word; credentials need none."""
        if not value:
            return
        forms = masked_forms(value)
        trimmed = value.strip()
        if name and len(trimmed) < MIN_LENGTH:
            log.warning(
                f"{name}: its value is {len(trimmed)} character(s) long, too short to mask (values under "
                f"{MIN_LENGTH} characters would mask ordinary text), so it shows if an instance prints it. "
                "Use a longer secret."
            )
        elif name and PLAIN_WORD.fullmatch(trimmed):
            log.warning(
                f"{name}: its value is a plain word or number. It is masked in the instances' output, where "
                "that word is then masked wherever it appears, but not in the pipe's own status lines. "
                "Use a long random secret."
            )
        self._values |= forms
        self._words |= {form for form in forms if PLAIN_WORD.fullmatch(form)}
        self._everywhere = self._output = None

    def redact(self, text: str) -> str:
        """For the pipe's own lines (log records, messages, the result file)."""
        if self._everywhere is None:
            self._everywhere = _longest_first(self._values - self._words)
        return _mask(text, self._everywhere)

    def redact_output(self, text: str) -> str:
        """For what the instances printed: every form of every value."""
        return _mask(text, self._output_forms())

    def mask_cut_end(self, text: str) -> str:
        """``text`` cut short (SSM keeps the first 24,000 characters of stdout, 8,000 of stderr) with its end
        masked when it is the beginning of a value (MIN_LENGTH characters or more): a value the cut split in
        two leaves a piece no mask of the whole matches. The rest is left to :meth:`redact_output`."""
        body = text.rstrip(CUT_CHARACTER)
        piece = max((_cut_piece(body, form) for form in self._output_forms()), default=0)
        return body[: len(body) - piece] + MASK if piece else text

    def mask_cut_start(self, text: str) -> str:
        """``text`` with its start masked when it is the end of a value (MIN_LENGTH characters or more): the
        first characters after a cut that may have split one (a line printed in pieces, OutputPrinter)."""
        body = text.lstrip(CUT_CHARACTER)
        head = body[: max(map(len, self._output_forms()), default=0)][::-1]  # the end of a value, read backwards
        piece = max((_cut_piece(head, form[::-1]) for form in self._output_forms()), default=0)
        return MASK + body[piece:] if piece else text

    def _output_forms(self) -> list[str]:
        """Every form of every value, longest first (made once per set of values)."""
        if self._output is None:
            self._output = _longest_first(self._values)
        return self._output


def _cut_piece(body: str, form: str) -> int:
    """How many of the last characters of ``body`` begin ``form`` (the most, MIN_LENGTH or more), else 0."""
    start = max(0, len(body) - len(form))
    while (at := body.find(form[0], start)) != -1 and len(body) - at >= MIN_LENGTH:
        if form.startswith(body[at:]):
            return len(body) - at
        start = at + 1
    return 0


def masked_forms(value: str) -> set[str]:
    """The forms of ``value`` to mask (see the module docstring), each at least MIN_LENGTH long."""
    pieces: set[str] = set()
    for text in (value, *_json_strings(value)):
        pieces |= {text, text.strip()}
        if len(text.strip().splitlines()) > 1:
            pieces |= {line.strip() for line in text.splitlines() if _SIGNIFICANT.search(line)}
    forms: set[str] = set()
    for piece in pieces:
        forms |= {
            piece,
            piece.replace("'", "'\\''"),  # inside '...', as set -x and ${var@Q} print it
            printf_q(piece),
            json.dumps(piece)[1:-1],
            json.dumps(piece, ensure_ascii=False)[1:-1],
            quote(piece, safe=""),
        }
    return {form for form in forms if len(form) >= MIN_LENGTH}


def printf_q(text: str) -> str:
    """``text`` as bash's ``printf %q`` prints it, without the ``$'...'`` it puts around a value that
    has a non-printable character (in a UTF-8 locale)."""
    if all(char.isprintable() for char in text):
        return "".join(
            f"\\{char}"
            if char in _BACKSLASHED or (char == "#" and i == 0) or (char == "~" and (i == 0 or text[i - 1] in ":="))
            else char
            for i, char in enumerate(text)
        )
    return "".join(_ansi_c(char) for char in text)


def _ansi_c(char: str) -> str:
    if char in _ANSI_C:
        return _ANSI_C[char]
    if char in "\\'":
        return f"\\{char}"
    return char if char.isprintable() else "".join(f"\\{byte:03o}" for byte in char.encode())


def _json_strings(value: str) -> Iterator[str]:
    """The strings inside ``value`` when it is a JSON object or array (a service account key)."""
    if not value.lstrip().startswith(("{", "[")):
        return
    try:
        document = json.loads(value)
    except (ValueError, RecursionError):
        return
    yield from _strings(document)


def _strings(node: object) -> Iterator[str]:
    stack = [node]  # iterative: a deeply nested value must not exhaust the recursion limit
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _longest_first(values: Iterable[str]) -> list[str]:
    return sorted(values, key=len, reverse=True)


def _mask(text: str, values: list[str]) -> str:
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A handler filter that masks sensitive values in every record it lets through."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True  # a broken format string: let the handler report it as logging does
        redacted = self._redactor.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._redactor.redact(_FORMATTER.formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = self._redactor.redact(record.exc_text)
        return True


_FORMATTER = logging.Formatter()
