"""A fake SSM client for in-process orchestration tests: every command finishes at once, with the
exit code a test chooses per phase and instance. Only the calls the pipe makes are implemented."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from pipe.runtime.interruption import StopRequests

ExitCodes = Callable[[str, str], int]  # (phase label from the Comment, instance id) -> exit code
Outputs = Callable[[str, str], str]  # (phase label, instance id) -> what the instance printed


@dataclass
class Sent:
    command_id: str
    label: str
    instance_ids: list[str]
    request: dict[str, Any]
    cancelled: bool = False


@dataclass
class FakeSSM:
    exit_codes: ExitCodes = lambda label, instance_id: 0
    outputs: Outputs = lambda label, instance_id: f"{label} on {instance_id}\n"
    stops: StopRequests | None = None
    stop_during_send: str = ""  # a phase label: SIGTERM "arrives" while that command is being sent
    sent: list[Sent] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=itertools.count)
    # botocore's event system, where the pipe registers its SendCommand retry rule
    meta: Any = field(
        default_factory=lambda: SimpleNamespace(
            service_model=SimpleNamespace(service_id=SimpleNamespace(hyphenize=lambda: "ssm")),
            events=SimpleNamespace(register=lambda *_, **__: None),
        )
    )

    # --- sending ---------------------------------------------------------------------------------
    def send_command(self, **request: Any) -> dict[str, Any]:
        label = _label(request["Comment"])
        command_id = f"{next(self._ids):08d}-0000-4000-8000-000000000000"
        self.sent.append(Sent(command_id, label, list(request.get("InstanceIds", [])), request))
        if self.stops is not None and label == self.stop_during_send:
            self.stops.signal_name = "SIGTERM"
        return {"Command": {"CommandId": command_id}}

    def cancel_command(self, CommandId: str, InstanceIds: list[str] | None = None) -> dict[str, Any]:
        self._command(CommandId).cancelled = True
        return {}

    # --- following -------------------------------------------------------------------------------
    def list_commands(self, CommandId: str = "", **_: Any) -> dict[str, Any]:
        commands = [self._command(CommandId)] if CommandId else list(reversed(self.sent))
        return {"Commands": [self._summary(command) for command in commands]}

    def list_command_invocations(self, CommandId: str, Details: bool = False, **_: Any) -> dict[str, Any]:
        command = self._command(CommandId)
        rows = [self._invocation(command, i) for i in command.instance_ids]
        if Details:
            for row in rows:
                row["CommandPlugins"] = [
                    {
                        "Name": "aws:runShellScript",
                        "Status": row["Status"],
                        "ResponseCode": row["ResponseCode"],
                        "Output": self.outputs(row["label"], row["InstanceId"]),
                    }
                ]
        return {"CommandInvocations": rows}

    def get_command_invocation(self, CommandId: str, InstanceId: str) -> dict[str, Any]:
        item = self._invocation(self._command(CommandId), InstanceId)
        return {**item, "StandardOutputContent": self.outputs(item["label"], InstanceId), "StandardErrorContent": ""}

    def describe_instance_information(self, **_: Any) -> dict[str, Any]:
        ids = sorted({i for sent in self.sent for i in sent.instance_ids})
        return {"InstanceInformationList": [{"InstanceId": i, "PingStatus": "Online"} for i in ids]}

    def get_paginator(self, operation: str) -> _Paginator:
        return _Paginator(getattr(self, operation))

    # --- what the tests read ---------------------------------------------------------------------
    def labels(self) -> list[str]:
        return [sent.label for sent in self.sent]

    def phase(self, label: str) -> list[Sent]:
        return [sent for sent in self.sent if sent.label == label]

    def _summary(self, command: Sent) -> dict[str, Any]:
        rows = [self._invocation(command, i) for i in command.instance_ids]
        failed = sum(1 for row in rows if row["Status"] == "Failed")
        status = "Cancelled" if command.cancelled else ("Failed" if failed else "Success")
        return {
            "CommandId": command.command_id,
            "Status": status,
            "TargetCount": len(rows),
            "CompletedCount": len(rows),
            "ErrorCount": failed,
            "DeliveryTimedOutCount": 0,
        }

    def _command(self, command_id: str) -> Sent:
        return next(sent for sent in self.sent if sent.command_id == command_id)

    def _invocation(self, command: Sent, instance_id: str) -> dict[str, Any]:
        if command.cancelled:
            return {
                "InstanceId": instance_id,
                "Status": "Cancelled",
                "StatusDetails": "Cancelled",
                "ResponseCode": -1,
                "label": command.label,
            }
        code = self.exit_codes(command.label, instance_id)
        status = "Success" if code == 0 else "Failed"
        return {
            "InstanceId": instance_id,
            "Status": status,
            "StatusDetails": status,
            "ResponseCode": code,
            "ExecutionElapsedTime": "PT1.5S",
            "label": command.label,
        }


@dataclass
class _Paginator:
    call: Callable[..., dict[str, Any]]

    def paginate(self, **request: Any) -> Iterator[dict[str, Any]]:
        request.pop("PaginationConfig", None)
        yield self.call(**request)


def _label(comment: str) -> str:
    comment = re.sub(r" \(ref [0-9a-f]{8}\)$", "", comment)  # the send marker
    for label in ("health check", "rollback"):
        if comment.endswith(f" {label}"):
            return label
    return "deploy"
