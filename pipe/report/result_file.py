"""The deploy's result as JSON and as a dotenv file, for later steps (e.g. a notification pipe)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from pipe.aws.console import console_url
from pipe.config.settings import DeploySettings
from pipe.model import Invocation
from pipe.report.summary import format_duration
from pipe.stages.send import SentCommand

log = logging.getLogger("ssm-deploy")


@dataclass
class DeployOutcome:
    status: str  # "succeeded", "failed", "not sent"
    commands: list[SentCommand]
    invocations: dict[str, Invocation]
    message: str = ""
    healthcheck: str = "not run"  # "passed", "failed"
    rollback: str = "not run"  # "succeeded", "failed", "not needed"
    healthcheck_commands: list[SentCommand] = field(default_factory=list)
    rollback_commands: list[SentCommand] = field(default_factory=list)


def write_result(settings: DeploySettings, outcome: DeployOutcome) -> None:
    """Write ``RESULT_FILE`` (JSON) and the same with a ``.env`` suffix; a failure to write only warns."""
    path = Path(settings.result_file)
    rows = [
        {
            "instance_id": inv.instance_id,
            "command_id": inv.command_id,
            "status": inv.status,
            "status_details": inv.status_details,
            "exit_code": inv.response_code,
            "duration": format_duration(inv.elapsed),
            "given_up": inv.lost or None,
        }
        for inv in outcome.invocations.values()
    ]
    failed = [inv.instance_id for inv in outcome.invocations.values() if not inv.succeeded]
    command_ids = [command.command_id for command in outcome.commands]
    urls = [url for url in (console_url(settings.region, command_id) for command_id in command_ids) if url]
    document: dict[str, object] = {
        "status": outcome.status,
        "message": outcome.message,
        "environment": settings.environment,
        "region": settings.region,
        "repository": settings.build.repo,
        "build_number": settings.build.build_number,
        "commit": settings.build.commit,
        "command_ids": command_ids,
        "console_urls": urls,
        "instances": rows,
        "health_check": outcome.healthcheck,
        "health_check_command_ids": [c.command_id for c in outcome.healthcheck_commands],
        "rollback": outcome.rollback,
        "rollback_command_ids": [c.command_id for c in outcome.rollback_commands],
        "succeeded": len(rows) - len(failed),
        "failed": len(failed),
    }
    dotenv = {
        "SSM_DEPLOY_STATUS": outcome.status,
        "SSM_DEPLOY_ENVIRONMENT": settings.environment or "",
        "SSM_DEPLOY_COMMAND_IDS": " ".join(command_ids),
        "SSM_DEPLOY_CONSOLE_URL": urls[0] if urls else "",
        "SSM_DEPLOY_SUCCEEDED": str(len(rows) - len(failed)),
        "SSM_DEPLOY_FAILED": str(len(failed)),
        "SSM_DEPLOY_FAILED_INSTANCES": " ".join(failed),
        "SSM_DEPLOY_HEALTH_CHECK": outcome.healthcheck,
        "SSM_DEPLOY_ROLLBACK": outcome.rollback,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n")
        env_path = path.with_suffix(".env")
        env_path.write_text("".join(f"{key}={_dotenv_quote(value)}\n" for key, value in dotenv.items()))
    except OSError as error:
        log.warning(f"RESULT_FILE: could not write {path}: {error}")
        return
    log.info(f"Result written to {path} and {env_path}")


def _dotenv_quote(value: str) -> str:
    return "'" + value.replace("'", "") + "'" if value else ""
