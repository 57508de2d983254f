"""Target health of ELBv2 target groups, as Elastic Load Balancing documents it (no moto here).

moto registers and deregisters at once and calls every registered target ``healthy``. This model
keeps each (target group, target) pair instead, and a background thread runs the health checks:

* **Health checks** (ALB user guide, "Health checks for Application Load Balancer target groups"):
  one every ``HealthCheckIntervalSeconds`` per registered target; a check passes when the
  instance's app answers (the file ``APP_UP`` exists on it, see ``StandIn.app_up``). "After your
  target is registered, it must pass one health check to be considered healthy": a new target is
  ``initial`` until its first passing check (``Elb.RegistrationInProgress`` before any check ran,
  ``Elb.InitialHealthChecking`` after failing ones). ``UnhealthyThresholdCount`` consecutive
  failures make a target ``unhealthy`` (``Target.FailedHealthChecks``), and an unhealthy target
  needs ``HealthyThresholdCount`` consecutive passes to be ``healthy`` again ("the number of
  consecutive successful health checks required before considering an unhealthy target healthy").
  The first check runs one interval after RegisterTargets.
* **Deregistration** (ALB user guide, "Deregistration delay"): "The initial state of a deregistering
  target is draining"; the load balancer stops sending it requests at once. Even when the target
  has no in-flight requests, "the status of the target is displayed as draining until the
  deregistration delay timeout expires" (``deregistration_delay.timeout_seconds``, default 300).
  After it, the target is gone: DescribeTargetHealth without ``Targets`` no longer lists it, and
  naming it answers ``unused`` / ``Target.NotRegistered``.
* **Registering a draining target again** cancels its deregistration: it is registered at once
  with the health its checks found (ELB keeps checking while it drains; observed behaviour, as in
  ansible/ansible#44149: ``draining`` right before RegisterTargets, ``healthy`` right after). A
  target registered after it was gone starts over as ``initial``.
* **Not in use**: a target group that no load balancer uses gets no health checks; its targets are
  ``unused`` / ``Target.NotInUse`` (TargetHealth API reference).
* **Routing** (``in_service``): requests go only to ``healthy`` targets. "If a target group contains
  only unhealthy registered targets, the load balancer routes requests to all those targets,
  regardless of their health status" (fail open; with the default routing-failover threshold of
  one healthy target, "all targets available to the load balancer node, including unhealthy
  targets"): with no healthy target, every registered target that is not draining.

Time: health-check intervals and the deregistration delay are multiplied by ``time_scale`` (0.1 in
tests: a 5-s interval takes 0.5 s); the values AWS reports (the group's attributes) stay unscaled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

APP_UP = "/srv/lb-app/up"  # the instance's app answers (health checks and requests) while this exists
TICK = 0.01  # how often (real seconds) the health-check thread looks for due checks

INITIAL, HEALTHY, UNHEALTHY, DRAINING, UNUSED = "initial", "healthy", "unhealthy", "draining", "unused"
# Reason codes and descriptions: ALB user guide, "Health check reason codes"
REASONS = {
    "Elb.RegistrationInProgress": "Target registration is in progress",
    "Elb.InitialHealthChecking": "Initial health checks in progress",
    "Target.FailedHealthChecks": "Health checks failed",
    "Target.DeregistrationInProgress": "Target deregistration is in progress",
    "Target.NotRegistered": "Target is not registered to the target group",
    "Target.NotInUse": "Target group is not configured to receive traffic from the load balancer",
}


@dataclass(frozen=True)
class GroupSettings:
    """What the model reads of a target group (live, from moto, through ``moto_bridge``)."""

    port: int
    interval: int  # HealthCheckIntervalSeconds
    healthy_threshold: int  # HealthyThresholdCount
    unhealthy_threshold: int  # UnhealthyThresholdCount
    deregistration_delay: int  # deregistration_delay.timeout_seconds
    in_use: bool  # some load balancer forwards to the group


SettingsReader = Callable[[str], GroupSettings | None]
AppProbe = Callable[[str], bool]  # instance id -> does its app answer now


@dataclass
class _Target:
    instance_id: str
    port: int
    health: str = INITIAL  # INITIAL / HEALTHY / UNHEALTHY: what the checks found
    checks: int = 0  # health checks run since registration
    passes: int = 0  # consecutive
    failures: int = 0  # consecutive
    next_check: float = 0.0
    drain_until: float | None = None  # set while draining

    def record(self, passed: bool, settings: GroupSettings) -> None:
        self.checks += 1
        if passed:
            self.passes, self.failures = self.passes + 1, 0
            if self.health == INITIAL or (self.health == UNHEALTHY and self.passes >= settings.healthy_threshold):
                self.health = HEALTHY
        else:
            self.passes, self.failures = 0, self.failures + 1
            if self.health != UNHEALTHY and self.failures >= settings.unhealthy_threshold:
                self.health = UNHEALTHY

    def state(self, in_use: bool) -> tuple[str, str | None]:
        """(State, Reason) as DescribeTargetHealth reports them."""
        if self.drain_until is not None:
            return DRAINING, "Target.DeregistrationInProgress"
        if not in_use:
            return UNUSED, "Target.NotInUse"
        if self.health == INITIAL:
            return INITIAL, "Elb.RegistrationInProgress" if self.checks == 0 else "Elb.InitialHealthChecking"
        if self.health == UNHEALTHY:
            return UNHEALTHY, "Target.FailedHealthChecks"
        return HEALTHY, None


def health_row(instance_id: str, port: int, state: str, reason: str | None) -> dict[str, Any]:
    """One TargetHealthDescription (no Reason or Description when healthy, as the API reference says)."""
    health: dict[str, Any] = {"State": state}
    if reason is not None:
        health.update(Reason=reason, Description=REASONS[reason])
    return {"Target": {"Id": instance_id, "Port": port}, "HealthCheckPort": str(port), "TargetHealth": health}


class LoadBalancerModel:
    """Every target group's targets and their health; health checks run in one daemon thread."""

    def __init__(self, settings_of: SettingsReader, app_answers: AppProbe, time_scale: float = 1.0) -> None:
        self._settings_of = settings_of
        self._app_answers = app_answers
        self.time_scale = time_scale
        self._groups: dict[str, dict[str, _Target]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="elb-health-checks", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    # --- the API actions (called through moto_bridge) ---------------------------------------------
    def register(self, group_arn: str, targets: list[tuple[str, int | None]]) -> None:
        """RegisterTargets: new targets start ``initial``; a draining one is registered again; one
        already registered is left as it is (the call is idempotent)."""
        settings = self._settings(group_arn)
        now = time.monotonic()
        with self._lock:
            group = self._groups.setdefault(group_arn, {})
            for instance_id, port in targets:
                target = group.get(instance_id)
                if target is not None and target.drain_until is not None:
                    target.drain_until = None
                elif target is None:
                    group[instance_id] = _Target(
                        instance_id, port or settings.port, next_check=now + settings.interval * self.time_scale
                    )

    def deregister(self, group_arn: str, instance_ids: list[str]) -> None:
        """DeregisterTargets: registered targets drain for the deregistration delay; others are
        left alone ("If the specified target does not exist, the action returns successfully")."""
        settings = self._settings(group_arn)
        until = time.monotonic() + settings.deregistration_delay * self.time_scale
        with self._lock:
            group = self._groups.get(group_arn, {})
            for instance_id in instance_ids:
                target = group.get(instance_id)
                if target is not None and target.drain_until is None:
                    target.drain_until = until
            self._purge(group_arn, time.monotonic())

    def describe(self, group_arn: str, instance_ids: list[str] | None) -> list[dict[str, Any]]:
        """DescribeTargetHealth rows: every target (draining ones included) when ``instance_ids`` is
        None, else one row per named instance (``unused`` / ``Target.NotRegistered`` when absent)."""
        settings = self._settings(group_arn)
        with self._lock:
            self._purge(group_arn, time.monotonic())
            group = self._groups.get(group_arn, {})
            if instance_ids is None:
                return [health_row(t.instance_id, t.port, *t.state(settings.in_use)) for t in group.values()]
            rows = []
            for instance_id in instance_ids:
                target = group.get(instance_id)
                if target is None:
                    rows.append(health_row(instance_id, settings.port, UNUSED, "Target.NotRegistered"))
                else:
                    rows.append(health_row(instance_id, target.port, *target.state(settings.in_use)))
            return rows

    # --- for the stand-in and its traffic ------------------------------------------------------------
    def states(self, group_arn: str) -> dict[str, str]:
        """Instance id -> State of every target DescribeTargetHealth would list."""
        return {row["Target"]["Id"]: row["TargetHealth"]["State"] for row in self.describe(group_arn, None)}

    def in_service(self, group_arn: str) -> list[str]:
        """The instances the load balancer sends requests to now: the healthy targets, or (fail
        open) every registered target that is not draining when none is healthy."""
        states = self.states(group_arn)
        healthy = [i for i, state in states.items() if state == HEALTHY]
        if healthy:
            return healthy
        return [i for i, state in states.items() if state in (INITIAL, UNHEALTHY)]

    def groups_of(self, instance_id: str) -> list[str]:
        """ARNs of the groups in which the instance is a target (draining included)."""
        with self._lock:
            return [arn for arn, group in self._groups.items() if instance_id in group]

    # --- the health checks ------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(TICK):
            self.check_due(time.monotonic())

    def check_due(self, now: float) -> None:
        """Run every health check that is due (the app probe runs outside the lock)."""
        with self._lock:
            due = [
                (arn, target)
                for arn, group in self._groups.items()
                for target in group.values()
                if target.next_check <= now
            ]
            for arn in list(self._groups):
                self._purge(arn, now)
        for arn, target in due:
            settings = self._settings_of(arn)
            if settings is None or not settings.in_use:
                target.next_check = now + (settings.interval if settings else 30) * self.time_scale
                continue
            passed = self._app_answers(target.instance_id)
            with self._lock:
                target.record(passed, settings)
                target.next_check = now + settings.interval * self.time_scale

    def _settings(self, group_arn: str) -> GroupSettings:
        settings = self._settings_of(group_arn)
        if settings is None:
            raise KeyError(group_arn)
        return settings

    def _purge(self, group_arn: str, now: float) -> None:
        """Drop the targets whose deregistration delay is over (lock held)."""
        group = self._groups.get(group_arn)
        if group is None:
            return
        for instance_id in [i for i, t in group.items() if t.drain_until is not None and t.drain_until <= now]:
            del group[instance_id]
