"""The deploy's time bounds, computed once from the settings: how long the deploy may need AWS (the
credentials must last that long) and how long the pipe follows one command before it gives up itself.

The lock's lease is not one of them: a heartbeat renews it for as long as the deploy runs
(``config/lock.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from pipe.config.settings import DeploySettings

WAIT_MARGIN_SECONDS = 120  # beyond delivery + execution timeout, before the pipe gives up itself


@dataclass(frozen=True)
class Bounds:
    aws_seconds: int  # the longest the deploy may need AWS: what the session should last
    wait_margin: int  # how long the pipe follows a command beyond its delivery and execution timeouts


def deploy_bounds(settings: DeploySettings, margin: int = WAIT_MARGIN_SECONDS) -> Bounds:
    """The bounds of a deploy with these settings. It may need AWS for as long as the commands of one
    batch may take: for each command sent (deploy, health check, rollback), its delivery timeout, its
    execution timeout and ``margin``; or only ``margin`` when it does not wait for them."""
    if not settings.wait:
        return Bounds(margin, margin)
    runs = [settings.execution_timeout]
    if settings.healthcheck_commands:
        runs.append(settings.healthcheck_timeout)
    if settings.rollback_commands or settings.release is not None:  # release mode switches back
        runs.append(settings.execution_timeout)
    return Bounds(sum(settings.delivery_timeout + run + margin for run in runs), margin)
