"""The shell script sent to the instances: read secrets there, export variables, run COMMANDS.

Secret values never travel in SendCommand: the script names the parameters and the instance reads
them with its own role, so ListCommands and CloudTrail only ever show parameter names.
"""

from __future__ import annotations

import shlex

from pipe.config.documents import POWERSHELL, SHELL
from pipe.config.script_file import MAX_SCRIPT_BYTES
from pipe.config.settings import DeploySettings
from pipe.model import SecretRef

PARAMETER_READ_FAILED = 98  # exit code when an instance cannot read a SECRETS parameter
AWS_CLI_MISSING = 127


def build_script(settings: DeploySettings) -> list[str]:
    """Lines for the ``commands`` parameter of AWS-RunShellScript or AWS-RunPowerShellScript;
    empty for another document, which takes only DOCUMENT_PARAMETERS."""
    if settings.document_name == POWERSHELL:
        return _powershell_script(settings)
    if settings.document_name != SHELL:
        return []
    lines = [f"# ssm-deploy {settings.build.repo}#{settings.build.build_number} {settings.build.short_commit}".rstrip()]
    if settings.secrets:
        lines += _secret_lines(settings.secrets, settings.region)
    for name, value in settings.variables:
        lines.append(f"export {name}={shlex.quote(value)}")
    if len(lines) > 1:
        lines.append("# --- COMMANDS ---")
    # only newlines end a line: str.splitlines() would also split inside quotes at U+2028 and friends
    lines += settings.commands.replace("\r\n", "\n").split("\n")
    return lines


def _powershell_script(settings: DeploySettings) -> list[str]:
    """The same prelude for Windows: secrets read with AWS Tools for PowerShell, then COMMANDS."""
    lines = [f"# ssm-deploy {settings.build.repo}#{settings.build.build_number} {settings.build.short_commit}".rstrip()]
    for ref in settings.secrets:
        hint = _ps_quote(
            f"ssm-deploy: cannot read {ref.parameter} for {ref.env_name}: the instance role needs "
            "ssm:GetParameter on it and kms:Decrypt on its key"
        )
        lines += [
            "try {",
            f"  $env:{ref.env_name} = (Get-SSMParameter -Name {_ps_quote(ref.parameter)} -WithDecryption $true "
            f"-Region {_ps_quote(settings.region)} -ErrorAction Stop).Value",
            f"}} catch {{ [Console]::Error.WriteLine({hint}); exit {PARAMETER_READ_FAILED} }}",
        ]
    for name, value in settings.variables:
        lines.append(f"$env:{name} = {_ps_quote(value)}")
    if len(lines) > 1:
        lines.append("# --- COMMANDS ---")
    lines += settings.commands.replace("\r\n", "\n").split("\n")
    return lines


def _ps_quote(value: str) -> str:
    """A PowerShell single-quoted string: nothing inside is expanded; quotes are doubled."""
    return "'" + value.replace("'", "''").replace("\u2018", "\u2018\u2018").replace("\u2019", "\u2019\u2019") + "'"


def script_size_problem(settings: DeploySettings) -> str | None:
    """The whole script (exports, secret reads and COMMANDS) must stay within MAX_SCRIPT_BYTES."""
    size = len("\n".join(build_script(settings)).encode())
    if size <= MAX_SCRIPT_BYTES:
        return None
    extras = [name for name, used in (("SECRETS", settings.secrets), ("VARIABLES", settings.variables)) if used]
    parts = " and ".join(["the pipe's header line", *extras])
    return (
        f"makes a script of {size:,} bytes (with {parts}); at most {MAX_SCRIPT_BYTES:,} can be sent. "
        "Put the steps in a script on the instances (e.g. deploy.sh) and run that"
    )


def _secret_lines(secrets: list[SecretRef], region: str) -> list[str]:
    lines = [
        "if ! command -v aws >/dev/null 2>&1; then",
        "  echo 'ssm-deploy: the AWS CLI (aws) is not on PATH on this instance; it is needed to read SECRETS' >&2",
        f"  exit {AWS_CLI_MISSING}",
        "fi",
    ]
    for ref in secrets:
        name = shlex.quote(ref.parameter)
        hint = shlex.quote(
            f"ssm-deploy: cannot read {ref.parameter} for {ref.env_name}: the instance role needs "
            "ssm:GetParameter on it and kms:Decrypt on its key"
        )
        lines += [
            f'{ref.env_name}="$(aws ssm get-parameter --region {region} --name {name} --with-decryption '
            '--query Parameter.Value --output text)" || { echo ' + hint + f" >&2; exit {PARAMETER_READ_FAILED}; }}",
            f"export {ref.env_name}",
        ]
    return lines


def healthcheck_body(settings: DeploySettings) -> str:
    """HEALTHCHECK_COMMANDS retried on the instance: up to HEALTHCHECK_RETRIES attempts,
    HEALTHCHECK_INTERVAL seconds apart. Each attempt runs in a subshell, so an ``exit`` in the
    check ends the attempt, not the loop."""
    retries, interval = settings.healthcheck_retries, settings.healthcheck_interval
    return "\n".join(
        [
            "ssm_deploy_attempt=1",
            "while :; do",
            "  if (",
            settings.healthcheck_commands,
            "  ); then exit 0; fi",
            f'  if [ "$ssm_deploy_attempt" -ge {retries} ]; then',
            f"    echo 'ssm-deploy: health check failed {retries} time(s)' >&2",
            "    exit 1",
            "  fi",
            f'  echo "ssm-deploy: health check attempt $ssm_deploy_attempt failed; retrying in {interval} s" >&2',
            "  ssm_deploy_attempt=$((ssm_deploy_attempt + 1))",
            f"  sleep {interval}",
            "done",
        ]
    )
