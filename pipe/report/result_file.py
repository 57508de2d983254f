"""The deploy's result for later steps (e.g. a notification): JSON, a dotenv twin, and Bitbucket's
shared variables.

The ``instances`` rows describe the deploy command itself; the health check and the rollback each
get a section of their own, so a deploy that failed and was rolled back still reports its failures.
The counts and the failed instances are over the whole deploy: an instance that failed its health
check, or whose rollback failed, is a failed instance. ``summary`` says it all in a few sentences a
notifier can print as they are.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pipe.aws.console import console_url
from pipe.config.settings import DeploySettings
from pipe.config.variables import ENV_SUFFIX
from pipe.model import OUTSIDE_COMMANDS, DeployOutcome, Invocation, PhaseOutcome, PhaseStatus, Status
from pipe.report.durations import format_duration, format_seconds
from pipe.report.instances import named

STOPPED = "stopped"  # the verdict's words for a stop outside any command
SHARED_VARIABLES = "BITBUCKET_PIPELINES_VARIABLES_PATH"  # Bitbucket's variable sharing between steps
log = logging.getLogger("ssm-deploy")

if TYPE_CHECKING:
    from pipe.release.stage import Release


def write_result(
    settings: DeploySettings, outcome: DeployOutcome, env: dict[str, str] | None = None, release: Release | None = None
) -> None:
    """Write ``RESULT_FILE`` (JSON) and its ``.env`` twin, and append the ``SSM_DEPLOY_*`` values to
    Bitbucket's shared variables when the step has them (``env``); a failure to write only warns."""
    content, variables = result_values(settings, outcome, release)
    write_files(settings, content, variables)
    append_shared_variables(variables, env)


def result_values(
    settings: DeploySettings, outcome: DeployOutcome, release: Release | None = None
) -> tuple[dict[str, object], dict[str, str]]:
    """The result as RESULT_FILE's JSON, and as ``SSM_DEPLOY_*`` variables."""
    seconds = outcome.seconds()
    variables = dotenv(settings, outcome, release, seconds) | _release_variables(release)
    content = document(settings, outcome, release, seconds) | _release_document(release)
    return content, variables


def write_files(settings: DeploySettings, content: dict[str, object], variables: dict[str, str]) -> None:
    """``content`` as RESULT_FILE's JSON and ``variables`` as its ``.env`` twin; a failure to write
    only warns."""
    path = Path(settings.result_file)
    twin = path.with_name(path.name + ENV_SUFFIX)
    written = _write(path, json.dumps(content, indent=2) + "\n", "RESULT_FILE")
    written = written and _write(
        twin, "".join(f"{k}={_dotenv_quote(v)}\n" for k, v in variables.items()), "RESULT_FILE"
    )
    if written:
        log.info(f"Result written to {path} and {twin}")


def append_shared_variables(variables: dict[str, str], env: Mapping[str, str] | None) -> None:
    """Append ``variables`` as KEY=VALUE lines to Bitbucket's shared variables file when the step has
    one (a later step lists the names in ``output-variables``); a failure to write only warns."""
    shared = (env if env is not None else os.environ).get(SHARED_VARIABLES, "").strip()
    if shared:
        lines = "".join(f"{key}={_one_line(value)}\n" for key, value in variables.items())
        _write(Path(shared), lines, SHARED_VARIABLES, append=True)


def failed_instances(outcome: DeployOutcome) -> dict[str, list[str]]:
    """Every instance that did not succeed in some phase, with those phases in order: the staging, the
    deploy, the health check, the rollback. One that left the fleet (``departed``) is no failure."""
    phases = (
        ("stage", outcome.stage),
        ("deploy", outcome.deploy),
        ("health check", outcome.health_check),
        ("rollback", outcome.rollback),
    )
    failed: dict[str, list[str]] = {}
    for name, phase in phases:
        for invocation in phase.failed:
            if invocation.instance_id in outcome.departed:
                continue
            failed.setdefault(invocation.instance_id, []).append(name)
    return failed


def _counts(outcome: DeployOutcome) -> tuple[list[str], dict[str, list[str]], int]:
    """The deploy's command ids, the failed instances (any phase) and how many succeeded in every phase (one
    that left the fleet is neither)."""
    failed = failed_instances(outcome)
    counted = [i for i in outcome.deploy.invocations if i not in failed and i not in outcome.departed]
    succeeded = len(counted)
    return [command.command_id for command in outcome.deploy.commands], failed, succeeded


