"""pipe.runtime.redaction: secret values and credentials are masked in text and in log records."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from pipe.runtime.redaction import MASK, RedactingFilter, Redactor

SECRET = "s3cr3t-Value!"


def redactor_with(*values: str | None) -> Redactor:
    redactor = Redactor()
    for value in values:
        redactor.add(value)
    return redactor


def test_masks_every_occurrence() -> None:
    redactor = redactor_with(SECRET)
    assert redactor.redact(f"a={SECRET} b={SECRET}") == f"a={MASK} b={MASK}"
    assert MASK == "****"


def test_text_without_values_is_unchanged() -> None:
    assert redactor_with(SECRET).redact("nothing to hide here") == "nothing to hide here"


def test_masks_longest_value_first() -> None:
    redactor = redactor_with("pass", "password123")
    # masking "pass" first would leave "****word123"
    assert redactor.redact("password123 then pass") == f"{MASK} then {MASK}"


def test_value_containing_another_is_masked_whole_whatever_the_order() -> None:
    redactor = redactor_with("abcd-efgh-ijkl", "efgh")
    assert redactor.redact("x abcd-efgh-ijkl y efgh") == f"x {MASK} y {MASK}"


def test_value_with_trailing_newline_also_masked_without_it() -> None:
    redactor = redactor_with("db-password\n")
    # a shell's $(...) drops the trailing newline, so the stripped value is what shows up
    assert redactor.redact("password is db-password.") == f"password is {MASK}."
    assert redactor.redact("db-password\nnext line") == f"{MASK}next line"


def test_value_with_surrounding_whitespace_stripped_too_short_is_ignored() -> None:
    redactor = redactor_with("  ab\n")
    assert redactor.redact("ab cab") == "ab cab"
    assert redactor.redact("x  ab\ny") == f"x{MASK}y"


@pytest.mark.parametrize("value", [None, "", "a", "ab", "abc"])
def test_values_shorter_than_four_characters_ignored(value: str | None) -> None:
    redactor = redactor_with(value)
    assert redactor.redact("a ab abc abcd") == "a ab abc abcd"


def test_four_characters_is_enough() -> None:
    assert redactor_with("abcd").redact("xabcdx") == f"x{MASK}x"


def test_values_added_later_are_masked() -> None:
    redactor = Redactor()
    assert redactor.redact(SECRET) == SECRET
    redactor.add(SECRET)
    assert redactor.redact(SECRET) == MASK


# --- RedactingFilter on a real logger -----------------------------------------------------------


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO, Redactor]]:
    redactor = redactor_with(SECRET)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter(redactor))
    logger = logging.Logger("unit-redaction", level=logging.DEBUG)  # not registered: no global state
    logger.addHandler(handler)
    yield logger, stream, redactor
    handler.close()


def test_filter_masks_message_built_from_args(logged: tuple[logging.Logger, io.StringIO, Redactor]) -> None:
    logger, stream, _ = logged
    logger.info("token=%s user=%s count=%d", SECRET, "bob", 3)
    assert stream.getvalue() == f"INFO token={MASK} user=bob count=3\n"


def test_filter_masks_plain_message(logged: tuple[logging.Logger, io.StringIO, Redactor]) -> None:
    logger, stream, _ = logged
    logger.warning(f"value {SECRET} leaked?")
    assert stream.getvalue() == f"WARNING value {MASK} leaked?\n"


def test_filter_masks_value_split_across_args(logged: tuple[logging.Logger, io.StringIO, Redactor]) -> None:
    logger, stream, _ = logged
    logger.info("%s%s", SECRET[:5], SECRET[5:])
    assert SECRET not in stream.getvalue()
    assert MASK in stream.getvalue()


def test_filter_leaves_clean_record_untouched() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "n=%d %s", (5, "ok"), None)
    assert RedactingFilter(redactor_with(SECRET)).filter(record) is True
    assert record.msg == "n=%d %s"
    assert record.args == (5, "ok")


def test_filter_rewrites_record_that_held_a_value() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key=%s", (SECRET,), None)
    assert RedactingFilter(redactor_with(SECRET)).filter(record) is True
    assert record.getMessage() == f"key={MASK}"
    assert record.args is None


def test_filter_masks_exception_text(logged: tuple[logging.Logger, io.StringIO, Redactor]) -> None:
    logger, stream, _ = logged
    try:
        raise RuntimeError(f"could not use {SECRET}")
    except RuntimeError:
        logger.exception("deploy step failed")
    assert "deploy step failed" in stream.getvalue()
    assert SECRET not in stream.getvalue()


def test_bad_format_arguments_do_not_raise_from_the_log_call(
    logged: tuple[logging.Logger, io.StringIO, Redactor], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, _, _ = logged
    monkeypatch.setattr(logging, "raiseExceptions", False)  # what a plain handler does: swallow and go on
    logger.info("%s and %s", "only one")
