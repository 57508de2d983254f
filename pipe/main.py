"""Command-line glue: validate variables, run the action they name (ACTION: the deploy by default),
turn every outcome into an exit code."""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path
from typing import Any

import yaml
from bitbucket_pipes_toolkit import Pipe
from bitbucket_pipes_toolkit.helpers import fail, success
from botocore.exceptions import BotoCoreError, ClientError

from pipe.actions import ACTIONS
from pipe.aws.errors import explain
from pipe.config.build_context import cut
from pipe.config.settings import load_settings
from pipe.config.variables import SCHEMA
from pipe.errors import PipeError, ValidationFailed
from pipe.plan.script import script_size_problem
from pipe.runtime.interruption import Interrupted, stop_requests
from pipe.runtime.logging_setup import configure_logging
from pipe.runtime.redaction import Redactor

log = logging.getLogger("ssm-deploy")
METADATA_FILES = (Path(__file__).resolve().parent.parent / "pipe.yml", Path("/pipe.yml"))


class DeployPipe(Pipe):  # type: ignore[misc]
    def enable_debug_log_level(self) -> None:
        """DEBUG is parsed strictly by settings.py; the toolkit would treat the string "false" as on."""


def main() -> int:
    """Run the pipe; the exit code is 0 only when the action succeeded: the deploy (or its dry run), or
    a status that found no drift."""
    env = dict(os.environ)
    redactor = Redactor()
    pipe = DeployPipe(pipe_metadata=_metadata(), schema=SCHEMA, env=env, check_for_newer_version=False)
    try:
        settings = load_settings(pipe.variables, env, script_size=script_size_problem)
    except ValidationFailed as invalid:
        return _failed(format_problems(invalid.problems))
    except Exception as error:  # a bug of ours in validation: one clear line, never a traceback
        return _failed(f"Unexpected error {type(error).__name__} while checking the variables: {cut(str(error), 200)}.")
    configure_logging(pipe.logger, redactor, settings.debug)
    try:
        with stop_requests() as stops:
            message = ACTIONS[settings.action](settings, env, redactor, stops)
    except Interrupted as error:  # raised only before anything was sent: later stops are DeployStopped
        return _failed(f"{error}; nothing was sent to the instances.")
    except PipeError as error:
        return _failed(redactor.redact(str(error)))
    except ClientError as error:
        return _failed(redactor.redact(explain(error)))
    except BotoCoreError as error:
        return _failed(redactor.redact(f"Could not talk to AWS: {error}"))
    except Exception as error:  # a bug of ours: still no raw traceback in the build log
        log.debug(redactor.redact(traceback.format_exc()))
        return _failed(
            redactor.redact(f"Unexpected error {type(error).__name__}: {error}. Run with DEBUG: 'true' for details.")
        )
    success(message, do_exit=False)
    return 0


def _failed(message: str) -> int:
    """The toolkit's red ✖ line; the caller's process then exits with 1."""
    fail(message, do_exit=False)
    return 1


def format_problems(problems: dict[str, list[str]]) -> str:
    """The toolkit's validation layout (``VAR:`` then ``- reason``), without YAML's quoting."""
    lines = ["Validation errors: "]
    for name, reasons in problems.items():
        lines.append(f"{name}:")
        lines.extend(f"- {reason}" for reason in reasons)
    return "\n".join(lines)


def _metadata() -> dict[str, Any]:
    for path in METADATA_FILES:
        if path.is_file():
            loaded = yaml.safe_load(path.read_text())
            return loaded if isinstance(loaded, dict) else {}
    return {}