def failed_phase(outcome: DeployOutcome) -> str:
    """The phase whose failure decided the verdict ("deploy", "health check", ...), the one a stop cut
    short, or "" when nothing failed."""
    if outcome.status in (Status.SUCCEEDED, Status.DRY_RUN, Status.SENT):
        return ""
    if outcome.failed_phase:
        return outcome.failed_phase
    if outcome.interrupted:
        return outcome.interrupted
    return "before sending" if outcome.status is Status.NOT_SENT and outcome.message else ""


def rollback_note(outcome: DeployOutcome) -> str:
    """What the verdict's phase leaves out when the switch back did not end well: ``; the rollback failed``
    (an instance may still serve the new release) or ``; stopped during the rollback``; "" otherwise."""
    if failed_phase(outcome) == "rollback":
        return ""
    if outcome.rollback.status is PhaseStatus.FAILED:
        return "; the rollback failed"
    if outcome.rollback.status is PhaseStatus.INTERRUPTED:
        return "; stopped during the rollback"
    return ""


def verdict_words(outcome: DeployOutcome) -> str:
    """The verdict in words, for the summary's first line and Code Insights: ``failed in the health check``,
    ``stopped in the bake`` (the pipeline stopped outside any command with no failure before it: not a failure
    of that phase, such as an alarm during the bake), with :func:`rollback_note`."""
    phase = failed_phase(outcome) if outcome.status is not Status.NOT_SENT else ""
    stopped = not outcome.failed_phase and outcome.interrupted in OUTSIDE_COMMANDS
    head = STOPPED if stopped else outcome.status.value
    return head + (f" in the {phase}" if phase else "") + rollback_note(outcome)


def summary(
    settings: DeploySettings, outcome: DeployOutcome, release: Release | None = None, seconds: float = 0.0
) -> str:
    """A few sentences a notifier can print as they are: the verdict, the phase that failed, how
    long it took, the release and the one before it, the failed instances, and the final message."""
    where = ", ".join(part for part in (settings.environment, f"build {settings.build.build_number}") if part)
    head, _, rest = verdict_words(outcome).partition(" in the ")
    verdict = head.upper() + (f" in the {rest}" if rest else "")
    lines = [f"ssm-deploy: {verdict} after {format_seconds(seconds)} ({where})."]
    if release is not None:
        before = release.live_before or "none"
        lines.append(f"Release {release.plan.release_id} (previous: {before}).")
    failed = failed_instances(outcome)
    if failed:
        shown = [f"{instance_id} ({', '.join(phases)})" for instance_id, phases in failed.items()]
        lines.append(f"Failed instances: {named(shown)}.")
    if outcome.message:
        lines.append(outcome.message)
    return "\n".join(lines)


def document(
    settings: DeploySettings, outcome: DeployOutcome, release: Release | None = None, seconds: float = 0.0
) -> dict[str, object]:
    command_ids, failed, succeeded = _counts(outcome)
    return {
        "status": outcome.status.value,
        "message": outcome.message,
        "summary": summary(settings, outcome, release, seconds),
        "failed_phase": failed_phase(outcome) or None,
        "duration_seconds": round(seconds, 1),
        **where_it_ran(settings),
        "command_ids": command_ids,
        "console_urls": [url for url in (console_url(settings.region, c) for c in command_ids) if url],
        "instances": _rows(outcome.deploy),
        "succeeded": succeeded,
        "failed": len(failed),
        "failed_instances": [{"instance_id": i, "phases": phases} for i, phases in failed.items()],
        "interrupted_phase": outcome.interrupted or None,
        "stage": outcome.stage.status.value,
        "stage_seconds": outcome.stage_seconds,
        "stage_command_ids": [c.command_id for c in outcome.stage.commands],
        "stage_instances": _rows(outcome.stage),
        "health_check": outcome.health_check.status.value,
        "health_check_command_ids": [c.command_id for c in outcome.health_check.commands],
        "health_check_instances": _rows(outcome.health_check),
        "rollback": outcome.rollback.status.value,
        "rollback_command_ids": [c.command_id for c in outcome.rollback.commands],
        "rollback_instances": _rows(outcome.rollback),
        "batches": [
            {"batch": b.number, "instances": list(b.instance_ids), "outcome": b.outcome, "seconds": b.timings()}
            for b in outcome.batches
        ],
        "out_of_service_seconds": out_of_service(outcome),
        "fleet": dict(outcome.fleet),
        "departed": dict(outcome.departed),
        "skipped": dict(outcome.skipped),
    }


