"""The summary of a command once it ended: one row per instance (status, exit code, duration), then
the command's console links."""

from __future__ import annotations

import logging

from pipe.aws.console import console_url
from pipe.model import Invocation, SentCommand
from pipe.report.durations import format_duration

log = logging.getLogger("ssm-deploy")


def print_summary(commands: list[SentCommand], invocations: dict[str, Invocation], region: str) -> None:
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
