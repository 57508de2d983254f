"""The rollout's plan, before anything is sent: the alarms' states, the traffic managers around each
batch (``pipe/traffic/``, e.g. the target groups with MIN_HEALTHY checked against the plan and the
fleet), the batches they leave, and the plan's lines. A refusal here leaves nothing deregistered or
sent."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pipe.aws.alarms import check_before_start
from pipe.aws.clients import Clients
from pipe.config.settings import DeploySettings
from pipe.model import Batch
from pipe.plan.batches import batch_lines
from pipe.traffic import RolloutScope, TrafficManager
from pipe.traffic.managers import PLANNERS


@dataclass(frozen=True)
class RolloutPlan:
    """The batches, the traffic managers around each, and the plan's lines for the log and the dry run."""

    batches: list[Batch]
    traffic: Sequence[TrafficManager] = ()
    lines: list[str] = field(default_factory=list)
    scopes: Sequence[RolloutScope] = ()  # held around the whole rollout


def prepare_rollout(settings: DeploySettings, clients: Clients, batches: list[Batch]) -> RolloutPlan:
    """The alarms' states, the traffic managers around each batch (``traffic/managers.py``: the load
    balancer's, when TARGET_GROUPS is set), the batches they leave, and the plan's lines."""
    if not settings.rollout.pipe_driven:
        return RolloutPlan(batches)
    alarms = _alarm_lines(clients, settings.rollout.alarms)
    managers: list[TrafficManager] = []
    scopes: list[RolloutScope] = []
    lines: list[str] = []
    for planner in PLANNERS:
        planned = planner(settings, clients, batches)
        if planned is None:
            continue
        batches, lines = planned.batches, lines + planned.lines
        if planned.manager is not None:
            managers.append(planned.manager)
        if planned.scope is not None:
            scopes.append(planned.scope)
    return RolloutPlan(batches, tuple(managers), batch_lines(batches) + alarms + lines, tuple(scopes))


def _alarm_lines(clients: Clients, alarms: tuple[str, ...]) -> list[str]:
    """ALARMS' states now (the deploy is refused when one is missing, unreadable or in ALARM)."""
    if not alarms:
        return []
    states = check_before_start(clients.cloudwatch, alarms)
    lines = ["  alarms:    " + "; ".join(f"{name}: {states[name].state}" for name in alarms)]
    if len(alarms) > 1:
        lines.append(
            f"             SSM watches {alarms[0]} during each command (AlarmConfiguration takes one "
            "alarm); the pipe reads all of them between batches and through the bake"
        )
    return lines
