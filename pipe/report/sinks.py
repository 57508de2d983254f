"""Sinks: where a deploy's result goes once it ended, however it ended. Each one reads the plan (None
when the deploy ended before its plan was made) and the outcome; a sink that cannot write warns and
never changes the verdict.

The sinks: the result file, RESULT_FILE (JSON) and its ``.env`` twin; the same values appended to
Bitbucket's shared variables when the step has them (both ``result_file.py``); a Code Insights report
on the commit (``code_insights.py``). Another sink is a class with ``write`` and a line in ``sinks``.

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
from pipe.report.result_file import append_shared_variables, result_values, write_files
from pipe.report.status import FleetStatus, status_document, status_dotenv
from pipe.runtime.redaction import Redactor


class Sink(Protocol):
    def write(self, plan: DeployPlan | None, outcome: DeployOutcome) -> None: ...


class StatusSink(Protocol):
    def write_status(self, status: FleetStatus) -> None: ...


@dataclass(frozen=True)
class ResultFile:
    """RESULT_FILE (JSON) and its ``.env`` twin."""

    settings: DeploySettings

    def write(self, plan: DeployPlan | None, outcome: DeployOutcome) -> None:
        content, variables = result_values(self.settings, outcome, plan.release if plan is not None else None)
        write_files(self.settings, content, variables)

    def write_status(self, status: FleetStatus) -> None:
        write_files(self.settings, status_document(self.settings, status), status_dotenv(self.settings, status))


@dataclass(frozen=True)
class SharedVariables:
    """The result's ``SSM_DEPLOY_*`` values appended to Bitbucket's shared variables, when the step
    has them (BITBUCKET_PIPELINES_VARIABLES_PATH)."""

    settings: DeploySettings
    env: Mapping[str, str]

    def write(self, plan: DeployPlan | None, outcome: DeployOutcome) -> None:
        _, variables = result_values(self.settings, outcome, plan.release if plan is not None else None)
        append_shared_variables(variables, self.env)

    def write_status(self, status: FleetStatus) -> None:
        append_shared_variables(status_dotenv(self.settings, status), self.env)


def sinks(settings: DeploySettings, env: Mapping[str, str], redactor: Redactor) -> list[Sink]:
    """The sinks of a deploy with ``settings``, in the order they are written; ``redactor`` masks what
    they show of the instances' output."""
    return [ResultFile(settings), SharedVariables(settings, env), CodeInsightsReport(settings, env, redactor)]


def status_sinks(settings: DeploySettings, env: Mapping[str, str]) -> list[StatusSink]:
    """The sinks of ACTION: status, in the order they are written."""
    return [ResultFile(settings), SharedVariables(settings, env)]
