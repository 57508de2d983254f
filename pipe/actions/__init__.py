"""The actions a run of the pipe can take (ACTION), one line each: the entry point runs the one the
settings name. A read-only action is a module and a line here, not a branch through the deploy."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pipe.actions.status import show_status
from pipe.config.actions import DEPLOY, STATUS
from pipe.config.settings import DeploySettings
from pipe.deploy import Deploy
from pipe.runtime.interruption import StopRequests
from pipe.runtime.redaction import Redactor

# settings, the process environment, the masking, the stop requests -> the success message (or it raises)
ActionRun = Callable[[DeploySettings, Mapping[str, str], Redactor, StopRequests], str]


def deploy(settings: DeploySettings, env: Mapping[str, str], redactor: Redactor, stops: StopRequests) -> str:
    return Deploy(settings, env, redactor).run(stops)


ACTIONS: dict[str, ActionRun] = {
    DEPLOY: deploy,
    STATUS: show_status,
}
