"""The commands a plan sends, as CommandSpec values: the staging of a release, the deploy, the health
check, the rollback, and the read of ``current``. Deploy, health check and rollback differ only in
the spec: what runs, on which instances, with which bounds.

The plan step (``plan/build.py``) checks here that every script it may send fits in one SendCommand,
so a health check or rollback too big to send is refused before anything is sent, not found after a
switch; the apply step (``apply/phases.py``) sends them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from pipe.config.build_context import cut
from pipe.config.settings import DeploySettings
from pipe.errors import NothingSent
from pipe.limits import COMMENT_LIMIT, MAX_SCRIPT_BYTES
from pipe.model import Batch, CommandSpec, Target
from pipe.plan import DeployPlan
from pipe.plan.script import build_script, command_lines, header_line, healthcheck_body, script_bytes
from pipe.release.remote import (
    READ_LOCK_SECONDS,
    install_body,
    read_current_body,
    stage_body,
    switch_back_body,
    verified_after,
)

STAGE, DEPLOY, HEALTH_CHECK, ROLLBACK, READ = "stage", "deploy", "health check", "rollback", "read"
EVERY_INSTANCE = "100%"  # MaxErrors of a follow-up phase: one instance's failure never skips another
# The read of `current`: SendCommand's shortest delivery timeout (an instance that does not take the
# command soon is not answering), and the time to wait for a release script still running there
READ_DELIVERY_TIMEOUT = 30
READ_EXECUTION_TIMEOUT = READ_LOCK_SECONDS + 30


def stages(plan: DeployPlan) -> bool:
    """Whether the plan stages its release on every instance before the first batch: release mode, in a
    rollout the pipe drives batch by batch (one command SSM paces has no batch to stage ahead of),
    unless STAGE_FIRST is off."""
    return rolls_release(plan) and plan.settings.release is not None and plan.settings.release.stage_first


def rolls_release(plan: DeployPlan) -> bool:
    """A release rolled out batch by batch by the pipe: where staging can come first (STAGE_FIRST)."""
    return plan.release is not None and plan.settings.rollout.pipe_driven and bool(plan.instances)


def stage_spec(plan: DeployPlan) -> CommandSpec:
    """Staging: every targeted instance prepares the release (download, verify, unpack, COMMANDS) while
    it still serves the live one, MAX_CONCURRENCY at a time; every instance tries (one failure stops
    the deploy after this phase, nothing drained or switched). No alarm: nothing changes what serves."""
    settings, release = plan.settings, plan.release_plan
    assert release is not None and plan.instances  # stages(plan)
    return CommandSpec(
        label=STAGE,
        script=tuple(build_script(settings, stage_body(release, plan.run_id), plan.secrets)),
        instance_ids=plan.instances,
        execution_timeout=settings.execution_timeout,
        delivery_timeout=settings.delivery_timeout,
        max_concurrency=settings.max_concurrency,
        max_errors=EVERY_INSTANCE,
        comment=cut(f"{settings.comment} {STAGE}", COMMENT_LIMIT),
    )


def deploy_spec(plan: DeployPlan, batch: Batch) -> CommandSpec:
    """The deploy itself: COMMANDS (or SCRIPT), or in release mode the release's install steps with
    COMMANDS inside them, at the rate MAX_CONCURRENCY / MAX_ERRORS. After staging, the install
    compares the staged copy before its switch (and stages where it was not staged)."""
    settings, release = plan.settings, plan.release_plan
    body = install_body(release, stages(plan), plan.run_id) if release is not None else None
    return CommandSpec(
        label=DEPLOY,
        switches_in=release.app_dir if release is not None else "",
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
    with the release id as SSM_DEPLOY_RELEASE and, once the check passed, VERIFY_PROCESSES again: a
    process that went stale since the activation fails the instance with exit 90."""
    settings, release = plan.settings, plan.release_plan
    body = healthcheck_body(settings, release.release_id if release is not None else None)
    if release is not None:
        body = verified_after(body, release)
    spec = _follow_up(plan, HEALTH_CHECK, body, instance_ids, settings.healthcheck_timeout)
    return replace(spec, alarm=settings.rollout.alarms[0] if settings.rollout.alarms else None)


