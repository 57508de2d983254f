"""The pipe's variables as a Cerberus schema for bitbucket-pipes-toolkit.

Every variable is declared as a string: the toolkit parses non-string types with
``yaml.safe_load``, which turns some typos into tracebacks and "false" into a truthy string.
``settings.py`` parses and checks the values itself and names the variable in every error.
"""

from __future__ import annotations

from typing import Any

_OPTIONAL: dict[str, Any] = {"type": "string", "required": False, "nullable": True}
_REQUIRED: dict[str, Any] = {"type": "string", "required": True, "empty": False}

VARIABLE_NAMES: tuple[str, ...] = (
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_OIDC_ROLE_ARN",
    "ENVIRONMENT",
    "ROLE_ARN",
    "EXTERNAL_ID",
    "INSTANCE_IDS",
    "TARGETS",
    "MAX_CONCURRENCY",
    "MAX_ERRORS",
    "COMMANDS",
    "SCRIPT",
    "DOCUMENT_NAME",
    "DOCUMENT_VERSION",
    "DOCUMENT_PARAMETERS",
    "WORKING_DIRECTORY",
    "EXECUTION_TIMEOUT",
    "DELIVERY_TIMEOUT",
    "COMMENT",
    "SECRETS",
    "VARIABLES",
    "PARAMETERS_PATH",
    "STREAM_OUTPUT",
    "CLOUDWATCH_LOG_GROUP",
    "AGENT_LOST_TIMEOUT",
    "OUTPUT_S3_BUCKET",
    "OUTPUT_S3_PREFIX",
    "HEALTHCHECK_COMMANDS",
    "HEALTHCHECK_RETRIES",
    "HEALTHCHECK_INTERVAL",
    "HEALTHCHECK_TIMEOUT",
    "ROLLBACK_COMMANDS",
    "RESULT_FILE",
    "DRY_RUN",
    "WAIT",
    "DEBUG",
)

REQUIRED_VARIABLES: frozenset[str] = frozenset({"AWS_DEFAULT_REGION"})
# One of INSTANCE_IDS (which may arrive as a YAML list: INSTANCE_IDS_COUNT, INSTANCE_IDS_0..n) and
# TARGETS is required too, and one of COMMANDS and SCRIPT: settings.py checks that, the schema cannot.
DOCUMENTED_REQUIRED: frozenset[str] = REQUIRED_VARIABLES

SCHEMA: dict[str, dict[str, Any]] = {
    name: dict(_REQUIRED if name in REQUIRED_VARIABLES else _OPTIONAL) for name in VARIABLE_NAMES
}
