"""FilterLogEvents reads of a command's streams: every page from a start time, each new event printed
once (``streams.StreamBook``), and what a refusal means for the live output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from pipe.apply.watch.streams import StreamBook
from pipe.aws.errors import error_code, error_message, is_access_denied
from pipe.limits import FILTER_PAGE_MAX_EVENTS

PAGE_EVENTS = FILTER_PAGE_MAX_EVENTS  # as few calls as AWS allows: the quota counts calls, not events


class FilterReads:
    def __init__(self, logs: Any, group: str, book: StreamBook, clock: Callable[[], float]) -> None:
        self._logs = logs
        self._group = group
        self._book = book
        self._clock = clock

    def read(self, command_id: str, start: int | None) -> tuple[int, ClientError | None]:
        """Print what the command's streams hold from ``start`` (the command's start when None) that
        was not printed yet: how many events, and the error that cut the read short, if any (a log
        group that does not exist yet is none: the agent creates it with the first output)."""
        request: dict[str, Any] = {"logGroupName": self._group, "logStreamNamePrefix": f"{command_id}/"}
        request |= {"limit": PAGE_EVENTS} | ({"startTime": start} if start is not None else {})
        printed = 0
        try:
            while True:
                self._book.counts.filter_calls += 1
                page = self._logs.filter_log_events(**request)
                printed += self._book.print_read(page.get("events", []), self._clock())
                if not page.get("nextToken"):
                    return printed, None
                request["nextToken"] = page["nextToken"]
        except ClientError as error:
            return printed, None if error_code(error) == "ResourceNotFoundException" else error

    def refused(self, error: ClientError, live: bool) -> str:
        """The warning for a refused read: with Live Tail (``live``) only what came before it is not
        read; otherwise live output is off."""
        if live:
            return (
                f"Live output may lack what the instances printed before it started: {error_code(error)}: "
                f"{error_message(error)}. Allow logs:FilterLogEvents on {self._group}."
            )
        if is_access_denied(error):
            return (
                f"Live output is off: the deploy role may not read {self._group} ({error_message(error)}). Allow "
                "logs:StartLiveTail and logs:FilterLogEvents on that log group. Output will be shown when the "
                "command ends."
            )
        return f"Live output is off: {error_code(error)}: {error_message(error)}."
