"""What the deploy is about to do, in words: the opening lines of every run, the plan before it is
applied, and the dry run."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pipe.config.parsers import former_separator_hints
from pipe.config.rollout import LARGEST, count_of
from pipe.config.settings import DeploySettings
from pipe.plan import DeployPlan
from pipe.plan.batches import switching_back
from pipe.plan.commands import rolls_release, stages
from pipe.release.stage import install_lines, release_lines

SHOWN_IDS = 10  # instance ids named in the opening line; the dry run names them all
SHOWN_SIZES = 8  # batch sizes named in the rollout line when they differ
SHOWN_COMMAND_LINES = 20  # of COMMANDS (or SCRIPT) in the dry run; DEBUG prints the whole script
log = logging.getLogger("ssm-deploy")


def announce(settings: DeploySettings) -> None:
    """Who deploys what, where, and how fast: the first lines of the build log."""
    build = settings.build
    log.info(
        f"Deploy {build.repo} build #{build.build_number}"
        + (f" commit {build.short_commit}" if build.short_commit else "")
        + (f" ({build.branch})" if build.branch else "")
        + (f" triggered by {build.triggerer}" if build.triggerer else "")
    )
    log.info(
        f"Environment: {settings.environment or '(none)'}; region {settings.region}; {where(settings, None, SHOWN_IDS)}"
    )
    if settings.secrets:
        names = ", ".join(f"{ref.env_name} <- {ref.parameter}" for ref in settings.secrets)
        log.info(f"Secrets read on the instances: {names}")
    if settings.rollout.ignored:
        log.info(
            f"{', '.join(settings.rollout.ignored)}: only used behind a load balancer (TARGET_GROUPS), ignored here"
        )
    for hint in former_separator_hints(settings.variables):
        log.warning(hint)


def show(plan: DeployPlan, script: Sequence[str]) -> None:
    """The plan in the log before it is applied: the rollout and the release (a dry run then shows
    all of it, ``dry_run``); with DEBUG, the script the instances run."""
    if not plan.settings.dry_run:
        log.info("\n".join((f"Rollout: {rollout(plan)}", *staging_lines(plan), *plan.lines)))
    if plan.release is not None:
        for line in release_lines(plan.release):
            log.info(line)
    sent = "the deploy would send" if plan.settings.dry_run else "sent to the instances"
    log.debug(f"Script {sent} (secrets appear as parameter names only):\n" + "\n".join(script))


def dry_run(plan: DeployPlan, script: Sequence[str], lock: Sequence[str]) -> None:
    """What would be sent, and nothing sent; ``lock``: what a deploy would find of LOCK. The script
    itself is in the log with DEBUG only (``show``): here, its size and the user's COMMANDS."""
    settings = plan.settings
    document = settings.document_name + (f" version {settings.document_version}" if settings.document_version else "")
    targeted = None if plan.instances is None else list(plan.instances)
    lines = [
        "Dry run: nothing is sent. The plan:",
        f"  role:      {plan.identity.arn}",
        f"  targets:   {where(settings, targeted, None)}",
        f"  document:  {document}",
        f"  rollout:   {rollout(plan)}",
        *staging_lines(plan),
        f"  timeouts:  delivery {settings.delivery_timeout} s, execution {settings.execution_timeout} s",
        f"  comment:   {settings.comment}",
        f"  script:    {len(script)} lines, generated" + ("" if settings.debug else " (DEBUG: 'true' prints it)"),
        *_commands(settings.commands),
        *lock,
        *(f"  skipped:   {text} (SKIP_STOPPED)" for text in plan.skipped.values()),
        *plan.lines,
        *install_lines(plan.release, stages(plan)),
    ]
    if settings.healthcheck_commands:
        lines.append(
            f"  then a health check ({settings.healthcheck_retries} attempt(s), {settings.healthcheck_interval} s "
            "apart):"
        )
        lines += [f"    {line}" for line in settings.healthcheck_commands.split("\n")]
    if settings.rollback_commands:
        lines.append("  on failure, a rollback on the instances that received the deploy:")
        lines += [f"    {line}" for line in settings.rollback_commands.split("\n")]
    log.info("\n".join(lines))


def staging_lines(plan: DeployPlan) -> list[str]:
    """The staging phase of a rolling release deploy, before its first batch, and how the rollout goes
    back (ROLLBACK_BATCH_SIZE); [] without either."""
    return _stage_lines(plan) + _going_back_lines(plan)


