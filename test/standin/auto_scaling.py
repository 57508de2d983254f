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
- Launch lifecycle hooks (PutLifecycleHook with ``autoscaling:EC2_INSTANCE_LAUNCHING``; moto stores them and
  never uses them): a launched instance waits in ``Pending:Wait`` (not registered in any target group) until
  every launch hook of its group is completed: CompleteLifecycleAction CONTINUE puts it InService (then it
  registers), ABANDON terminates it and the group launches a replacement; past HeartbeatTimeout without
  a result (RecordLifecycleActionHeartbeat restarts it), the hook's DefaultResult applies ("Amazon EC2
  Auto Scaling lifecycle hooks", CompleteLifecycleAction, RecordLifecycleActionHeartbeat; both actions are
  missing in moto). Completing an instance that no hook holds is a ValidationError, as in AWS. Instances
  still launching count toward the desired capacity. ``hook_time_scale`` shortens the heartbeat timeout.
- Standby (EnterStandby, ExitStandby): "Instances that are on standby are still part of the Auto Scaling group,
  but they do not actively handle load balancer traffic" (User Guide, "Temporarily remove instances from your
  Auto Scaling group"): entering Standby deregisters the instance from the group's target groups, leaving it
  registers it again. moto changed the state only.
- Every launched instance is handed to ``on_online`` callbacks once it is a managed instance (the State
  Manager associations in ``associations.py`` run there)."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable
from typing import Any

from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.models import AutoScalingBackend, FakeAutoScalingGroup
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import ActionResult, EmptyResult
from moto.ec2.models import EC2Backend

from standin.fleet import UNDELIVERABLE
from standin.load_balancer import LoadBalancerModel

LAUNCH, TERMINATE, ADD_TO_LOAD_BALANCER = "Launch", "Terminate", "AddToLoadBalancer"
LAUNCHING_TRANSITION = "autoscaling:EC2_INSTANCE_LAUNCHING"
PENDING_WAIT, IN_SERVICE = "Pending:Wait", "InService"
LAUNCHING = frozenset({"Pending", PENDING_WAIT, "Pending:Proceed"})
CONTINUE, ABANDON = "CONTINUE", "ABANDON"
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
        self.hook_time_scale = 1.0  # heartbeat timeouts are multiplied by this
        self.on_online: list[Callable[[str], None]] = []  # called with each launched instance, once managed
        self._waits: dict[str, _Wait] = {}  # instance id -> the launch hooks still holding it

    def launched(self, group: FakeAutoScalingGroup, instances: list[Any]) -> None:
        hooks = launch_hooks(group)
        for instance in instances:
            instance_id = str(instance.id)
            if hooks:
                self._hold(group, instance_id, hooks)
            self._add_instance(instance_id, str(instance.private_ip), str(group.name))
            for callback in list(self.on_online):
                callback(instance_id)

    # --- launch lifecycle hooks ------------------------------------------------------------------
    def _hold(self, group: FakeAutoScalingGroup, instance_id: str, hooks: list[Any]) -> None:
        for state in group.instance_states:
            if str(state.instance.id) == instance_id:
                state.lifecycle_state = PENDING_WAIT
        wait = _Wait(group, {str(h.name): h for h in hooks})
        with self._lock:
            self._waits[instance_id] = wait
        for hook in hooks:
            self._arm(instance_id, wait, str(hook.name))

    def _arm(self, instance_id: str, wait: _Wait, hook_name: str) -> None:
        old = wait.timers.pop(hook_name, None)
        if old is not None:
            old.cancel()
        hook = wait.hooks[hook_name]
        group, default = str(wait.group.name), str(hook.default_result)
        timer = threading.Timer(
            float(hook.heartbeat_timeout) * self.hook_time_scale,
            lambda: self.complete(group, hook_name, instance_id, default, timed_out=True),
        )
        timer.daemon = True
        wait.timers[hook_name] = timer
        timer.start()

    def heartbeat(self, group_name: str, hook_name: str, instance_id: str) -> None:
        with self._lock:
            wait = self._active(group_name, hook_name, instance_id)
            self._arm(instance_id, wait, hook_name)

    def complete(self, group_name: str, hook_name: str, instance_id: str, result: str, timed_out: bool = False) -> None:
        """One launch hook's result for the instance: once every hook continued, InService (and registered
        in the group's target groups); ABANDON from any, terminated and replaced."""
        if result not in (CONTINUE, ABANDON):
            raise ValidationError(f"LifecycleActionResult must be CONTINUE or ABANDON, not {result}")
        with self._lock:
            try:
                wait = self._active(group_name, hook_name, instance_id)
            except ValidationError:
                if timed_out:
                    return
                raise
            timer = wait.timers.pop(hook_name, None)
            if timer is not None and not timed_out:
                timer.cancel()
            wait.results[hook_name] = result
            if result == CONTINUE and len(wait.results) < len(wait.hooks):
                return
            del self._waits[instance_id]
            for other in wait.timers.values():
                other.cancel()
        group = wait.group
        if result == ABANDON:
            group.autoscaling_backend.terminate_instance(instance_id, should_decrement=False)
            return
        for state in group.instance_states:
            if str(state.instance.id) == instance_id:
                state.lifecycle_state = IN_SERVICE
        self.register_in_service(group)

    def _active(self, group_name: str, hook_name: str, instance_id: str) -> _Wait:
        wait = self._waits.get(instance_id)
        if wait is None or str(wait.group.name) != group_name or hook_name not in wait.hooks:
            raise ValidationError(f"No active Lifecycle Action found with instance ID {instance_id}")
        if hook_name in wait.results:
            raise ValidationError(f"No active Lifecycle Action found with instance ID {instance_id}")
        return wait

    def forget(self, instance_id: str) -> None:
        with self._lock:
            wait = self._waits.pop(instance_id, None)
        for timer in wait.timers.values() if wait else []:
            timer.cancel()

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

    def standing_by(self, group: FakeAutoScalingGroup, instance_ids: list[str]) -> None:
        """Out of the group's target groups while in Standby (registered again with ExitStandby)."""
        for arn in group.target_group_arns:
            self._load_balancer.deregister(str(arn), [(i, None) for i in instance_ids])
        with self._lock:
            self._registered.get(str(group.name), set()).difference_update(instance_ids)

    def terminating(self, instance: Any) -> None:
        """Deregistered from its group's target groups, then gone."""
        group = getattr(instance, "autoscaling_group", None)
        instance_id = str(instance.id)
        if group is not None:
            for arn in group.target_group_arns:
                self._load_balancer.deregister(str(arn), [(instance_id, None)])
            with self._lock:
                self._registered.get(str(group.name), set()).discard(instance_id)
        self.forget(instance_id)
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


