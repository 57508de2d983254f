"""pipe.model, pipe.report.console and pipe.runtime.logging_setup: what the build log shows, masked."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from pipe.model import ACTIVE_STATUSES, Invocation
from pipe.report.console import STDERR_FIELD_LIMIT, STDOUT_FIELD_LIMIT, OutputPrinter, cut_notice
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
    printer = OutputPrinter(redactor(), label_lines=True, stream=stream, colour=False)
    printer.print_lines("i-1", f"line one\npassword={SECRET}\n")
    printer.print_lines("i-1", "warn", is_stderr=True)
    assert stream.getvalue() == f"i-1 | line one\ni-1 | password={MASK}\ni-1 | [stderr] warn\n"


def test_printer_masks_a_value_spanning_lines() -> None:
    masks = Redactor()
    masks.add("line-a\nline-b")
    stream = io.StringIO()
    OutputPrinter(masks, label_lines=False, stream=stream, colour=False).print_lines("i-1", "x line-a\nline-b y")
    assert stream.getvalue() == f"x {MASK} y\n"


def test_printer_without_labels_and_empty_text() -> None:
    stream = io.StringIO()
    printer = OutputPrinter(redactor(), label_lines=False, stream=stream, colour=False)
    printer.print_lines("i-1", "")
    printer.print_lines("i-1", "only\n", is_stderr=True)
    printer.print_header("---- header ----")
    assert stream.getvalue() == "[stderr] only\n---- header ----\n"


@pytest.mark.parametrize(
    ("limit", "what"), [(STDOUT_FIELD_LIMIT, "Standard output"), (STDERR_FIELD_LIMIT, "Standard error")]
)
def test_cut_notice_at_the_field_limit(limit: int, what: str) -> None:
    assert cut_notice("x" * (limit - 1), limit, what) is None
    notice = cut_notice("x" * limit, limit, what)
    assert notice is not None
    assert notice.startswith(f"{what} reached SSM's {limit:,}-character limit")


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
    printer = output.OutputPrinter(redactor(), label_lines=True, stream=stream, instance_count=2, colour=False)
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
    printer = OutputPrinter(redactor(), label_lines=True, stream=stream, names={"i-a": "web-1"}, colour=False)
    printer.print_lines("i-a", "up")
    assert stream.getvalue() == "web-1 | up\n"
