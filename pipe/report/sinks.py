"""Sinks: where a deploy's result goes once it ended, however it ended. Each one reads the plan (None
when the deploy ended before its plan was made) and the outcome; a sink that cannot write warns and
never changes the verdict.

The sinks: the result file, RESULT_FILE (JSON), its ``.env`` twin, and the same values appended to
Bitbucket's shared variables when the step has them (``result_file.py``); a Code Insights report on the
commit (``code_insights.py``). Another sink is a class with ``write`` and a line in ``sinks``.

ACTION: status hands its findings (``report/status.py``) to the sinks in ``status_sinks``: a sink that
reports a status too has ``write_status``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from pipe.config.settings import DeploySettings
from pipe.model import DeployOutcome
from pipe.plan import DeployPlan
from pipe.report.code_insights import CodeInsightsReport
from pipe.report.result_file import write_files, write_result
from pipe.report.status import FleetStatus, status_document, status_dotenv
from pipe.runtime.redaction import Redactor


class Sink(Protocol):
    def write(self, plan: DeployPlan | None, outcome: DeployOutcome) -> None: ...


class StatusSink(Protocol):
    def write_status(self, status: FleetStatus) -> None: ...


@dataclass(frozen=True)
class ResultFile:
    """RESULT_FILE and its ``.env`` twin, and Bitbucket's shared variables."""

    settings: DeploySettings
    env: Mapping[str, str]

    def write(self, plan: DeployPlan | None, outcome: DeployOutcome) -> None:
        write_result(self.settings, outcome, env=dict(self.env), release=plan.release if plan is not None else None)

    def write_status(self, status: FleetStatus) -> None:
        settings = self.settings
        write_files(settings, status_document(settings, status), status_dotenv(settings, status), dict(self.env))


def sinks(settings: DeploySettings, env: Mapping[str, str], redactor: Redactor) -> list[Sink]:
    """The sinks of a deploy with ``settings``, in the order they are written; ``redactor`` masks what
    they show of the instances' output."""
    return [ResultFile(settings, env), CodeInsightsReport(settings, env, redactor)]


def status_sinks(settings: DeploySettings, env: Mapping[str, str]) -> list[StatusSink]:
    """The sinks of ACTION: status, in the order they are written."""
    return [ResultFile(settings, env)]
