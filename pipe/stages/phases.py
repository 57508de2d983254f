"""The commands a deploy sends, as CommandSpec values, and one phase run: send, then follow.

Deploy, health check and rollback differ only in the spec: what runs, on which instances, with
which bounds. Follow-up phases (health check, rollback) try every instance whatever the others do.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from pipe.aws.console import console_url
from pipe.config.build_context import cut
from pipe.errors import DeployStopped, SendOutcomeUnknown
from pipe.limits import COMMENT_LIMIT
from pipe.model import Batch, CommandSpec, Invocation, PhaseOutcome, PhaseStatus, SentCommand, Status, command_ids
from pipe.plan import DeployPlan
from pipe.run import Run
from pipe.runtime.interruption import Interrupted
from pipe.stages.release.remote import install_body, switch_back_body
from pipe.stages.script import build_script, healthcheck_body
from pipe.stages.send import cancel_command, send_commands
from pipe.stages.watch.follow import follow

DEPLOY, HEALTH_CHECK, ROLLBACK = "deploy", "health check", "rollback"
EVERY_INSTANCE = "100%"  # MaxErrors of a follow-up phase: one instance's failure never skips another
log = logging.getLogger("ssm-deploy")


def deploy_spec(plan: DeployPlan, batch: Batch) -> CommandSpec:
    """The deploy itself: COMMANDS (or SCRIPT), or in release mode the release's install steps with
    COMMANDS inside them, at the rate MAX_CONCURRENCY / MAX_ERRORS."""
    settings = plan.settings
    body = install_body(plan.release.plan) if plan.release is not None else None
    return CommandSpec(
        label=DEPLOY,
        script=tuple(build_script(settings, body, plan.secrets)),
        instance_ids=batch.instance_ids,
        targets=batch.targets,
        execution_timeout=settings.execution_timeout,
        delivery_timeout=settings.delivery_timeout,
        max_concurrency=settings.max_concurrency,
        max_errors=settings.max_errors,
        comment=settings.comment,
        alarm=settings.rollout.alarms[0] if settings.rollout.alarms else None,
    )


def healthcheck_spec(plan: DeployPlan, instance_ids: list[str]) -> CommandSpec:
    """HEALTHCHECK_COMMANDS, retried on each instance, bounded by HEALTHCHECK_TIMEOUT; in release mode
    with the release id as SSM_DEPLOY_RELEASE."""
    settings = plan.settings
    body = healthcheck_body(settings, plan.release.plan.release_id if plan.release is not None else None)
    spec = _follow_up(plan, HEALTH_CHECK, body, instance_ids, settings.healthcheck_timeout)
    return replace(spec, alarm=settings.rollout.alarms[0] if settings.rollout.alarms else None)


def rollback_spec(plan: DeployPlan, instance_ids: list[str]) -> CommandSpec:
    """ROLLBACK_COMMANDS on the instances that received the deploy; in release mode, switching
    ``current`` back to the release that was live before on the instances that switched. Never with
    the alarm: an alarm in ALARM is what often calls for the rollback."""
    settings = plan.settings
    body = switch_back_body(plan.release.plan) if plan.release is not None else settings.rollback_commands
    return _follow_up(plan, ROLLBACK, body, instance_ids, settings.execution_timeout)


def _follow_up(plan: DeployPlan, label: str, body: str, instance_ids: list[str], timeout: int) -> CommandSpec:
    settings = plan.settings
    return CommandSpec(
        label=label,
        script=tuple(build_script(settings, body, plan.secrets)),
        instance_ids=tuple(instance_ids),
        execution_timeout=timeout,
        delivery_timeout=settings.delivery_timeout,
        max_concurrency=settings.max_concurrency,
        max_errors=EVERY_INSTANCE,
        comment=cut(f"{settings.comment} {label}", COMMENT_LIMIT),
    )


def run_phase(run: Run, spec: CommandSpec, record: PhaseOutcome) -> list[Invocation]:
    """Send ``spec`` and follow it to the end; returns the instances where it did not succeed.

    Once a stop is requested nothing new is sent: a stop before sending or while following marks the
    phase interrupted (in ``record`` and the outcome) and raises DeployStopped."""
    try:
        run.stops.raise_if_requested()
    except Interrupted as stop:
        run.outcome.interrupted = spec.label
        raise DeployStopped(f"{stop} before the {spec.label} was sent: nothing more was sent.") from None
    commands = _send(run, spec, record)
    for command in commands:
        count = f"{len(command.instance_ids)} instance(s)" if command.instance_ids else "the TARGETS"
        log.info(f"Sent command {command.command_id} to {count} [{command.comment}] by {run.identity.arn}")
        _log_console(run, command)
    try:
        invocations = follow(run, spec, commands, record)
    except DeployStopped:
        run.outcome.interrupted = spec.label
        if record.status is PhaseStatus.NOT_RUN:
            record.status = PhaseStatus.INTERRUPTED
        raise
    return [inv for inv in invocations.values() if not inv.succeeded]


def send_only(run: Run, spec: CommandSpec) -> str:
    """WAIT: 'false': send and return. A stop that arrived while sending cancels what was sent."""
    run.stops.raise_if_requested()
    record = run.outcome.deploy
    _send(run, spec, record)
    try:
        run.stops.raise_if_requested()
    except Interrupted as stop:
        run.outcome.interrupted = spec.label
        cancelled = all([cancel_command(run.clients.ssm, c.command_id) for c in record.commands])
        what = "it was cancelled" if cancelled else "cancelling it failed, so it may still be running"
        raise DeployStopped(f"{stop} while command {command_ids(record.commands)} was sent: {what}.") from None
    for command in record.commands:
        _log_console(run, command)
    return f"Sent command {command_ids(record.commands)}; not waiting for it (WAIT: 'false')."


def _send(run: Run, spec: CommandSpec, record: PhaseOutcome) -> list[SentCommand]:
    try:
        commands = send_commands(run.clients.ssm, run.settings, spec, run.stops.raise_if_requested)
    except SendOutcomeUnknown:
        if run.outcome.status is Status.NOT_SENT:  # a command may be running: never report "not sent"
            run.outcome.status = Status.RUNNING
        raise
    record.commands += commands
    if run.outcome.status is Status.NOT_SENT:
        run.outcome.status = Status.RUNNING
    return commands


def _log_console(run: Run, command: SentCommand) -> None:
    url = console_url(run.region, command.command_id)
    if url:  # none in a partition whose console has no public address
        log.info(f"Console: {url}")
