"""Shared value types: invocations and their final statuses, secret references, SendCommand targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ACTIVE_STATUSES = frozenset({"Pending", "InProgress", "Delayed", "Cancelling"})
SUCCESS = "Success"


@dataclass
class Invocation:
    instance_id: str
    command_id: str = ""
    status: str = "Pending"
    status_details: str = "Pending"
    response_code: int | None = None
    elapsed: str = ""
    stdout: str = ""
    stderr: str = ""
    lost: str = ""  # why the pipe gave the instance up (its agent went away), empty otherwise

    @property
    def finished(self) -> bool:
        return bool(self.lost) or self.status not in ACTIVE_STATUSES

    @property
    def skipped(self) -> bool:
        """Never started: SSM stopped the rollout because MAX_ERRORS was exceeded."""
        return self.status_details == "Terminated"

    @property
    def received_deploy(self) -> bool:
        """The command started on the instance (so a rollback has something to undo there)."""
        never_ran = {"Terminated", "Undeliverable", "DeliveryTimedOut", "Pending"}
        return not self.lost and self.status != "Pending" and self.status_details not in never_ran

    @property
    def succeeded(self) -> bool:
        return not self.lost and self.status == SUCCESS

    def describe(self) -> str:
        """``Failed (exit 3)`` or ``Failed/Undeliverable`` style text for messages."""
        text = self.status
        if self.status_details and self.status_details != self.status:
            text += f"/{self.status_details}"
        if self.response_code is not None and self.response_code >= 0:
            text += f" (exit {self.response_code})"
        if self.lost:
            text += f", given up: {self.lost}"
        if self.skipped:
            text += " (skipped: MAX_ERRORS reached)"
        return text


@dataclass(frozen=True)
class SecretRef:
    """An environment variable on the instance whose value comes from a Parameter Store parameter:
    a name (``/deploy/prod/db``), an ARN (a parameter shared from another account), either one
    with a version (``:3``) or a label (``:prod``)."""

    env_name: str
    parameter: str


@dataclass(frozen=True)
class Target:
    """One SendCommand target: ``tag:Service=api,web`` (values OR'ed; several targets are AND'ed)."""

    key: str
    values: tuple[str, ...]

    def to_api(self) -> dict[str, Any]:
        return {"Key": self.key, "Values": list(self.values)}

    def __str__(self) -> str:
        return f"{self.key}={','.join(self.values)}"
