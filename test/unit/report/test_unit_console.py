"""pipe.model, pipe.report.console and pipe.runtime.logging_setup: what the build log shows, masked."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pytest

from pipe.limits import STDERR_FIELD_LIMIT, STDOUT_FIELD_LIMIT
from pipe.model import ACTIVE_STATUSES, Invocation
from pipe.report import console
from pipe.report.console import OutputPrinter, cut_notice, neutralise
from pipe.report.s3_output import split_lines
from pipe.runtime.logging_setup import QUIET_LOGGERS, configure_logging
from pipe.runtime.redaction import MASK, Redactor

SECRET = "hunter2-secret"


def redactor() -> Redactor:
    masks = Redactor()
    masks.add(SECRET)
    return masks


# --- Invocation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", sorted(ACTIVE_STATUSES))
def test_active_statuses_are_not_finished(status: str) -> None:
    assert not Invocation("i-1", status=status).finished


@pytest.mark.parametrize("status", ["Success", "Failed", "TimedOut", "Cancelled", "Undeliverable", "Terminated"])
def test_final_statuses(status: str) -> None:
    invocation = Invocation("i-1", status=status)
    assert invocation.finished
    assert invocation.succeeded is (status == "Success")


@pytest.mark.parametrize(
    ("status", "details", "code", "expected"),
    [
        ("Success", "Success", 0, "Success (exit 0)"),
        ("Failed", "Failed", 3, "Failed (exit 3)"),
        ("Failed", "Undeliverable", -1, "Failed/Undeliverable"),
        ("TimedOut", "ExecutionTimedOut", None, "TimedOut/ExecutionTimedOut"),
        ("InProgress", "", None, "InProgress"),
        ("Pending", "Pending", None, "Pending"),
    ],
)
def test_describe(status: str, details: str, code: int | None, expected: str) -> None:
    invocation = Invocation("i-1", status=status, status_details=details, response_code=code)
    assert invocation.describe() == expected


# --- OutputPrinter ------------------------------------------------------------------------------


def test_printer_labels_lines_and_masks() -> None:
    stream = io.StringIO()
    printer = OutputPrinter(redactor(), stream=stream, colour=False)
    printer.print_lines("i-1", f"line one\npassword={SECRET}\n")
    printer.print_lines("i-1", "warn", is_stderr=True)
    assert stream.getvalue() == f"i-1 | line one\ni-1 | password={MASK}\ni-1 | [stderr] warn\n"


def test_printer_masks_a_value_spanning_lines() -> None:
    masks = Redactor()
    masks.add("line-a\nline-b")
    stream = io.StringIO()
    OutputPrinter(masks, stream=stream, colour=False).print_lines("i-1", "x line-a\nline-b y")
    assert stream.getvalue() == f"i-1 | x {MASK} y\n"


def test_a_single_instances_lines_are_labelled_too_and_empty_text_prints_nothing() -> None:
    stream = io.StringIO()
    printer = OutputPrinter(redactor(), stream=stream, instance_count=1, colour=False)
    printer.print_lines("i-1", "")
    printer.print_lines("i-1", "only\n", is_stderr=True)
    printer.print_header("---- header ----")
    assert stream.getvalue() == "i-1 | [stderr] only\n---- header ----\n"


@pytest.mark.parametrize(
    ("limit", "what"), [(STDOUT_FIELD_LIMIT, "Standard output"), (STDERR_FIELD_LIMIT, "Standard error")]
)
def test_cut_notice_at_the_field_limit(limit: int, what: str) -> None:
    assert cut_notice("x" * (limit - 1), limit, what, "do this.") is None
    notice = cut_notice("x" * limit, limit, what, "do this.")
    assert notice is not None
    assert notice.startswith(f"{what} reached SSM's {limit:,}-character limit")
    assert notice.endswith("may be cut; do this.")


def test_field_limits_match_ssm() -> None:
    assert (STDOUT_FIELD_LIMIT, STDERR_FIELD_LIMIT) == (24000, 8000)


# --- configure_logging --------------------------------------------------------------------------


@pytest.fixture
def quiet_levels() -> Iterator[None]:
    saved = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("quiet_levels")
@pytest.mark.parametrize("debug", [True, False])
def test_configure_logging_masks_and_keeps_sdk_quiet(debug: bool, capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.Logger("unit-configure", level=logging.WARNING)
    handler = logging.StreamHandler(io.StringIO())
    logger.addHandler(handler)

    configure_logging(logger, redactor(), debug)

    logger.debug(f"debug {SECRET}")
    logger.info("key=%s", SECRET)
    out = capsys.readouterr().out
    assert SECRET not in out
    assert f"key={MASK}" in out  # the handler now writes to stdout
    assert (f"debug {MASK}" in out) is debug
    assert logger.level == (logging.DEBUG if debug else logging.INFO)
    for name in QUIET_LOGGERS:
        assert logging.getLogger(name).level == logging.WARNING


def test_printer_keeps_within_budget_and_shows_the_tail_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipe.report.console as output

    monkeypatch.setattr(output, "LOG_BUDGET_BYTES", 1000)
    monkeypatch.setattr(output, "MIN_INSTANCE_BUDGET", 100)
    stream = io.StringIO()
    printer = output.OutputPrinter(redactor(), stream=stream, instance_count=2, colour=False)
    printer.print_lines("i-a", "".join(f"line {n:04d}\n" for n in range(1000)))
    printer.print_lines("i-b", "short\n")
    printed_before_flush = stream.getvalue()
    printer.flush_elided("CloudWatch Logs group /g")

    assert len(printed_before_flush.encode()) <= 1000
    assert "i-b | short" in printed_before_flush
    assert "i-a | line 0000" in printed_before_flush and "line 0999" not in printed_before_flush
    after = stream.getvalue()[len(printed_before_flush) :]
    assert (
        "left out to keep the build log under Bitbucket's 50 MB limit; full output: CloudWatch Logs group /g" in after
    )
    assert after.rstrip().endswith("i-a | line 0999")
    assert f"Last {output.TAIL_LINES} lines" in after


def test_unique_names_label_the_lines() -> None:
    stream = io.StringIO()
    printer = OutputPrinter(redactor(), stream=stream, names={"i-a": "web-1"}, colour=False)
    printer.print_lines("i-a", "up")
    assert stream.getvalue() == "web-1 | up\n"


# --- remote output cannot pass for the pipe's own lines, nor act on the log -----------------------

RAW_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def test_one_instance_cannot_print_a_line_that_looks_like_the_pipes_own() -> None:
    stream = io.StringIO()
    printer = OutputPrinter(redactor(), stream=stream, instance_count=1, colour=False)
    printer.print_lines("i-0abc", "✔ Deployed to 1 instance(s).\nINFO: Summary of command x:\n")
    assert stream.getvalue().splitlines() == [
        "i-0abc | ✔ Deployed to 1 instance(s).",
        "i-0abc | INFO: Summary of command x:",
    ]


@pytest.mark.parametrize(
    ("printed", "shown"),
    [
        ("\x1b[32m✔ Deployed\x1b[0m", "\\x1b[32m✔ Deployed\\x1b[0m"),  # colour
        ("\x1b[2K\x1b[1A✔ Deployed", "\\x1b[2K\\x1b[1A✔ Deployed"),  # erase line, cursor up
        ("\x1b]0;owned\x07title", "\\x1b]0;owned\\x07title"),  # OSC window title
        ("50%\r✔ Deployed", "50%\\r✔ Deployed"),  # carriage return over the label
        ("\x9b31mred", "\\x9b31mred"),  # the 8-bit CSI
        ("a\u2028✔ Deployed", "a\\u2028✔ Deployed"),  # a line separator a viewer may break at
        ("\u202e)s(ecnatsni 1 ot deyolpeD ✔", "\\u202e)s(ecnatsni 1 ot deyolpeD ✔"),  # right-to-left override
        ("form\x0cfeed\x0bvtab\x00nul\x7fdel", "form\\x0cfeed\\x0bvtab\\x00nul\\x7fdel"),
        ("tab\tstays", "tab\tstays"),
    ],
)
def test_control_sequences_are_shown_as_escapes_not_acted_on(printed: str, shown: str) -> None:
    stream = io.StringIO()
    OutputPrinter(redactor(), stream=stream, colour=False).print_lines("i-1", printed)
    assert stream.getvalue() == f"i-1 | {shown}\n"
    assert neutralise(printed) == shown
    assert not RAW_CONTROL.search(stream.getvalue().rstrip("\n"))


def test_crlf_ends_a_line_and_a_name_tag_label_is_neutralised_too() -> None:
    stream = io.StringIO()
    printer = OutputPrinter(redactor(), stream=stream, names={"i-a": "web\x1b[2J"}, colour=False)
    printer.print_lines("i-a", "one\r\ntwo\r\n\r\n")
    assert stream.getvalue() == "web\\x1b[2J | one\nweb\\x1b[2J | two\nweb\\x1b[2J | \n"


def test_coloured_label_is_the_pipes_only_escape_in_a_line() -> None:
    stream = io.StringIO()
    OutputPrinter(redactor(), stream=stream, colour=True, order=["i-1"]).print_lines("i-1", "\x1b[31mred")
    label, _, rest = stream.getvalue().partition(" | ")
    assert label.startswith("\x1b[") and rest == "\\x1b[31mred\n"


# --- the build log stays under Bitbucket's 50 MB, counted in bytes ---------------------------------


def test_budget_counts_utf8_bytes_not_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipe.report.console as output

    monkeypatch.setattr(output, "LOG_BUDGET_BYTES", 3000)
    monkeypatch.setattr(output, "MIN_INSTANCE_BUDGET", 100)
    stream = io.StringIO()
    printer = output.OutputPrinter(redactor(), stream=stream, colour=False)
    printer.print_lines("i-a", "€€€€€€€€€€€€€€€€€€€€\n" * 1000)  # 3 bytes a character

    assert len(stream.getvalue().encode()) <= 3000
    assert stream.getvalue().startswith("i-a | €")


def test_a_tail_of_huge_lines_is_bounded_in_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipe.report.console as output

    monkeypatch.setattr(output, "LOG_BUDGET_BYTES", 1000)
    monkeypatch.setattr(output, "MIN_INSTANCE_BUDGET", 100)
    stream = io.StringIO()
    printer = output.OutputPrinter(redactor(), stream=stream, colour=False)
    printer.print_lines("i-a", "".join(f"{n:03d}" + "y" * 100_000 + "\n" for n in range(100)))  # 100 x 100 KB
    printer.flush_elided("CloudWatch Logs group /g")

    printed = stream.getvalue()
    assert len(printed.encode()) <= output.TAIL_BYTES + 1000
    assert "099yyyy" in printed and "more bytes]" in printed  # the newest line, cut
    assert "100 lines" not in printed and "lines (10.0 MB) left out" in printed


def test_a_large_fleet_shares_one_budget_and_later_phases_share_it_too(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipe.report.console as output

    monkeypatch.setattr(output, "LOG_BUDGET_BYTES", 100_000)
    monkeypatch.setattr(output, "MIN_INSTANCE_BUDGET", 10_000)
    monkeypatch.setattr(output, "TAIL_BYTES", 5_000)
    build_log = output.BuildLog(output_bytes=100_000, tail_bytes=20_000)
    stream = io.StringIO()
    for _phase in ("deploy", "health check", "rollback"):
        printer = output.OutputPrinter(redactor(), stream=stream, instance_count=50, colour=False, build_log=build_log)
        for n in range(50):
            printer.print_lines(f"i-{n:02d}", f"{'z' * 299}\n" * 100)  # 30 KB each
        printer.flush_elided("CloudWatch Logs group /g")

    notes = stream.getvalue().count("left out to keep the build log")
    assert notes >= 50
    assert len(stream.getvalue().encode()) <= 100_000 + 20_000 + notes * 200


# --- S3 output, a line at a time --------------------------------------------------------------------


def test_s3_lines_split_at_newlines_only_and_keep_characters_split_across_chunks() -> None:
    euro = "€".encode()
    chunks = [b"50%\rdone\n", b"form\x0cfeed\n\n", euro[:1], euro[1:] + b" end"]
    assert list(split_lines(chunks)) == ["50%\rdone\n", "form\x0cfeed\n", "\n", "€ end"]


def test_s3_line_without_a_newline_comes_in_bounded_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipe.report.s3_output as s3_output

    monkeypatch.setattr(s3_output, "MAX_PIECE_CHARS", 10)
    pieces = list(split_lines([b"x" * 8] * 5 + [b"\nend"]))
    assert "".join(pieces) == "x" * 40 + "\nend"
    assert max(len(piece) for piece in pieces) <= 18


def test_the_cut_notice_asks_for_what_is_missing_not_for_streaming_that_is_on() -> None:
    from pipe.apply.watch.closing import _remedy
    from unit.unit_support import make_settings

    streaming = _remedy(make_settings(stream_output=True, log_group="/aws/ssm/ssm-deploy"))
    assert "STREAM_OUTPUT" not in streaming
    assert "CloudWatch Logs group /aws/ssm/ssm-deploy" in streaming and "OUTPUT_S3_BUCKET" in streaming
    assert "STREAM_OUTPUT: 'true'" in _remedy(make_settings(stream_output=False))


def test_a_line_printed_in_pieces_shows_once_whole_with_a_value_the_cut_split_masked() -> None:
    # attack 40: the SSM Agent cuts a line over 200,000 bytes in CloudWatch events; S3 lines come in pieces
    stream = io.StringIO()
    printer = OutputPrinter(redactor(), stream=stream, colour=False)
    printer.print_lines("i-a", "before\n0000 hunter2-", continues=True)
    printer.print_lines("i-a", "other stream", is_stderr=True)
    assert stream.getvalue() == "i-a | before\ni-a | [stderr] other stream\n"
    printer.print_lines("i-a", "secret 1111\nnext", continues=True)
    printer.print_lines("i-a", "end\n")
    printer.print_lines("i-a", "last", continues=True)
    printer.flush_held()  # the command ended: no next piece
    printer.flush_held()
    assert stream.getvalue().splitlines()[2:] == ["i-a | 0000 **** 1111", "i-a | nextend", "i-a | last"]


def test_a_line_too_long_to_hold_is_printed_cut_with_both_sides_of_the_cut_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(console, "HELD_CHARS", 10)
    stream = io.StringIO()
    printer = OutputPrinter(redactor(), stream=stream, colour=False)
    printer.print_lines("i-a", "0123456789 hunter2-", continues=True)
    printer.print_lines("i-a", "secret tail\n")
    assert stream.getvalue() == f"i-a | 0123456789 {MASK}\ni-a | {MASK} tail\n"


def test_a_held_piece_whose_next_piece_never_comes_is_printed_with_a_value_it_ends_inside_masked() -> None:
    # attack 45's note: the command ended (or the step was stopped) while a line the agent cut was held,
    # and its next piece never came: the start of a value the cut split must not be printed
    stream = io.StringIO()
    printer = OutputPrinter(redactor(), stream=stream, colour=False)
    printer.print_lines("i-a", "ok\ntoken hunter2-", continues=True)
    printer.flush_held()
    assert stream.getvalue() == f"i-a | ok\ni-a | token {MASK}\n"
    assert "hunter2" not in stream.getvalue()