class _Wait:
    """The launch hooks holding one instance in Pending:Wait, their timers and their results so far."""

    def __init__(self, group: FakeAutoScalingGroup, hooks: dict[str, Any]) -> None:
        self.group = group
        self.hooks = hooks
        self.timers: dict[str, threading.Timer] = {}
        self.results: dict[str, str] = {}


def launch_hooks(group: FakeAutoScalingGroup) -> list[Any]:
    backend = group.autoscaling_backend
    return [
        hook
        for hook in backend.lifecycle_hooks.values()
        if hook.auto_scaling_group_name == group.name and hook.lifecycle_transition == LAUNCHING_TRANSITION
    ]


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


def _enter_standby(self: AutoScalingBackend, group_name: str, instance_ids: list[str], should_decrement: bool) -> Any:
    activities = _originals["enter_standby"](self, group_name, instance_ids, should_decrement)
    model = _model()
    if model is not None:
        model.standing_by(self.autoscaling_groups[group_name], instance_ids)
    return activities


def _exit_standby(self: AutoScalingBackend, group_name: str, instance_ids: list[str]) -> Any:
    activities = _originals["exit_standby"](self, group_name, instance_ids)
    model = _model()
    if model is not None:
        model.register_in_service(self.autoscaling_groups[group_name])
    return activities


def _active_instances(self: FakeAutoScalingGroup) -> list[Any]:
    """InService and still launching: both count toward the desired capacity."""
    return [s for s in self.instance_states if s.lifecycle_state == IN_SERVICE or s.lifecycle_state in LAUNCHING]


def _complete_lifecycle_action(self: AutoScalingResponse) -> ActionResult:
    model = _model()
    if model is None:  # pragma: no cover
        raise ValidationError("lifecycle hooks are not modelled")
    model.complete(
        self._get_param("AutoScalingGroupName"),
        self._get_param("LifecycleHookName"),
        self._get_param("InstanceId"),
        self._get_param("LifecycleActionResult"),
    )
    return EmptyResult()


def _record_lifecycle_action_heartbeat(self: AutoScalingResponse) -> ActionResult:
    model = _model()
    if model is None:  # pragma: no cover
        raise ValidationError("lifecycle hooks are not modelled")
    model.heartbeat(
        self._get_param("AutoScalingGroupName"), self._get_param("LifecycleHookName"), self._get_param("InstanceId")
    )
    return EmptyResult()


def install(model: AutoScalingModel) -> None:
    """Patch moto's Auto Scaling (once); later calls only swap the model."""
    _models[:] = [model]
    if _originals:
        return
    _originals["replace"] = FakeAutoScalingGroup.replace_autoscaling_group_instances
    _originals["set_desired_capacity"] = FakeAutoScalingGroup.set_desired_capacity
    _originals["terminate_instances"] = EC2Backend.terminate_instances
    _originals["resume_processes"] = AutoScalingBackend.resume_processes
    _originals["enter_standby"] = AutoScalingBackend.enter_standby_instances
    _originals["exit_standby"] = AutoScalingBackend.exit_standby_instances
    setattr(FakeAutoScalingGroup, "replace_autoscaling_group_instances", _replace_instances)  # noqa: B010
    setattr(FakeAutoScalingGroup, "set_desired_capacity", _set_desired_capacity)  # noqa: B010
    setattr(AutoScalingBackend, "update_attached_target_groups", _update_attached_target_groups)  # noqa: B010
    setattr(AutoScalingBackend, "attach_load_balancer_target_groups", _attach_target_groups)  # noqa: B010
    setattr(AutoScalingBackend, "resume_processes", _resume_processes)  # noqa: B010
    setattr(AutoScalingBackend, "enter_standby_instances", _enter_standby)  # noqa: B010
    setattr(AutoScalingBackend, "exit_standby_instances", _exit_standby)  # noqa: B010
    setattr(EC2Backend, "terminate_instances", _terminate_instances)  # noqa: B010
    setattr(FakeAutoScalingGroup, "active_instances", _active_instances)  # noqa: B010
    setattr(AutoScalingResponse, "complete_lifecycle_action", _complete_lifecycle_action)  # noqa: B010
    setattr(AutoScalingResponse, "record_lifecycle_action_heartbeat", _record_lifecycle_action_heartbeat)  # noqa: B010
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
