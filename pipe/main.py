"""Command-line glue: validate variables, run the deploy, turn every outcome into an exit code."""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path
from typing import Any

import yaml
from bitbucket_pipes_toolkit import Pipe
from botocore.exceptions import BotoCoreError, ClientError

from pipe.aws.errors import error_code, error_message, is_access_denied, permission_for
from pipe.config.build_context import cut
from pipe.config.settings import load_settings
from pipe.config.variables import SCHEMA
from pipe.deploy import Deploy
from pipe.errors import PipeError, ValidationFailed
from pipe.runtime.interruption import Interrupted, stop_requests
from pipe.runtime.logging_setup import configure_logging
from pipe.runtime.redaction import Redactor
from pipe.stages.script import script_size_problem

log = logging.getLogger("ssm-deploy")
METADATA_FILES = (Path(__file__).resolve().parent.parent / "pipe.yml", Path("/pipe.yml"))


class DeployPipe(Pipe):  # type: ignore[misc]
    def enable_debug_log_level(self) -> None:
        """DEBUG is parsed strictly by settings.py; the toolkit would treat the string "false" as on."""


def main() -> int:
    env = dict(os.environ)
    redactor = Redactor()
    pipe = DeployPipe(pipe_metadata=_metadata(), schema=SCHEMA, env=env, check_for_newer_version=False)
    try:
        settings = load_settings(pipe.variables, env, script_size=script_size_problem)
    except ValidationFailed as invalid:
        pipe.fail(format_problems(invalid.problems))
        return 1
    except Exception as error:  # a bug of ours in validation: one clear line, never a traceback
        pipe.fail(f"Unexpected error {type(error).__name__} while checking the variables: {cut(str(error), 200)}.")
        return 1
    configure_logging(pipe.logger, redactor, settings.debug)
    try:
        with stop_requests() as stops:
            message = Deploy(settings, env, redactor).run(stops)
    except Interrupted as error:
        pipe.fail(f"{error}; nothing was sent to the instances.")
        return 1
    except PipeError as error:
        pipe.fail(redactor.redact(str(error)))
        return 1
    except ClientError as error:
        fix = f" Fix: allow {permission_for(error.operation_name)}." if is_access_denied(error) else ""
        pipe.fail(
            redactor.redact(f"AWS refused {error.operation_name} ({error_code(error)}: {error_message(error)}).{fix}")
        )
        return 1
    except BotoCoreError as error:
        pipe.fail(redactor.redact(f"Could not talk to AWS: {error}"))
        return 1
    except Exception as error:  # a bug of ours: still no raw traceback in the build log
        log.debug(redactor.redact(traceback.format_exc()))
        pipe.fail(
            redactor.redact(f"Unexpected error {type(error).__name__}: {error}. Run with DEBUG: 'true' for details.")
        )
        return 1
    pipe.success(message)
    return 0


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
