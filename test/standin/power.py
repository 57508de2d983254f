"""EC2 StopInstances and StartInstances in the stand-in (moto changes the state only; pinned to moto 5.2.5,
like ``auto_scaling``, which patches TerminateInstances).

What AWS documents, and the stand-in does:
- A stopped instance runs nothing: every process it ran dies (its agent, pm2, the app), its memory is lost.
- Its SSM Agent stops pinging: DescribeInstanceInformation reports it ``ConnectionLost``.
- An invocation it was running stays ``InProgress`` (the agent that would report it is gone).
- A command sent to it while it is stopped is ``Delayed``: "The system attempted to send the command to the
  target, but the target wasn't available ... because the node was stopped ... The system will try to send
  the command again" (GetCommandInvocation, StatusDetails); it is delivered if the instance starts before the
  command's total timeout, else it turns ``DeliveryTimedOut`` (``agent.InvocationRun._await_online``).
- Started again, its agent is back ``Online``, picks up what waited for it, and, as after a reboot, runs again
  from the start each document it had begun and not finished (``InvocationRun.resume``). Nothing else comes
  back by itself: a process manager must be set to start on boot for the app to run again.

Not modelled: the ``stopping`` and ``pending`` states (the change is immediate), the expiry of an invocation
left ``InProgress`` by a stop (AWS turns it DeliveryTimedOut when the command expires), and what a load
balancer reports for a stopped target (its health checks fail, as for any instance whose app is down).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moto.ec2.models import EC2Backend

Change = Callable[[str], None]
_originals: dict[str, Any] = {}
_hooks: dict[str, Change] = {}


def install(stopped: Change, started: Change) -> None:
    """Patch moto's EC2 (once); later calls only swap the hooks. ``stopped(id)`` runs after EC2 stopped an
    instance, ``started(id)`` after it started one."""
    _hooks.update(stopped=stopped, started=started)
    if _originals:
        return
    _originals["stop"] = EC2Backend.stop_instances
    _originals["start"] = EC2Backend.start_instances
    setattr(EC2Backend, "stop_instances", _stop_instances)  # noqa: B010
    setattr(EC2Backend, "start_instances", _start_instances)  # noqa: B010


def _stop_instances(self: EC2Backend, instance_ids: list[str]) -> Any:
    changed = _originals["stop"](self, instance_ids)
    for instance, _ in changed:
        _hooks["stopped"](str(instance.id))
    return changed


def _start_instances(self: EC2Backend, instance_ids: list[str]) -> Any:
    changed = _originals["start"](self, instance_ids)
    for instance, _ in changed:
        _hooks["started"](str(instance.id))
    return changed
