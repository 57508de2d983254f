"""The deploy's result for later steps (e.g. a notification): JSON, a dotenv twin, and Bitbucket's
shared variables.

The rows and counts describe the deploy itself; the health check and the rollback each get a
section of their own, so a deploy that failed and was rolled back still reports its failures.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from pipe.aws.console import console_url
from pipe.config.settings import DeploySettings
from pipe.model import DeployOutcome, Invocation, PhaseOutcome
from pipe.report.durations import format_duration

ENV_SUFFIX = ".env"  # added to RESULT_FILE's name, never replacing its suffix: config.json must not hit config.env
SHARED_VARIABLES = "BITBUCKET_PIPELINES_VARIABLES_PATH"  # Bitbucket's variable sharing between steps
log = logging.getLogger("ssm-deploy")

if TYPE_CHECKING:
    from pipe.stages.release.stage import Release


def write_result(
    settings: DeploySettings, outcome: DeployOutcome, env: dict[str, str] | None = None, release: Release | None = None
) -> None:
    """Write ``RESULT_FILE`` (JSON) and its ``.env`` twin, and append the ``SSM_DEPLOY_*`` values to
    Bitbucket's shared variables when the step has them; a failure to write only warns."""
    variables = dotenv(settings, outcome) | _release_variables(release)
    path = Path(settings.result_file)
    twin = path.with_name(path.name + ENV_SUFFIX)
    content = document(settings, outcome) | _release_document(release)
    written = _write(path, json.dumps(content, indent=2) + "\n", "RESULT_FILE")
    written = written and _write(
        twin, "".join(f"{k}={_dotenv_quote(v)}\n" for k, v in variables.items()), "RESULT_FILE"
    )
    if written:
        log.info(f"Result written to {path} and {twin}")
    shared = (env if env is not None else os.environ).get(SHARED_VARIABLES, "").strip()
    if shared:  # KEY=VALUE lines, appended; a later step lists the names in `output-variables`
        lines = "".join(f"{key}={_one_line(value)}\n" for key, value in variables.items())
        _write(Path(shared), lines, SHARED_VARIABLES, append=True)


def _deploy_facts(outcome: DeployOutcome) -> tuple[list[str], list[str], int]:
    """The deploy phase's command ids, failed instances and how many succeeded: both files say them."""
    deploy = outcome.deploy
    failed = [inv.instance_id for inv in deploy.failed]
    return [command.command_id for command in deploy.commands], failed, len(deploy.invocations) - len(failed)


def document(settings: DeploySettings, outcome: DeployOutcome) -> dict[str, object]:
    command_ids, failed, succeeded = _deploy_facts(outcome)
    return {
        "status": outcome.status.value,
        "message": outcome.message,
        "environment": settings.environment,
        "region": settings.region,
        "repository": settings.build.repo,
        "build_number": settings.build.build_number,
        "commit": settings.build.commit,
        "command_ids": command_ids,
        "console_urls": [url for url in (console_url(settings.region, c) for c in command_ids) if url],
        "instances": _rows(outcome.deploy),
        "succeeded": succeeded,
        "failed": len(failed),
        "interrupted_phase": outcome.interrupted or None,
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
    }


def dotenv(settings: DeploySettings, outcome: DeployOutcome) -> dict[str, str]:
    command_ids, failed, succeeded = _deploy_facts(outcome)
    return {
        "SSM_DEPLOY_STATUS": outcome.status.value,
        "SSM_DEPLOY_ENVIRONMENT": settings.environment or "",
        "SSM_DEPLOY_COMMAND_IDS": " ".join(command_ids),
        "SSM_DEPLOY_CONSOLE_URL": (console_url(settings.region, command_ids[0]) or "") if command_ids else "",
        "SSM_DEPLOY_SUCCEEDED": str(succeeded),
        "SSM_DEPLOY_FAILED": str(len(failed)),
        "SSM_DEPLOY_FAILED_INSTANCES": " ".join(failed),
        "SSM_DEPLOY_HEALTH_CHECK": outcome.health_check.status.value,
        "SSM_DEPLOY_ROLLBACK": outcome.rollback.status.value,
        "SSM_DEPLOY_INTERRUPTED": outcome.interrupted,
        "SSM_DEPLOY_BATCHES": str(len(outcome.batches)),
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
