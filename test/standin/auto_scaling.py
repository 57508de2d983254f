"""EC2 Auto Scaling groups in the stand-in: moto keeps the groups; this teaches it what AWS documents
and what the deploy relies on (pinned to moto 5.2.5, like ``moto_bridge``, the other module that patches it).

- Launch: an instance the group launches (CreateAutoScalingGroup, SetDesiredCapacity, a replacement)
  is a stand-in instance (``StandIn.launch``'s kind: SSM-managed, its own host), and once InService it
  registers in the group's target groups through the stand-in's load balancer ("When an instance is
  launched, Amazon EC2 Auto Scaling registers it with the target groups", Elastic Load Balancing and
  Amazon EC2 Auto Scaling). moto registered every instance of the group again on each change of
  capacity, undoing a deploy's drain; here only an instance entering service (or every instance when a
  target group is attached) is registered.
- Terminate: the group deregisters the instance from its target groups, then EC2 terminates it: its
  agent stops reporting (ConnectionLost), what it ran dies with it, and a new command is Undeliverable.
  (AWS waits for the deregistration delay in Terminating before terminating; here it is immediate.)
- Suspended processes (SuspendProcesses): ``Launch`` suspended, the group launches nothing; ``Terminate``
  suspended, it terminates nothing to scale in ("How suspended processes affect other processes");
  ``AddToLoadBalancer`` suspended, a launched instance is not registered. moto stored them and went on.
  DescribeAutoScalingGroups' SuspensionReason is "User suspended at <time>", as AWS writes it.
Lifecycle hooks (Pending:Wait, CompleteLifecycleAction) are not modelled yet."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable
from typing import Any

from moto.autoscaling.models import AutoScalingBackend, FakeAutoScalingGroup
from moto.ec2.models import EC2Backend

from standin.fleet import UNDELIVERABLE
from standin.load_balancer import LoadBalancerModel

LAUNCH, TERMINATE, ADD_TO_LOAD_BALANCER = "Launch", "Terminate", "AddToLoadBalancer"
_originals: dict[str, Any] = {}
_models: list[AutoScalingModel] = []


class AutoScalingModel:
    """What the stand-in does when a group launches or terminates an instance."""

    def __init__(
        self,
        add_instance: Callable[[str, str, str], None],
        lose_instance: Callable[[str], None],
        load_balancer: LoadBalancerModel,
    ) -> None:
        self._add_instance = add_instance  # (instance id, private IP, name)
        self._lose_instance = lose_instance
        self._load_balancer = load_balancer
        self._registered: dict[str, set[str]] = {}  # group name -> the instances it registered
        self._suspended_at: dict[tuple[str, str], str] = {}  # (group, process) -> when
        self._lock = threading.RLock()

    def launched(self, group: FakeAutoScalingGroup, instances: list[Any]) -> None:
        for instance in instances:
            self._add_instance(str(instance.id), str(instance.private_ip), str(group.name))

    def register_in_service(self, group: FakeAutoScalingGroup, everyone: bool = False) -> None:
        """Register the group's InService instances that it has not registered yet (``everyone``: all
        of them, as when target groups are attached) in its target groups."""
        if ADD_TO_LOAD_BALANCER in _suspended(group) and not everyone:
            return
        with self._lock:
            done = self._registered.setdefault(str(group.name), set())
            new = [
                str(s.instance.id)
                for s in group.instance_states
                if s.lifecycle_state == "InService" and (everyone or str(s.instance.id) not in done)
            ]
            done.update(new)
        for arn in group.target_group_arns:
            if new:
                self._load_balancer.register(str(arn), [(i, None) for i in new])

    def terminating(self, instance: Any) -> None:
        """Deregistered from its group's target groups, then gone."""
        group = getattr(instance, "autoscaling_group", None)
        instance_id = str(instance.id)
        if group is not None:
            for arn in group.target_group_arns:
                self._load_balancer.deregister(str(arn), [(instance_id, None)])
            with self._lock:
                self._registered.get(str(group.name), set()).discard(instance_id)
        self._lose_instance(instance_id)

    def suspension_reason(self, group: str, process: str) -> str:
        with self._lock:
            when = self._suspended_at.setdefault(
                (group, process), datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            )
        return f"User suspended at {when}"

    def resumed(self, group: str, processes: list[str]) -> None:
        with self._lock:
            for key in [k for k in self._suspended_at if k[0] == group and (not processes or k[1] in processes)]:
                del self._suspended_at[key]


