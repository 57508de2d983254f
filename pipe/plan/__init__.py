"""The plan: everything one deploy will do, read and checked before anything is sent or changed.

``build_plan`` (``plan/build.py``) makes it with read-only calls; every refusal happens there. The
dry run prints it and stops; otherwise ``apply`` (``pipe/apply/__init__.py``) carries it out, and the sinks
(``report/sinks.py``) read it next to the outcome. It is frozen: no stage changes it afterwards, and
the validated settings in it are the ones every stage sees."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipe.aws.authenticate import Identity
from pipe.config.settings import DeploySettings
from pipe.model import Batch, SecretRef
from pipe.plan.bounds import Bounds
from pipe.release.remote import ReleasePlan
from pipe.release.stage import Release
from pipe.traffic import BatchHook, RolloutScope, TrafficManager, around_each

if TYPE_CHECKING:  # new_instances renders its script with plan/script.py, which loads this package first
    from pipe.traffic.auto_scaling.new_instances import NewInstances


@dataclass(frozen=True)
class DeployPlan:
    settings: DeploySettings  # as validated; never replaced
    identity: Identity  # who deploys: the deploy role's session
    bounds: Bounds
    instances: tuple[str, ...] | None  # the targeted instances, in order; None: SSM resolves TARGETS when sending
    batches: tuple[Batch, ...]
    secrets: tuple[SecretRef, ...] = ()  # SECRETS, then PARAMETERS_PATH's parameters: each one checked readable
    names: Mapping[str, str] = field(default_factory=dict)  # Name tags that label output lines
    # with TARGETS and SKIP_STOPPED: {instance id: what it is} of each stopped one they match, left out
    skipped: Mapping[str, str] = field(default_factory=dict)
    release: Release | None = None  # release mode: what goes live instead of what, and the ledger that records it
    traffic: tuple[TrafficManager, ...] = ()  # around each batch (pipe/traffic/): the load balancer's, or none
    scopes: tuple[RolloutScope, ...] = ()  # around the whole rollout (pipe/traffic/): an Auto Scaling group's hold
    lines: tuple[str, ...] = ()  # the rollout in words: batches, alarms, target groups and bounds
    # release mode with Auto Scaling groups: what new instances of the groups install once the deploy succeeded
    new_instances: NewInstances | None = None
    # this pipe run's: the release install and staging carry it, and an instance refuses to run either twice
    # for one run (the SSM Agent starts a command a reboot cut short again: release/remote.py ssm_deploy_once)
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def release_plan(self) -> ReleasePlan | None:
        """Release mode: what each instance follows to install and switch; None in command mode."""
        return self.release.plan if self.release is not None else None

    @property
    def hook(self) -> BatchHook:
        """Around each batch of the rollout: every traffic manager's way out of service and back."""
        return around_each(self.traffic)