def out_of_service(outcome: DeployOutcome) -> dict[str, float]:
    """Each instance of a batch that left the load balancer and came back healthy: the seconds from its
    deregistration until then, added up over its deploy and its rollback (its batch's, measured once
    for the batch)."""
    return {i: b.out_of_service for b in outcome.batches if b.out_of_service is not None for i in b.instance_ids}


def where_it_ran(settings: DeploySettings) -> dict[str, object]:
    """The environment, region and build a result file speaks of."""
    build = settings.build
    return {
        "environment": settings.environment,
        "region": settings.region,
        "repository": build.repo,
        "build_number": build.build_number,
        "commit": build.commit,
    }


def dotenv(
    settings: DeploySettings, outcome: DeployOutcome, release: Release | None = None, seconds: float = 0.0
) -> dict[str, str]:
    command_ids, failed, succeeded = _counts(outcome)
    return {
        "SSM_DEPLOY_STATUS": outcome.status.value,
        "SSM_DEPLOY_ENVIRONMENT": settings.environment or "",
        "SSM_DEPLOY_COMMAND_IDS": " ".join(command_ids),
        "SSM_DEPLOY_CONSOLE_URL": (console_url(settings.region, command_ids[0]) or "") if command_ids else "",
        "SSM_DEPLOY_SUCCEEDED": str(succeeded),
        "SSM_DEPLOY_FAILED": str(len(failed)),
        "SSM_DEPLOY_FAILED_INSTANCES": " ".join(failed),
        "SSM_DEPLOY_FAILED_PHASE": failed_phase(outcome),
        "SSM_DEPLOY_DEPARTED": " ".join(outcome.departed),
        "SSM_DEPLOY_SKIPPED": " ".join(outcome.skipped),
        "SSM_DEPLOY_STAGE": outcome.stage.status.value,
        "SSM_DEPLOY_HEALTH_CHECK": outcome.health_check.status.value,
        "SSM_DEPLOY_ROLLBACK": outcome.rollback.status.value,
        "SSM_DEPLOY_INTERRUPTED": outcome.interrupted,
        "SSM_DEPLOY_BATCHES": str(len(outcome.batches)),
        "SSM_DEPLOY_DURATION": str(round(seconds)),
        "SSM_DEPLOY_SUMMARY": summary(settings, outcome, release, seconds),
    }


def _release_document(release: Release | None) -> dict[str, object]:
    if release is None:
        return {}
    return {"release": release.plan.release_id, "previous_release": release.live_before, "ledger": release.ledger}


def _release_variables(release: Release | None) -> dict[str, str]:
    found = _release_document(release)
    return {f"SSM_DEPLOY_{key.upper()}": str(value) for key, value in found.items()}


def _rows(phase: PhaseOutcome) -> list[dict[str, object]]:
    return [_row(inv) for inv in phase.invocations.values()]


def _row(inv: Invocation) -> dict[str, object]:
    return {
        "instance_id": inv.instance_id,
        "command_id": inv.command_id,
        "status": inv.status,
        "status_details": inv.status_details,
        "exit_code": inv.response_code,
        "duration": format_duration(inv.elapsed),
        "given_up": inv.lost or None,
    }


def _write(path: Path, text: str, variable: str, append: bool = False) -> bool:
    """Write a regular file only: a FIFO or a device would hang or misdirect the finished step."""
    try:
        if path.exists() and not stat.S_ISREG(path.stat().st_mode):
            log.warning(f"{variable}: {path} is not a regular file (a FIFO, device or folder): not written.")
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | (os.O_APPEND if append else os.O_TRUNC)
        descriptor = os.open(path, flags, 0o644)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # replaced since the check
                log.warning(f"{variable}: {path} is not a regular file: not written.")
                return False
            handle.write(text)
    except OSError as error:
        log.warning(f"{variable}: could not write {path}: {error}")
        return False
    return True


def _dotenv_quote(value: str) -> str:
    return "'" + _one_line(value).replace("'", "") + "'" if value else ""


def _one_line(value: str) -> str:
    return " ".join(value.split("\n"))
