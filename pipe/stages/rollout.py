"""The rollout: batch after batch, deploy then health check; on failure, the rollback.

Each batch runs inside a hook (a context manager): that is where taking the batch out of a load
balancer and putting it back, or switching a release, plugs in. The hook's exit runs on every path,
a failure or a stop included. Today the plan is one batch: SSM's MaxConcurrency paces it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from pipe.errors import DeployFailed, DeployStopped
from pipe.model import Batch, Invocation, PhaseStatus, command_ids
from pipe.run import Run
from pipe.stages.phases import deploy_spec, healthcheck_spec, rollback_spec, run_phase

BatchHook = Callable[[Run, Batch], AbstractContextManager[None]]
LISTED = 20  # instances named in a message; the summary table has them all
log = logging.getLogger("ssm-deploy")


@contextmanager
def no_hook(run: Run, batch: Batch) -> Iterator[None]:
    yield


def plan_batches(run: Run) -> list[Batch]:
    """One batch of every targeted instance (or of the TARGETS, which SSM resolves)."""
    settings = run.settings
    if settings.targets:
        return [Batch(1, 1, targets=tuple(settings.targets))]
    return [Batch(1, 1, instance_ids=tuple(settings.instance_ids))]


def roll_out(run: Run, batches: list[Batch], hook: BatchHook = no_hook) -> str:
    """Deploy every batch; return the success message or raise DeployFailed (rolled back if asked)."""
    failure: DeployFailed | None = None
    for batch in batches:
        if len(batches) > 1:
            log.info(f"---- {batch} ----")
        with hook(run, batch):
            failure = _deploy_batch(run, batch)
        if failure is not None:
            break
    if failure is not None:
        if run.settings.rollback_commands or run.release is not None:
            failure = _roll_back(run, failure)
        raise failure
    deployed = len(run.outcome.deploy.invocations)
    checked = " and passed the health check" if run.settings.healthcheck_commands else ""
    return f"Deployed to {deployed} instance(s){checked}."


def _deploy_batch(run: Run, batch: Batch) -> DeployFailed | None:
    outcome = run.outcome.deploy
    plan = run.release.plan if run.release is not None else None
    failed = run_phase(run, deploy_spec(run.settings, batch, plan), outcome)
    invocations = outcome.invocations
    if failed:
        return DeployFailed(_failure_message(failed, len(invocations), command_ids(outcome.commands)))
    if not invocations:
        return DeployFailed(
            f"TARGETS matched no managed instance: nothing ran. Command id: {command_ids(outcome.commands)}."
        )
    if run.settings.healthcheck_commands:
        instance_ids = [i for i in batch.instance_ids or list(invocations)]
        return _health_check(run, instance_ids)
    return None


def _health_check(run: Run, instance_ids: list[str]) -> DeployFailed | None:
    settings, record = run.settings, run.outcome.health_check
    log.info(
        f"---- Health check on {len(instance_ids)} instance(s): up to {settings.healthcheck_retries} "
        f"attempt(s), {settings.healthcheck_interval} s apart ----"
    )
    unhealthy = run_phase(run, healthcheck_spec(settings, instance_ids), record)
    record.status = PhaseStatus.FAILED if unhealthy else PhaseStatus.PASSED
    if not unhealthy:
        log.info(f"Health check passed on all {len(instance_ids)} instance(s)")
        return None
    return DeployFailed(
        f"The deploy ran, but the health check failed on {len(unhealthy)} of {len(instance_ids)} instance(s): "
        f"{listed(unhealthy)}. Command id: {command_ids(record.commands)}."
    )


def _roll_back(run: Run, failure: DeployFailed) -> DeployFailed:
    """ROLLBACK_COMMANDS on every instance that received the deploy, in every batch so far; in release
    mode, the switch back on every instance that switched (one whose activation failed went back
    by itself)."""
    record, plan = run.outcome.rollback, run.release.plan if run.release is not None else None
    deployed = run.outcome.deploy.invocations.items()
    received = [i for i, inv in deployed if (inv.succeeded if plan is not None else inv.received_deploy)]
    if not received:
        record.status = PhaseStatus.NOT_NEEDED
        nothing = "no instance switched to the new release" if plan is not None else "no instance received the deploy"
        return DeployFailed(f"{failure} Nothing was rolled back: {nothing}.")
    log.error(f"{failure}")
    if plan is not None:
        log.info(f"---- Switching {len(received)} instance(s) back to the release that was live before ----")
    else:
        log.info(f"---- Rollback on the {len(received)} instance(s) that received the deploy ----")
    try:
        broken = run_phase(run, rollback_spec(run.settings, received, plan), record)
    except DeployStopped as stopped:
        raise DeployStopped(f"{failure} The rollback did not finish: {stopped}") from None
    record.status = PhaseStatus.FAILED if broken else PhaseStatus.SUCCEEDED
    if not broken:
        return DeployFailed(f"{failure} Rollback succeeded on all {len(received)} instance(s).")
    return DeployFailed(
        f"{failure} ROLLBACK FAILED on {len(broken)} of {len(received)} instance(s): {listed(broken)}; "
        f"they need attention. Rollback command id: {command_ids(record.commands)}."
    )


def _failure_message(failed: list[Invocation], total: int, commands: str) -> str:
    skipped = [inv for inv in failed if inv.skipped]
    broken = [inv for inv in failed if not inv.skipped]
    message = f"Deploy failed on {len(broken)} of {total} instance(s): {listed(broken)}."
    if skipped:
        names = ", ".join(inv.instance_id for inv in skipped[:LISTED]) + (" ..." if len(skipped) > LISTED else "")
        message += (
            f" The rollout stopped at MAX_ERRORS: {len(skipped)} instance(s) were skipped and still run the old "
            f"version: {names}."
        )
    return message + f" Command id: {commands}."


def listed(invocations: list[Invocation], limit: int = LISTED) -> str:
    """``i-1: Failed (exit 3); i-2: ...``, at most ``limit`` of them."""
    shown = "; ".join(f"{inv.instance_id}: {inv.describe()}" for inv in invocations[:limit])
    if len(invocations) > limit:
        shown += f"; and {len(invocations) - limit} more (see the summary)"
    return shown
