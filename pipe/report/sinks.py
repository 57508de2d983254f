"""Sinks: where a deploy's result goes once it ended, however it ended. Each one reads the plan (None
when the deploy ended before its plan was made) and the outcome; a sink that cannot write warns and
never changes the verdict.

The sinks: the result file, RESULT_FILE (JSON), its ``.env`` twin, and the same values appended to
Bitbucket's shared variables when the step has them (``result_file.py``); a Code Insights report on the
commit (``code_insights.py``). Another sink is a class with ``write`` and a line in ``sinks``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from pipe.config.settings import DeploySettings
from pipe.model import DeployOutcome
from pipe.plan import DeployPlan
from pipe.report.code_insights import CodeInsightsReport
from pipe.report.result_file import write_result
from pipe.runtime.redaction import Redactor


class Sink(Protocol):
    def write(self, plan: DeployPlan | None, outcome: DeployOutcome) -> None: ...


@dataclass(frozen=True)
class ResultFile:
    """RESULT_FILE and its ``.env`` twin, and Bitbucket's shared variables."""

    settings: DeploySettings
    env: Mapping[str, str]

    def write(self, plan: DeployPlan | None, outcome: DeployOutcome) -> None:
        write_result(self.settings, outcome, env=dict(self.env), release=plan.release if plan is not None else None)


def sinks(settings: DeploySettings, env: Mapping[str, str], redactor: Redactor) -> list[Sink]:
    """The sinks of a deploy with ``settings``, in the order they are written; ``redactor`` masks what
    they show of the instances' output."""
    return [ResultFile(settings, env), CodeInsightsReport(settings, env, redactor)]
