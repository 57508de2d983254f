"""What one deploy shares while it runs: execution state only, never a finding about the fleet.

The clients, the stop requests, the masking of secret values, the build log's budget and the outcome
being built. What the deploy found out before sending (the instances, the secrets, the release, the
batches) is the plan (``pipe/plan``), a frozen value next to it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipe.aws.clients import Clients
from pipe.model import DeployOutcome
from pipe.report.console import BuildLog
from pipe.runtime.interruption import StopRequests
from pipe.runtime.redaction import Redactor

if TYPE_CHECKING:
    from pipe.traffic.left_out import LeftOut


@dataclass
class Execution:
    clients: Clients
    stops: StopRequests
    redactor: Redactor
    outcome: DeployOutcome = field(default_factory=DeployOutcome)
    build_log: BuildLog = field(default_factory=BuildLog)  # the output budget and once-only notices, all phases
    left_out: LeftOut | None = None  # with LOCK: the record of what this deploy took out of service

    def left_the_fleet(self, instance_ids: Sequence[str]) -> dict[str, str]:
        """Which of ``instance_ids`` left the fleet on purpose during the deploy (terminated by their Auto
        Scaling group), and how: gone, not failed. Nothing here knows a group; a ``Run`` asks its plan's."""
        return {}
