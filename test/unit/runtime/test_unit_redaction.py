"""pipe.runtime.redaction: secret values and credentials are masked in text and in log records."""

from __future__ import annotations

import io
import json
import logging
import subprocess
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipe.runtime.redaction import MASK, RedactingFilter, Redactor, printf_q

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
    assert redactor.redact_output("password123 then pass") == f"{MASK} then {MASK}"
    assert redactor.redact("password123 then pass") == f"{MASK} then pass"  # a plain word: see below


def test_value_containing_another_is_masked_whole_whatever_the_order() -> None:
    redactor = redactor_with("abcd-efgh-ijkl", "ef-gh")
    assert redactor.redact("x abcd-efgh-ijkl y ef-gh") == f"x {MASK} y {MASK}"


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
    assert redactor_with("ab-d").redact("xab-dx") == f"x{MASK}x"


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


# --- the forms a deploy script prints a secret in -------------------------------------------------

PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "LxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW/VDL5AaWTg0nLVkjRo\n"
    "-----END RSA PRIVATE KEY-----\n"
)


def test_every_line_of_a_multi_line_secret_is_masked_on_its_own() -> None:
    """CloudWatch events, S3 lines and the printer hand over a line at a time, not the whole value."""
    redactor = redactor_with(PEM)
    for line in PEM.splitlines():
        assert redactor.redact_output(f"key: {line}") == f"key: {MASK}"
        assert redactor.redact(line) == MASK
    assert redactor.redact_output(PEM) == MASK  # whole, when it is in one piece


def test_lines_of_only_punctuation_in_a_multi_line_secret_are_not_masked() -> None:
    redactor = redactor_with("{\n  -----\n  lamp-post-9\n}\n")
    assert redactor.redact_output("---- header ----") == "---- header ----"
    assert redactor.redact_output("lamp-post-9") == MASK


def test_strings_inside_a_json_secret_are_masked_as_printed_by_jq_r() -> None:
    key = json.dumps({"type": "service_account", "private_key": PEM, "client_id": "1234567890123"}, indent=2)
    redactor = redactor_with(key)
    decoded_field = [redactor.redact_output(line) for line in PEM.splitlines()]  # jq -r .private_key
    assert decoded_field == [MASK] * len(PEM.splitlines())
    assert MASK in redactor.redact_output(json.dumps(json.loads(key)))  # compact, one line
    for line in key.splitlines()[1:-1]:  # pretty-printed, as in Parameter Store
        assert "RSA" not in redactor.redact_output(line) and "1234567890123" not in redactor.redact_output(line)


SHELL_VALUE = 'it\'s a "p@ss" $word\\!'


@pytest.mark.parametrize(
    "printed",
    [
        SHELL_VALUE,
        "'it'\\''s a \"p@ss\" $word\\!'",  # set -x and ${var@Q}
        'it\\\'s\\ a\\ \\"p@ss\\"\\ \\$word\\\\\\!',  # printf %q
        'it\'s a \\"p@ss\\" $word\\\\!',  # JSON-escaped
        "it%27s%20a%20%22p%40ss%22%20%24word%5C%21",  # percent-encoded
    ],
)
def test_the_shell_json_and_url_forms_of_a_secret_are_masked(printed: str) -> None:
    masked = redactor_with(SHELL_VALUE).redact_output(f"+ echo {printed} done")
    assert masked in (f"+ echo {MASK} done", f"+ echo '{MASK}' done")


def test_set_x_of_a_multi_line_secret_is_masked_line_by_line() -> None:
    redactor = redactor_with(PEM)
    traced = "+ KEY='" + PEM.rstrip("\n") + "'"  # bash 5 traces a multi-line value single-quoted
    assert all(MASK in redactor.redact_output(line) for line in traced.splitlines())
    assert "MII" not in redactor.redact_output(f"+ printf %s $'{printf_q(PEM)}'")  # printf %q: $'...\n...'


BASH_ALPHABET = st.sampled_from(list("aZ09 !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\t\n\x1bé"))


@settings(max_examples=60, deadline=None)
@given(st.text(BASH_ALPHABET, min_size=1, max_size=12))
def test_printf_q_form_is_what_bash_prints(text: str) -> None:
    printed = subprocess.run(
        ["bash", "-c", 'printf %q "$1"', "-", text],
        capture_output=True,
        text=True,
        check=True,
        env={"LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"},
    ).stdout
    expected = printf_q(text)
    assert printed in (expected, f"$'{expected}'")


@pytest.mark.parametrize("value", ["Zq9", " xy\n", "ab"])
def test_a_secret_too_short_to_mask_is_named_in_a_warning(value: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ssm-deploy"):
        redactor_with().add(value, name="SECRETS parameter /deploy/prod/pin")
    assert "SECRETS parameter /deploy/prod/pin: its value is" in caplog.text
    assert "too short to mask" in caplog.text
    assert value.strip() not in caplog.text.replace("SECRETS parameter /deploy/prod/pin", "")


def test_credentials_added_without_a_name_never_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ssm-deploy"):
        redactor_with("abc", "Success")
    assert caplog.text == ""


@pytest.mark.parametrize("word", ["Success", "Failed", "instance", "2024"])
def test_a_secret_that_is_a_plain_word_does_not_garble_the_pipes_own_lines(
    word: str, caplog: pytest.LogCaptureFixture
) -> None:
    redactor = Redactor()
    with caplog.at_level(logging.WARNING, logger="ssm-deploy"):
        redactor.add(word, name="SECRETS parameter /deploy/prod/word")
    status = f"INFO: i-0a1: {word} (exit 0); 1 instance(s); 2024-11-25"
    assert redactor.redact(status) == status
    assert redactor.redact_output(f"echo {word}") == f"echo {MASK}"  # the instances' output is masked
    assert "SECRETS parameter /deploy/prod/word: its value is a plain word or number" in caplog.text


def test_a_copy_cut_in_the_middle_of_a_value_has_its_first_characters_masked() -> None:
    # attack 32: SSM keeps the first 24,000 characters; a value the cut splits leaves a piece of it at the end
    redactor = Redactor()
    redactor.add("Zq8v-Kd3w-0123456789")
    assert redactor.mask_cut_end("0000\nZq8v-Kd3") == "0000\n****"
    assert redactor.mask_cut_end("0000\nZq8v-K\ufffd") == "0000\n****"  # a character cut in two
    assert redactor.mask_cut_end("0000\nZq8") == "0000\nZq8"  # under MIN_LENGTH: ordinary text
    assert redactor.mask_cut_end("Zq8v-Kd3w ends here") == "Zq8v-Kd3w ends here"  # not at the end
    assert redactor.mask_cut_end("ZZq8v-Kd") == "Z****"  # the longest end that begins it


def test_a_piece_that_begins_in_the_middle_of_a_value_has_its_last_characters_masked() -> None:
    # attack 40: the start of a line's next piece, when what came before was printed cut
    redactor = Redactor()
    redactor.add("Zq8v-Kd3w-0123456789")
    assert redactor.mask_cut_start("456789 tail") == "**** tail"
    assert redactor.mask_cut_start("\ufffd456789 tail") == "**** tail"  # a character cut in two
    assert redactor.mask_cut_start("789 tail") == "789 tail"  # under MIN_LENGTH: ordinary text
    assert redactor.mask_cut_start("tail 456789") == "tail 456789"  # not at the start