def rollback_spec(plan: DeployPlan, instance_ids: list[str], back_to: str = "") -> CommandSpec:
    """ROLLBACK_COMMANDS on the instances that received the deploy; in release mode, switching
    ``current`` to the release that was live before (``back_to``: the one these instances ran before, where
    the release ledger names none). Never with the alarm: an alarm in ALARM is what often calls for the
    rollback."""
    settings = plan.settings
    if plan.release is None:
        return _follow_up(plan, ROLLBACK, settings.rollback_commands, instance_ids, settings.execution_timeout)
    release = plan.release.plan
    body = switch_back_body(release, back_to or plan.release.live_before)
    spec = _follow_up(plan, ROLLBACK, body, instance_ids, settings.execution_timeout)
    return replace(spec, switches_in=release.app_dir)


def read_spec(
    settings: DeploySettings,
    app_dir: str,
    instance_ids: list[str],
    targets: tuple[Target, ...] = (),
    processes: bool = False,
) -> CommandSpec:
    """Read where ``APP_DIR/current`` points on ``instance_ids`` (or on what ``targets`` match, SSM resolving
    them; with ``processes``, ACTION: status: and which processes run from another release); changes
    nothing, reads no SECRETS (no prelude), and runs even once the pipeline was stopped."""
    script = (header_line(settings.build), *command_lines(read_current_body(app_dir, processes)))
    return CommandSpec(
        label=READ,
        script=script,
        instance_ids=tuple(instance_ids),
        targets=() if instance_ids else targets,
        execution_timeout=READ_EXECUTION_TIMEOUT,
        delivery_timeout=READ_DELIVERY_TIMEOUT,
        max_concurrency=EVERY_INSTANCE,
        max_errors=EVERY_INSTANCE,
        comment=cut(f"{settings.comment} {READ}", COMMENT_LIMIT),
        stoppable=False,
    )


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


def refuse_scripts_too_big(plan: DeployPlan) -> None:
    """NothingSent when a script ``plan`` may send is over MAX_SCRIPT_BYTES, naming the variable to
    shrink: the deploy (COMMANDS, in release mode with ACTIVATE_COMMANDS and the release steps, and
    with every name PARAMETERS_PATH exports), the health check and the rollback."""
    for subject, problem, spec in _sendable(plan):
        size = script_bytes(spec.script)
        if size > MAX_SCRIPT_BYTES:
            raise NothingSent(
                subject,
                f"{problem} a script of {size:,} bytes; at most {MAX_SCRIPT_BYTES:,} can be sent",
                "put the steps in a script inside the artifact (or on the instances) and run that",
            )


def _sendable(plan: DeployPlan) -> Iterator[tuple[str, str, CommandSpec]]:
    settings, release = plan.settings, plan.release_plan
    if stages(plan):
        yield "COMMANDS", "with the release's staging steps they make", stage_spec(plan)
    if plan.batches:
        made = "with ACTIVATE_COMMANDS and the release steps they make" if release is not None else "they make"
        yield "COMMANDS", made, deploy_spec(plan, plan.batches[0])
    if settings.healthcheck_commands:
        made = "with the release's process check they make" if release is not None else "retried, they make"
        yield "HEALTHCHECK_COMMANDS", made, healthcheck_spec(plan, [])
    if plan.release is not None and plan.release.live_before:
        again = "run again after the switch back to the release before, they make"
        yield "ACTIVATE_COMMANDS", again, rollback_spec(plan, [])
    elif plan.release is None and settings.rollback_commands:
        yield "ROLLBACK_COMMANDS", "they make", rollback_spec(plan, [])
