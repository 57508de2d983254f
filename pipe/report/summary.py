"""After the wait: make sure every instance's output is in the build log, then summarise."""

from __future__ import annotations

import logging
from typing import Any

from pipe.aws.console import console_url
from pipe.config.documents import plugin_folder
from pipe.config.settings import DeploySettings
from pipe.model import Invocation
from pipe.report.console import STDERR_FIELD_LIMIT, STDOUT_FIELD_LIMIT, OutputPrinter, cut_notice
from pipe.report.s3_output import output_key, read_lines
from pipe.stages.send import SentCommand
from pipe.stages.watch.log_tail import LogTail
from pipe.stages.watch.results import fetch_result

DRAIN_SECONDS = 35.0  # the SSM Agent uploads output to CloudWatch at least every 30 s
log = logging.getLogger("ssm-deploy")


def show_results(
    ssm: Any,
    commands: list[SentCommand],
    invocations: dict[str, Invocation],
    printer: OutputPrinter,
    tail: LogTail | None,
    settings: DeploySettings,
    s3: Any = None,
) -> None:
    """Make sure each instance's output is in the log (from CloudWatch, S3 or SSM's capped fields),
    then print the summary. ``s3`` is a client when OUTPUT_S3_BUCKET is set."""
    for invocation in invocations.values():
        if invocation.status_details != "Terminated":  # never started: there is nothing to read
            fetch_result(ssm, invocation.command_id, invocation)
    unstreamed = [inv for inv in invocations.values() if not inv.skipped]
    if tail is not None and tail.available:
        expected = {
            (inv.instance_id, stream): len(text)
            for inv in unstreamed
            for stream, text in (("stdout", inv.stdout), ("stderr", inv.stderr))
        }
        if tail.drain(expected, DRAIN_SECONDS):
            unstreamed = []
        else:
            unstreamed = [
                inv
                for inv in unstreamed
                if tail.streamed_chars(inv.instance_id, "stdout") < len(inv.stdout)
                or tail.streamed_chars(inv.instance_id, "stderr") < len(inv.stderr)
            ]
            if unstreamed:
                log.warning(
                    "CloudWatch did not deliver all output in time; showing what SSM captured for "
                    + ", ".join(inv.instance_id for inv in unstreamed)
                )
    for invocation in unstreamed:
        if not (s3 is not None and _print_from_s3(s3, invocation, printer, settings)):
            _print_captured(invocation, printer)
    printer.flush_elided(
        f"CloudWatch Logs group {settings.log_group}, streams <command id>/<instance id>/aws-runShellScript/stdout"
        if settings.stream_output
        else "the instance's SSM Agent log"
    )
    _summary(commands, invocations, settings.region)


def _print_from_s3(s3: Any, invocation: Invocation, printer: OutputPrinter, settings: DeploySettings) -> bool:
    """Print the full output the agent wrote to OUTPUT_S3_BUCKET; False when it is not there."""
    bucket, prefix = str(settings.output_s3_bucket), settings.output_s3_prefix
    folder = plugin_folder(settings.document_name)
    stdout = read_lines(s3, bucket, output_key(prefix, invocation.command_id, invocation.instance_id, "stdout", folder))
    if stdout is None:
        return False
    printer.print_header(f"---- output of {invocation.instance_id}: {invocation.describe()} (from s3://{bucket}) ----")
    for line in stdout:
        printer.print_lines(invocation.instance_id, line)
    stderr = read_lines(s3, bucket, output_key(prefix, invocation.command_id, invocation.instance_id, "stderr", folder))
    for line in stderr or ():
        printer.print_lines(invocation.instance_id, line, is_stderr=True)
    return True


def _print_captured(invocation: Invocation, printer: OutputPrinter) -> None:
    printer.print_header(f"---- output of {invocation.instance_id}: {invocation.describe()} ----")
    printer.print_lines(invocation.instance_id, invocation.stdout)
    printer.print_lines(invocation.instance_id, invocation.stderr, is_stderr=True)
    for notice in (
        cut_notice(invocation.stdout, STDOUT_FIELD_LIMIT, "Standard output"),
        cut_notice(invocation.stderr, STDERR_FIELD_LIMIT, "Standard error"),
    ):
        if notice:
            log.warning(f"{invocation.instance_id}: {notice}")


def _summary(commands: list[SentCommand], invocations: dict[str, Invocation], region: str) -> None:
    rows = [("INSTANCE", "STATUS", "EXIT", "DURATION")] + [
        (
            inv.instance_id,
            inv.status if inv.status_details in ("", inv.status) else f"{inv.status}/{inv.status_details}",
            "-" if inv.response_code is None or inv.response_code < 0 else str(inv.response_code),
            format_duration(inv.elapsed),
        )
        for inv in invocations.values()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    log.info(f"Summary of command {', '.join(c.command_id for c in commands)}:")
    for row in rows:
        log.info("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    for command in commands:
        url = console_url(region, command.command_id)
        if url:
            log.info(f"Console: {url}")


def format_duration(elapsed: str) -> str:
    """``PT1M2.5S`` (ISO 8601, as SSM reports it) -> ``1m 2.5s``; empty when unknown."""
    if not elapsed.startswith("PT"):
        return "-"
    text, out, number = elapsed[2:], [], ""
    for char in text:
        if char.isdigit() or char == ".":
            number += char
        elif number:
            out.append(f"{float(number):g}{char.lower()}")
            number = ""
    return " ".join(out) or "-"
