"""The run context: what every stage of one deploy shares, instead of long parameter lists."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipe.aws.clients import Clients
from pipe.config.settings import DeploySettings
from pipe.model import DeployOutcome
from pipe.report.console import BuildLog
from pipe.runtime.interruption import StopRequests
from pipe.runtime.redaction import Redactor
from pipe.stages.authenticate import Identity

if TYPE_CHECKING:
    from pipe.stages.release.stage import Release


@dataclass
class Run:
    settings: DeploySettings  # PARAMETERS_PATH adds to its secrets once resolved
    env: Mapping[str, str]
    redactor: Redactor
    stops: StopRequests
    clients: Clients
    identity: Identity
    outcome: DeployOutcome = field(default_factory=DeployOutcome)
    targeted: list[str] | None = None  # the instances, when known before sending (None: SSM resolves TARGETS)
    names: dict[str, str] = field(default_factory=dict)  # Name tags that label output lines
    release: Release | None = None  # release mode: what goes live, and the ledger that records it
    build_log: BuildLog = field(default_factory=BuildLog)  # the output budget and once-only notices, all phases

    @property
    def region(self) -> str:
        return self.settings.region

    @property
    def order(self) -> list[str]:
        """The targeted instances in order: each keeps its colour in every phase."""
        return list(self.targeted or [])
