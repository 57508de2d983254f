"""Masks values the pipe must never print: secret values and AWS credentials."""

from __future__ import annotations

import logging

MASK = "****"
_MIN_LENGTH = 4  # shorter values would mask ordinary words


class Redactor:
    """Holds sensitive values and replaces every occurrence of them in text."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, value: str | None) -> None:
        if value and len(value) >= _MIN_LENGTH:
            self._values.add(value)
            stripped = value.strip()
            if stripped != value and len(stripped) >= _MIN_LENGTH:
                self._values.add(stripped)  # shells drop trailing newlines from $(...)

    def redact(self, text: str) -> str:
        # longest first, so a value that contains another is masked whole
        for value in sorted(self._values, key=len, reverse=True):
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
