"""Follow a command's CloudWatch Logs output while it runs: one FilterLogEvents pass per poll.

SSM writes ``<CommandId>/<InstanceId>/<plugin>/stdout|stderr`` streams as the command runs.
Each poll asks for events of all the command's streams at once (logStreamNamePrefix). Once output
from more than one instance has been seen, it reads from a look-back window, so an instance whose
upload lags behind another's is not skipped; events already printed are recognised per stream
(each stream is written in order), which keeps memory flat. With one instance there is no other
upload to lag behind, so nothing is read twice, whatever the volume.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from pipe.aws.errors import error_code, error_message, is_access_denied
from pipe.report.console import OutputPrinter

LOOKBACK_MS = 35_000  # the SSM Agent uploads at least every 30 s
PAGE_EVENTS = 1000  # small pages keep memory flat however much the instances print
DRAIN_POLL_SECONDS = 0.25
log = logging.getLogger("ssm-deploy")


@dataclass
class _StreamPosition:
    newest: int = -1
    ids_at_newest: set[str] = field(default_factory=set)
    chars: int = 0

    def is_new(self, timestamp: int, event_id: str) -> bool:
        return timestamp > self.newest or (timestamp == self.newest and event_id not in self.ids_at_newest)

    def advance(self, timestamp: int, event_id: str, size: int) -> None:
        if timestamp > self.newest:
            self.newest, self.ids_at_newest = timestamp, set()
        self.ids_at_newest.add(event_id)
        self.chars += size


class LogTail:
    def __init__(self, logs: Any, group: str, command_ids: list[str], printer: OutputPrinter, start_ms: int) -> None:
        self._logs = logs
        self._group = group
        self._command_ids = command_ids
        self._printer = printer
        self._start_ms = start_ms
        self._positions: dict[str, _StreamPosition] = {}
        self.available = True

    def poll(self) -> int:
        """Print events that arrived since the last poll; return how many."""
        printed = 0
        for command_id in self._command_ids:
            if not self.available:
                break
            printed += self._poll_command(command_id)
        return printed

    def _poll_command(self, command_id: str) -> int:
        newest = max((p.newest for p in self._positions.values()), default=self._start_ms)
        instances = {key.split("/", 1)[0] for key in self._positions}
        lookback = LOOKBACK_MS if len(instances) > 1 else 0
        request: dict[str, Any] = {
            "logGroupName": self._group,
            "logStreamNamePrefix": f"{command_id}/",
            "startTime": max(self._start_ms, newest - lookback),
            "limit": PAGE_EVENTS,
        }
        printed = 0
        try:
            while True:
                page = self._logs.filter_log_events(**request)
                printed += self._print_new(page.get("events", []))
                token = page.get("nextToken")
                if not token:
                    return printed
                request["nextToken"] = token
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                return printed  # the agent creates the group and streams with the first output
            self.available = False
            if is_access_denied(error):
                log.warning(
                    f"Live output is off: the deploy role may not read {self._group} "
                    f"({error_message(error)}). Allow logs:FilterLogEvents on that log group. "
                    "Output will be shown when the command ends."
                )
            else:
                log.warning(f"Live output is off: {error_code(error)}: {error_message(error)}")
            return printed

    def streamed_chars(self, instance_id: str, stream: str) -> int:
        position = self._positions.get(f"{instance_id}/{stream}")
        return position.chars if position else 0

    def drain(
        self,
        expected: dict[tuple[str, str], int],
        limit_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> bool:
        """Poll until every stream holds at least the characters SSM reported; False on time-out."""
        deadline = clock() + limit_seconds
        while True:
            self.poll()
            if not self.available:
                return False
            if all(self.streamed_chars(i, s) >= chars for (i, s), chars in expected.items()):
                return True
            if clock() >= deadline:
                return False
            sleep(DRAIN_POLL_SECONDS)

    def _print_new(self, events: list[dict[str, Any]]) -> int:
        printed = 0
        for event in events:
            parts = str(event.get("logStreamName", "")).split("/")
            if len(parts) < 4:
                continue
            instance_id, stream = parts[1], parts[-1]
            position = self._positions.setdefault(f"{instance_id}/{stream}", _StreamPosition())
            timestamp, event_id = int(event.get("timestamp", 0)), str(event.get("eventId", ""))
            if not position.is_new(timestamp, event_id):
                continue
            message = str(event.get("message", ""))
            position.advance(timestamp, event_id, len(message) + 1)
            self._printer.print_lines(instance_id, message, is_stderr=stream == "stderr")
            printed += 1
        return printed
