"""An in-memory SSM for the poll strategy's unit tests: commands with invocations whose statuses a
test sets between polls, ListCommands counts, paged and filtered listings, and a count of every call."""

from __future__ import annotations

import collections
import datetime
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

PAGE = 50
ERRORS = frozenset({"Failed", "ExecutionTimedOut"})
ACTIVE = frozenset({"Pending", "InProgress", "Delayed", "Cancelling"})


@dataclass
class Row:
    status: str = "Pending"
    details: str = "Pending"
    code: int = -1
    output: str = ""
    started: bool = False


@dataclass
class Command:
    command_id: str
    rows: dict[str, Row]
    requested_at: datetime.datetime
    document: str = "AWS-RunShellScript"
    hidden: set[str] = field(default_factory=set)  # rows not listed yet (eventual consistency)
    request: dict[str, Any] = field(default_factory=dict)

    def set(self, instance_id: str, status: str, details: str | None = None, code: int | None = None) -> None:
        row = self.rows[instance_id]
        row.status, row.details = status, details or status
        row.started = row.started or status != "Pending"
        if code is not None:
            row.code = code
        elif status == "Success":
            row.code = 0

    def summary(self) -> dict[str, Any]:
        rows = list(self.rows.values())
        active = [r for r in rows if r.status in ACTIVE]
        status = (
            ("Pending" if all(r.status == "Pending" for r in rows) else "InProgress")
            if active
            else ("Success" if all(r.status == "Success" for r in rows) else "Failed")
        )
        return {
            "CommandId": self.command_id,
            "DocumentName": self.document,
            "RequestedDateTime": self.requested_at,
            "Status": status,
            "TargetCount": len(rows),
            "CompletedCount": len(rows) - len(active),
            "ErrorCount": sum(1 for r in rows if r.details in ERRORS),
            "DeliveryTimedOutCount": sum(1 for r in rows if r.details == "DeliveryTimedOut"),
        }


@dataclass
class FakeSSM:
    commands: dict[str, Command] = field(default_factory=dict)
    calls: collections.Counter[str] = field(default_factory=collections.Counter)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=itertools.count)
    # botocore's event system, where the pipe registers its SendCommand retry rule
    meta: Any = field(
        default_factory=lambda: SimpleNamespace(
            service_model=SimpleNamespace(service_id=SimpleNamespace(hyphenize=lambda: "ssm")),
            events=SimpleNamespace(register=lambda *_, **__: None),
        )
    )

    def add(self, instance_ids: list[str], document: str = "AWS-RunShellScript") -> Command:
        command_id = f"{next(self._ids):08d}-0000-4000-8000-000000000000"
        moment = datetime.datetime(2025, 1, 1, 12, 0, len(self.commands), tzinfo=datetime.UTC)
        command = Command(command_id, {i: Row() for i in instance_ids}, moment, document)
        self.commands[command_id] = command
        return command

    def _count(self, name: str, request: dict[str, Any]) -> None:
        self.calls[name] += 1
        self.requests.append((name, request))

    # --- the API ----------------------------------------------------------------------------------
    def send_command(self, **request: Any) -> dict[str, Any]:
        self._count("SendCommand", request)
        command = self.add(list(request["InstanceIds"]), request["DocumentName"])
        command.request = request
        return {"Command": {"CommandId": command.command_id, "RequestedDateTime": command.requested_at}}

    def list_commands(self, **request: Any) -> dict[str, Any]:
        self._count("ListCommands", request)
        if request.get("CommandId"):
            return {"Commands": [self.commands[request["CommandId"]].summary()]}
        rows = [c.summary() for c in reversed(self.commands.values())]
        for entry in request.get("Filters", []):
            if entry["key"] == "DocumentName":
                rows = [r for r in rows if r["DocumentName"] == entry["value"]]
            if entry["key"] == "InvokedAfter":
                since = datetime.datetime.fromisoformat(entry["value"].replace("Z", "+00:00"))
                rows = [r for r in rows if r["RequestedDateTime"] >= since]
        return _page(rows, request, "Commands")

    def list_command_invocations(self, **request: Any) -> dict[str, Any]:
        self._count("ListCommandInvocations", request)
        command = self.commands[request["CommandId"]]
        rows = []
        for instance_id, row in command.rows.items():
            if instance_id in command.hidden:
                continue
            wanted = [f["value"] for f in request.get("Filters", []) if f["key"] == "Status"]
            timed_out = row.status == "TimedOut"
            if wanted and not (row.status in wanted or row.details in wanted or ("TimedOut" in wanted and timed_out)):
                continue
            item: dict[str, Any] = {
                "CommandId": command.command_id,
                "InstanceId": instance_id,
                "Status": row.status,
                "StatusDetails": row.details,
            }
            if request.get("Details"):
                plugin: dict[str, Any] = {"Name": "aws:runShellScript", "ResponseCode": row.code, "Output": row.output}
                if row.started:
                    plugin["ResponseStartDateTime"] = command.requested_at
                    plugin["ResponseFinishDateTime"] = command.requested_at + datetime.timedelta(seconds=2)
                item["CommandPlugins"] = [plugin]
            rows.append(item)
        return _page(rows, request, "CommandInvocations")

    def get_command_invocation(self, **request: Any) -> dict[str, Any]:
        self._count("GetCommandInvocation", request)
        row = self.commands[request["CommandId"]].rows[request["InstanceId"]]
        return {
            "Status": row.status,
            "StatusDetails": row.details,
            "ResponseCode": row.code,
            "StandardOutputContent": row.output.replace("\n---Output truncated---", "") + "and the rest\n",
            "StandardErrorContent": "",
            "ExecutionElapsedTime": "PT2S",
        }

    def cancel_command(self, **request: Any) -> dict[str, Any]:
        self._count("CancelCommand", request)
        command = self.commands[request["CommandId"]]
        for instance_id in request.get("InstanceIds") or list(command.rows):
            if command.rows[instance_id].status in ACTIVE:
                command.set(instance_id, "Cancelled")
        return {}

    def describe_instance_information(self, **request: Any) -> dict[str, Any]:
        self._count("DescribeInstanceInformation", request)
        ids = request["Filters"][0]["Values"]
        return {"InstanceInformationList": [{"InstanceId": i, "PingStatus": "Online"} for i in ids]}

    def get_paginator(self, operation: str) -> Paginator:
        return Paginator(getattr(self, operation))


@dataclass
class Paginator:
    call: Any

    def paginate(self, **request: Any) -> Iterator[dict[str, Any]]:
        size = request.pop("PaginationConfig", {}).get("PageSize")
        if size:
            request["MaxResults"] = size
        while True:
            page = self.call(**request)
            yield page
            if not page.get("NextToken"):
                return
            request["NextToken"] = page["NextToken"]


def _page(rows: list[dict[str, Any]], request: dict[str, Any], key: str) -> dict[str, Any]:
    size = int(request.get("MaxResults") or PAGE)
    assert size <= PAGE
    start = int(request.get("NextToken") or 0)
    result: dict[str, Any] = {key: rows[start : start + size]}
    if start + size < len(rows):
        result["NextToken"] = str(start + size)
    return result