def _model() -> AutoScalingModel | None:
    return _models[0] if _models else None


def _suspended(group: FakeAutoScalingGroup) -> set[str]:
    return set(getattr(group, "_suspended_processes", []) or [])


def _replace_instances(self: FakeAutoScalingGroup, count_needed: int, propagated_tags: dict[str, str]) -> None:
    if LAUNCH in _suspended(self):
        return  # Launch suspended: the group launches nothing; it catches up once Launch is resumed
    before = {s.instance.id for s in self.instance_states}
    _originals["replace"](self, count_needed, propagated_tags)
    model = _model()
    if model is not None:
        model.launched(self, [s.instance for s in self.instance_states if s.instance.id not in before])


def _set_desired_capacity(self: FakeAutoScalingGroup, new_capacity: int | None) -> None:
    active = len(self.active_instances())
    target = self.min_size if new_capacity is None else new_capacity
    if TERMINATE in _suspended(self) and target is not None and target < active:
        self.desired_capacity = target  # Terminate suspended: nothing is terminated to scale in
        return
    _originals["set_desired_capacity"](self, new_capacity)


def _update_attached_target_groups(self: AutoScalingBackend, group_name: str) -> None:
    model = _model()
    if model is not None:
        model.register_in_service(self.autoscaling_groups[group_name])


def _attach_target_groups(self: AutoScalingBackend, group_name: str, target_group_arns: list[str]) -> None:
    group = self.autoscaling_groups[group_name]
    group.append_target_groups(target_group_arns)
    model = _model()
    if model is not None:
        model.register_in_service(group, everyone=True)


def _terminate_instances(self: EC2Backend, instance_ids: list[str]) -> Any:
    model = _model()
    if model is not None:
        for instance in self.get_multi_instances_by_id(instance_ids):
            model.terminating(instance)
    return _originals["terminate_instances"](self, instance_ids)


def _suspended_processes(self: FakeAutoScalingGroup) -> list[dict[str, str]]:
    model = _model()
    return [
        {"ProcessName": p, "SuspensionReason": model.suspension_reason(str(self.name), p) if model else ""}
        for p in self._suspended_processes
    ]


def _resume_processes(self: AutoScalingBackend, group_name: str, scaling_processes: list[str]) -> None:
    group = self.autoscaling_groups[group_name]
    was = _suspended(group)
    _originals["resume_processes"](self, group_name, scaling_processes)
    model = _model()
    if model is not None:
        model.resumed(group_name, scaling_processes)
    if LAUNCH in was and LAUNCH not in _suspended(group):
        group.set_desired_capacity(group.desired_capacity)  # Launch resumed: launches what it could not


def install(model: AutoScalingModel) -> None:
    """Patch moto's Auto Scaling (once); later calls only swap the model."""
    _models[:] = [model]
    if _originals:
        return
    _originals["replace"] = FakeAutoScalingGroup.replace_autoscaling_group_instances
    _originals["set_desired_capacity"] = FakeAutoScalingGroup.set_desired_capacity
    _originals["terminate_instances"] = EC2Backend.terminate_instances
    _originals["resume_processes"] = AutoScalingBackend.resume_processes
    setattr(FakeAutoScalingGroup, "replace_autoscaling_group_instances", _replace_instances)  # noqa: B010
    setattr(FakeAutoScalingGroup, "set_desired_capacity", _set_desired_capacity)  # noqa: B010
    setattr(AutoScalingBackend, "update_attached_target_groups", _update_attached_target_groups)  # noqa: B010
    setattr(AutoScalingBackend, "attach_load_balancer_target_groups", _attach_target_groups)  # noqa: B010
    setattr(AutoScalingBackend, "resume_processes", _resume_processes)  # noqa: B010
    setattr(EC2Backend, "terminate_instances", _terminate_instances)  # noqa: B010
    prop: Any = FakeAutoScalingGroup.__dict__["suspended_processes"]
    setattr(FakeAutoScalingGroup, "suspended_processes", property(_suspended_processes, prop.fset))  # noqa: B010


def lose(service: Any, fleet: Any) -> Callable[[str], None]:
    """How a terminated stand-in instance goes: its agent offline, its commands dead, new ones undeliverable."""

    def gone(instance_id: str) -> None:
        instance = fleet.get(instance_id)
        if instance is None:
            return
        service.lose_instance(instance_id)
        instance.delivery = UNDELIVERABLE

    return gone
