"""How long a new instance of a group may take to install a release before it enters service: what its
launch hook must hold it for, and how long a rollout waits for an instance still being launched."""

from __future__ import annotations

from pipe.config.settings import DeploySettings

AGENT_MARGIN_SECONDS = 300  # a new instance boots and its agent registers before the association runs


def install_bound(settings: DeploySettings) -> int:
    """How long the association's run may take: the install, then the whole health check."""
    return settings.execution_timeout + (settings.healthcheck_timeout if settings.healthcheck_commands else 0)


def launch_bound(settings: DeploySettings) -> int:
    """From a new instance's launch until its install is done: the install and the time to come online."""
    return install_bound(settings) + AGENT_MARGIN_SECONDS
