"""Building the plan: every read the deploy needs, and every refusal, before anything is sent.

Each stage returns what it found; none changes shared state. The reads add the secret values they
see to the masking (the execution's ``Redactor``) and honour a stop between them, nothing more."""

from __future__ import annotations

import logging

from pipe.aws.authenticate import Identity
from pipe.config.settings import DeploySettings
from pipe.execution import Execution
from pipe.plan import DeployPlan
from pipe.plan.batches import plan_batches
from pipe.plan.bounds import Bounds
from pipe.plan.commands import refuse_scripts_too_big
from pipe.plan.pinned import pinned
from pipe.plan.preflight import preflight
from pipe.plan.resolve import label_instances, resolve, resolve_parameters, stopped_targets
from pipe.plan.rollout import prepare_rollout
from pipe.plan.stopped import judge_stopped
from pipe.release.sources import release_source
from pipe.release.stage import plan_release
from pipe.traffic.auto_scaling.new_instances import plan_new_instances
from pipe.traffic.auto_scaling.plan import deployable

log = logging.getLogger("ssm-deploy")


def build_plan(
    settings: DeploySettings, identity: Identity, bounds: Bounds, ctx: Execution, clone_dir: str
) -> DeployPlan:
    """The plan of a deploy with ``settings`` by ``identity``: the instances (TARGETS resolved, agents
    online), the secrets (SECRETS and PARAMETERS_PATH, each readable), the batches and the hook around
    each (the load balancer's, MIN_HEALTHY checked), and in release mode the release (ARTIFACT from
    ``clone_dir``, or RELEASE from the ledger). Raises NothingSent (or PipeError) when the deploy
    cannot work; nothing is sent, uploaded or changed."""
    clients, role = ctx.clients, identity.arn
    instances = deployable(settings, clients, resolve(settings, clients))  # Pending, Terminating...: left out
    stopped = stopped_targets(clients, settings.targets) if settings.targets and instances is not None else {}
    pins = preflight(settings, instances, role, ctx)
    secrets = (*pinned(settings.secrets, pins), *resolve_parameters(settings, clients.ssm, ctx.redactor, role))
    if secrets:
        listed = ", ".join(f"{ref.env_name} <- {ref.parameter}" for ref in secrets)
        log.info(f"Every instance reads the secrets at the version read now, whatever changes later: {listed}")
    names = label_instances(clients.ec2, instances)
    by_id = bool(stopped) and settings.skip_stopped  # SSM must not hold a command for the stopped ones
    rollout = prepare_rollout(settings, clients, plan_batches(settings, instances, by_id=by_id))
    release = None
    if settings.release is not None:
        source = release_source(settings.release, settings.build, clone_dir)
        release = plan_release(settings, secrets, clients, source)
    skipped = judge_stopped(settings, stopped, release)  # refused, unless SKIP_STOPPED leaves them out
    new_instances = plan_new_instances(settings, clients, rollout.scopes, release, secrets)  # the launch hooks read
    plan = DeployPlan(
        settings=settings,
        identity=identity,
        bounds=bounds,
        instances=None if instances is None else tuple(instances),
        batches=tuple(rollout.batches),
        secrets=secrets,
        names=names,
        release=release,
        skipped=skipped,
        traffic=tuple(rollout.traffic),
        scopes=tuple(rollout.scopes),
        lines=tuple(rollout.lines),
        new_instances=new_instances,
    )
    refuse_scripts_too_big(plan)
    return plan