def _going_back_lines(plan: DeployPlan) -> list[str]:
    size = plan.settings.rollout.rollback_batch_size
    if size is None or not plan.settings.rollout.pipe_driven:
        return []
    shown = "the largest batches MIN_HEALTHY allows" if size == LARGEST else f"{size} of the instances per batch"
    lines = [
        f"  going back: ROLLBACK_BATCH_SIZE {size}: a rollback switches the batches deployed before a failed one "
        f"back {shown} (whole batches joined), more instances out of service at once"
    ]
    release = plan.settings.release
    if release is not None and release.release is not None:
        if switching_back(plan.settings) is not None:
            lines.append(f"             this RELEASE deploy too: {shown}, each batch only a switch after staging")
        else:
            lines.append(
                "             not this RELEASE deploy's batches: without staging (STAGE_FIRST: 'false') each batch "
                "installs in its window"
            )
    return lines


def _stage_lines(plan: DeployPlan) -> list[str]:
    if plan.release is None or not rolls_release(plan):
        return []
    if not stages(plan):
        return [
            "  staging:   off (STAGE_FIRST: 'false'): each batch downloads, verifies, unpacks and runs COMMANDS while "
            "it is out of service"
        ]
    release, count = plan.release.plan, len(plan.instances or ())
    commands = ", run COMMANDS" if release.commands else ""
    return [
        f"  staging:   first, release {release.release_id} on all {count} instance(s) while they serve, "
        f"{plan.settings.max_concurrency} at a time: download, verify, unpack{commands} into "
        f"{release.app_dir}/releases/{release.release_id}; a failure on any stops the deploy before anything is "
        "drained or switched",
        "             then each batch: drained, its staged copy checked, switched, activated, health-checked, "
        "back in service",
    ]


def where(settings: DeploySettings, targeted: list[str] | None, limit: int | None) -> str:
    """``TARGETS tag:Env=prod (3 instance(s) now: ...)`` or ``2 instance(s): i-1, i-2``."""
    if settings.targets:
        text = "TARGETS " + "; ".join(map(str, settings.targets))
        return text + (f" ({len(targeted)} instance(s) now: {', '.join(targeted)})" if targeted is not None else "")
    ids = settings.instance_ids
    shown = ids if limit is None else ids[:limit]
    return f"{len(ids)} instance(s): {', '.join(shown)}" + (", ..." if len(shown) < len(ids) else "")


def rollout(plan: DeployPlan) -> str:
    """How the plan's batches go out: one command SSM paces with MAX_CONCURRENCY and MAX_ERRORS, or
    the pipe's batches, one command each (within a batch, SSM's pace only where it holds it back)."""
    settings, batches = plan.settings, plan.batches
    if not batches:
        return "no batch: no instance to deploy"
    pace = f"{settings.max_concurrency} at a time, stop after {settings.max_errors} error(s)"
    if not settings.rollout.pipe_driven:
        count = "the TARGETS" if batches[0].targets else _instances(len(batches[0].instance_ids))
        return f"one command to {count}, {pace}"
    sizes = [len(batch.instance_ids) for batch in batches]
    largest = max(sizes)
    shown = (
        str(largest)
        if len(set(sizes)) == 1
        else ", ".join(map(str, sizes[:SHOWN_SIZES])) + (", ..." if len(sizes) > SHOWN_SIZES else "")
    )
    text = f"{_count(len(batches), 'batch', 'batches')} of {shown} {'instance' if largest == 1 else 'instances'}"
    text += ", one after another"
    if count_of(settings.max_concurrency, largest) < largest:
        text += f"; within a batch {pace}"
    return text


def _commands(commands: str) -> list[str]:
    """The user's COMMANDS (or SCRIPT) as given, the part of the script a reader checks: its first
    SHOWN_COMMAND_LINES lines."""
    if not commands:
        return []
    lines = commands.split("\n")
    more = len(lines) - SHOWN_COMMAND_LINES
    return [
        "  commands:",
        *(f"    {line}" for line in lines[:SHOWN_COMMAND_LINES]),
        *([f"    ... {more} more line(s)"] if more > 0 else []),
    ]


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def _instances(number: int) -> str:
    return _count(number, "instance", "instances")
