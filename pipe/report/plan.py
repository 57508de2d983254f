"""What the deploy is about to do, in words: the opening lines of every run, the plan before it is
applied, and the dry run."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pipe.config.parsers import former_separator_hints
from pipe.config.settings import DeploySettings
from pipe.plan import DeployPlan
from pipe.stages.release.stage import install_lines, release_lines

SHOWN_IDS = 10  # instance ids named in the opening line; the dry run names them all
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
        f"Environment: {settings.environment or '(none)'}; region {settings.region}; "
        f"{where(settings, None, SHOWN_IDS)}; {rollout(settings)}"
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
    all of it, ``dry_run``)."""
    if plan.lines and not plan.settings.dry_run:
        log.info("Rollout plan:\n" + "\n".join(plan.lines))
    if plan.release is not None:
        for line in release_lines(plan.release):
            log.info(line)
    log.debug("Script sent to the instances (secrets appear as parameter names only):\n" + "\n".join(script))


def dry_run(plan: DeployPlan, script: Sequence[str], lock: Sequence[str]) -> None:
    """Everything that would be sent, and nothing sent; ``lock``: what a deploy would find of LOCK."""
    settings = plan.settings
    document = settings.document_name + (f" version {settings.document_version}" if settings.document_version else "")
    targeted = None if plan.instances is None else list(plan.instances)
    lines = [
        "Dry run: nothing is sent. The plan:",
        f"  role:      {plan.identity.arn}",
        f"  targets:   {where(settings, targeted, None)}",
        f"  document:  {document}",
        f"  rollout:   {rollout(settings)}",
        f"  timeouts:  delivery {settings.delivery_timeout} s, execution {settings.execution_timeout} s",
        f"  comment:   {settings.comment}",
        "  script (secrets appear as parameter names only):",
        *(f"    {line}" for line in script),
        *lock,
        *plan.lines,
        *install_lines(plan.release),
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


def where(settings: DeploySettings, targeted: list[str] | None, limit: int | None) -> str:
    """``TARGETS tag:Env=prod (3 instance(s) now: ...)`` or ``2 instance(s): i-1, i-2``."""
    if settings.targets:
        text = "TARGETS " + "; ".join(map(str, settings.targets))
        return text + (f" ({len(targeted)} instance(s) now: {', '.join(targeted)})" if targeted is not None else "")
    ids = settings.instance_ids
    shown = ids if limit is None else ids[:limit]
    return f"{len(ids)} instance(s): {', '.join(shown)}" + (", ..." if len(shown) < len(ids) else "")


def rollout(settings: DeploySettings) -> str:
    return f"{settings.max_concurrency} at a time, stop after {settings.max_errors} error(s)"
