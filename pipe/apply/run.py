"""A plan being applied: the execution state (``Execution``) and the plan it carries out, read-only.

The rollout, its phases and the followers take one ``Run``. What the plan found is read through it
(``run.settings``, ``run.release``, ``run.targeted``); only execution state is ever changed."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pipe.aws.authenticate import Identity
from pipe.config.settings import DeploySettings
from pipe.execution import Execution
from pipe.plan import DeployPlan
from pipe.plan.resolve import no_longer_targeted
from pipe.release.stage import Release
from pipe.traffic import departed

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Run(Execution):
    plan: DeployPlan

    @classmethod
    def applying(cls, plan: DeployPlan, ctx: Execution) -> Run:
        """The run that applies ``plan`` with ``ctx``'s execution state (the same outcome, stops...)."""
        return cls(
            clients=ctx.clients,
            stops=ctx.stops,
            redactor=ctx.redactor,
            outcome=ctx.outcome,
            build_log=ctx.build_log,
            left_out=ctx.left_out,
            plan=plan,
        )

    @property
    def settings(self) -> DeploySettings:
        return self.plan.settings

    @property
    def identity(self) -> Identity:
        return self.plan.identity

    @property
    def release(self) -> Release | None:
        return self.plan.release

    @property
    def targeted(self) -> list[str] | None:
        """The instances, when known before sending (None: SSM resolves TARGETS), then those that joined the
        fleet during the rollout."""
        return None if self.plan.instances is None else [*self.plan.instances, *self.outcome.joined]

    @property
    def names(self) -> dict[str, str]:
        """Name tags that label output lines."""
        return dict(self.plan.names)

    @property
    def region(self) -> str:
        return self.plan.settings.region

    @property
    def order(self) -> list[str]:
        """The targeted instances in order: each keeps its colour in every phase."""
        return [*(self.plan.instances or ()), *self.outcome.joined]

    def left_the_fleet(self, instance_ids: Sequence[str]) -> dict[str, str]:
        """Which of ``instance_ids`` left the fleet on purpose since the plan, each named once as gone and kept in
        the outcome: those the plan's scopes (an Auto Scaling group's hold) say left it, and with TARGETS resolved
        when the plan was made, those TARGETS no longer match (untagged, terminated: resolved again as the plan
        did; one stopped that they still match is still in the fleet). DeployFailed when too few are left (a
        scope's MIN_HEALTHY)."""
        if not instance_ids:
            return {}
        gone = departed(self.plan.scopes, self, instance_ids) if self.plan.scopes else {}
        rest = [i for i in instance_ids if i not in gone]
        if rest and self.settings.targets and self.plan.instances is not None:
            gone |= no_longer_targeted(self.clients, self.settings.targets, rest)
        for instance_id, how in gone.items():
            if instance_id not in self.outcome.departed:
                log.warning(f"{instance_id} is gone, {how}: not a failure of the deploy")
        self.outcome.departed.update(gone)
        return gone
