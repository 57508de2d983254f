"""What the pipe knows about each instance's invocation, and which statuses are final."""

from __future__ import annotations

from dataclasses import dataclass

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
