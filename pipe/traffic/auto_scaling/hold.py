"""Holding an Auto Scaling group's processes for the whole rollout, and telling the instances it took away.

Suspended from before the first batch until after the last (rollback included), because each would undo
or disturb the rollout while it runs (Amazon EC2 Auto Scaling User Guide, "Types of processes" and
"Considerations for suspending processes"):
- ``AZRebalance`` launches instances in another Availability Zone and terminates old ones: the launched
  ones come up on whatever their launch template installs, the terminated ones may be mid-deploy.
- ``HealthCheck`` marks an instance unhealthy when its load balancer's health check fails, as it does
  while a batch is drained or its app restarts; the guide suggests suspending it with ``ReplaceUnhealthy``
  "to reboot instances without Amazon EC2 Auto Scaling terminating the instances based on its health
  checks", which is what a deploy does to the app.
- ``ReplaceUnhealthy`` terminates and replaces the instances marked unhealthy.
- ``InstanceRefresh`` replaces instances while the pipe deploys to them.
Left running on purpose: ``Launch`` and ``Terminate`` (suspending either stops all scaling, out and in,
for as long as the deploy runs), ``AlarmNotification`` and ``ScheduledActions`` (the group keeps scaling
with its load), ``AddToLoadBalancer`` (a new instance must still enter its target groups). An instance the
group terminates during the deploy is reported as gone (``departed``), not as a failure; one it launches
during the deploy is deployed before the deploy declares success (``joined``, ``joined.py``).

Resumed on every exit path, and only what this deploy suspended: processes suspended before the deploy
(by anyone) stay suspended. Where resuming fails, the step's message (a failed deploy's too, after its own
failure) names the group and the command to run."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from pipe.config.rollout import healthy_floor
from pipe.errors import DeployFailed, PipeError, sentence
from pipe.execution import Execution
from pipe.traffic.auto_scaling.groups import (
    LAUNCHING_STATES,
    LEAVING_STATES,
    AutoScalingError,
    Group,
    call,
    memberships,
    read_groups,
)
from pipe.traffic.auto_scaling.joined import joined_in_service

log = logging.getLogger("ssm-deploy")
HELD_PROCESSES = ("AZRebalance", "HealthCheck", "ReplaceUnhealthy", "InstanceRefresh")


def resume_command(group: str, processes: Sequence[str]) -> str:
    return (
        f"aws autoscaling resume-processes --auto-scaling-group-name {group} --scaling-processes {' '.join(processes)}"
    )


class ScalingHold:
    """The RolloutScope of the Auto Scaling groups of a deploy."""

    def __init__(
        self, groups: Sequence[Group], deployed: Sequence[str], min_healthy: str, launch_wait: int = 0
    ) -> None:
        self.groups = list(groups)
        self.min_healthy = min_healthy
        self.launch_wait = launch_wait  # how long a launch may take: the wait for instances still launching
        ours = set(deployed)
        # per group, the instances of this deploy in it and how many were InService when it was planned
        self.members = {g.name: [i for i in g.instances if i in ours] for g in self.groups}
        self.planned_in_service = {g.name: len(g.in_service) for g in self.groups}
        # in the groups and launched when the plan read them: deployed, or left out on purpose (not targeted,
        # leaving); never taken for instances that joined during the rollout
        self.settled = {i for g in self.groups for i, state in g.instances.items() if state not in LAUNCHING_STATES}

    @contextmanager
    def holding(self, run: Execution) -> Iterator[None]:
        suspended: dict[str, list[str]] = {}  # what this deploy suspended, per group
        try:
            for group in self.groups:
                held = self._suspend(run, group.name)
                if held:
                    suspended[group.name] = held
        except AutoScalingError as error:
            left = self._resume(run, suspended)  # whatever the failure left held, released before saying why
            raise DeployFailed(
                " ".join([f"Scaling could not be held before the rollout: {error}. Nothing was deployed.", *left])
            ) from None
        except BaseException as ending:  # a stop or an AWS error after a group was held: released too
            self._released(run, suspended, ending)
            raise
        try:
            yield
        except BaseException as ending:
            self._released(run, suspended, ending)
            raise
        problems = self._resume(run, suspended)
        if problems:
            raise DeployFailed("The deploy succeeded, but " + " ".join(problems))

    def _released(self, run: Execution, suspended: dict[str, list[str]], ending: BaseException) -> None:
        """Resume what was suspended as ``ending`` ends the deploy; its message names what stays suspended."""
        left = self._resume(run, suspended)
        if left and isinstance(ending, PipeError):  # the verdict names what stays suspended, not the log alone
            ending.args = (" ".join([sentence(str(ending)), *left]),)

    def _suspend(self, run: Execution, name: str) -> list[str]:
        now = read_groups(run.clients.autoscaling, [name]).get(name)
        if now is None:
            raise AutoScalingError(f"the Auto Scaling group {name} no longer exists")
        already = sorted(now.suspended.intersection(HELD_PROCESSES))
        held = [p for p in HELD_PROCESSES if p not in now.suspended]
        if held:
            if run.left_out is not None:  # recorded first: a build killed from here on leaves a record to resume
                run.left_out.suspending(name, held)
            call(
                "SuspendProcesses",
                run.clients.autoscaling.suspend_processes,
                AutoScalingGroupName=name,
                ScalingProcesses=held,
            )
        log.info(
            f"Auto Scaling group {name}: {', '.join(held) or 'nothing'} suspended for the rollout"
            + (f" ({', '.join(already)} already suspended before it: left as they are)" if already else "")
        )
        return held

    def _resume(self, run: Execution, suspended: dict[str, list[str]]) -> list[str]:
        """Resume what was suspended, every group whatever fails in another; the problems, each with
        the command that resumes by hand."""
        problems = []
        for name, processes in suspended.items():
            try:
                call(
                    "ResumeProcesses",
                    run.clients.autoscaling.resume_processes,
                    AutoScalingGroupName=name,
                    ScalingProcesses=processes,
                )
            except AutoScalingError as error:
                problem = (
                    f"{', '.join(processes)} of the Auto Scaling group {name} could not be resumed ({error}) and are "
                    f"still suspended; resume them with: {resume_command(name, processes)}"
                )
                log.error(problem)
                problems.append(problem)
                continue
            log.info(f"Auto Scaling group {name}: {', '.join(processes)} resumed")
            if run.left_out is not None:
                run.left_out.resumed(name)
        return problems

    def joined(self, run: Execution, covered: Sequence[str]) -> dict[str, str]:
        """The groups' InService instances launched during the rollout (or still launching when it was
        planned) that ``covered`` lacks, once none is still being launched (``joined.py``)."""
        known = self.settled | set(covered) | set(run.outcome.departed)
        found = joined_in_service(run, [g.name for g in self.groups], known, self.launch_wait)
        for instance_id, name in found.items():
            self.members[name].append(instance_id)  # may leave the group in turn: ``departed`` tells
        return {i: f"launched by the Auto Scaling group {name} during the rollout" for i, name in found.items()}

    def departed(self, run: Execution, instance_ids: Sequence[str]) -> dict[str, str]:
        """Those of ``instance_ids`` their group terminated (or that were detached) during the deploy;
        DeployFailed when that leaves a group with fewer InService instances than MIN_HEALTHY asks."""
        candidates = {i: name for name, ids in self.members.items() for i in ids if i in set(instance_ids)}
        if not candidates:
            return {}
        try:
            now = memberships(run.clients.autoscaling, list(candidates))
        except AutoScalingError as error:
            log.warning(f"Could not tell whether instances left their Auto Scaling group: {error}")
            return {}
        gone: dict[str, str] = {}
        for instance_id, name in candidates.items():
            group, state = now.get(instance_id, ("", ""))
            if group != name:
                gone[instance_id] = f"no longer in the Auto Scaling group {name} (terminated or detached by it)"
            elif state in LEAVING_STATES:
                gone[instance_id] = f"being terminated by the Auto Scaling group {name} ({state})"
        if gone:
            self._refuse_below_min_healthy(run, sorted({candidates[i] for i in gone}), gone)
        return gone

    def _refuse_below_min_healthy(self, run: Execution, names: list[str], gone: dict[str, str]) -> None:
        try:
            groups = read_groups(run.clients.autoscaling, names)
        except AutoScalingError as error:
            raise DeployFailed(f"Instances left their Auto Scaling group and it could not be read: {error}.") from None
        for name in names:
            group = groups.get(name)
            left = len(group.in_service) if group is not None else 0
            floor = healthy_floor(self.min_healthy, self.planned_in_service[name])
            if left < floor:
                raise DeployFailed(
                    f"The Auto Scaling group {name} took {', '.join(i for i in gone if i in self.members[name])} "
                    f"away during the deploy and has {left} instance(s) InService left, fewer than MIN_HEALTHY "
                    f"{self.min_healthy} ({floor} of the {self.planned_in_service[name]} InService when it began)."
                )
