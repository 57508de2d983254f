"""The shell script sent to the instances: read secrets there, export variables, run COMMANDS.

Secret values never travel in SendCommand: the script names the parameters and the instance reads
them with its own role, so ListCommands and CloudTrail only ever show parameter names.

Nothing from outside the user's commands reaches the script as code: values are quoted for the
shell that runs them, names are checked identifiers, and the header line keeps only characters that
cannot end a comment.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from pipe.config.build_context import BuildContext
from pipe.config.documents import POWERSHELL, SHELL
from pipe.config.env_names import ENV_NAME
from pipe.config.parsers import unix_line_endings
from pipe.config.settings import DeploySettings
from pipe.limits import MAX_SCRIPT_BYTES
from pipe.model import SecretRef

PARAMETER_READ_FAILED = 98  # exit code when an instance cannot read a SECRETS parameter
AWS_CLI_MISSING = 127
# PowerShell's tokenizer ends a single-quoted string at any of these (CharExtensions.IsSingleQuote in
# PowerShell's CharTraits.cs), and reads any two of them in a row as one quote character
POWERSHELL_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
_HEADER_UNSAFE = re.compile(r"[^A-Za-z0-9_.@+/-]")


def build_script(
    settings: DeploySettings, body: str | None = None, secrets: Sequence[SecretRef] | None = None
) -> list[str]:
    """Lines for the ``commands`` parameter of AWS-RunShellScript or AWS-RunPowerShellScript: the
    prelude (``secrets``, default SECRETS; VARIABLES), then ``body`` (default: COMMANDS); empty for
    another document, which takes only DOCUMENT_PARAMETERS."""
    body = settings.commands if body is None else body
    secrets = settings.secrets if secrets is None else secrets
    if settings.document_name == POWERSHELL:
        return _powershell_script(settings, body, secrets)
    if settings.document_name != SHELL:
        return []
    lines = [header_line(settings.build)]
    if secrets:
        lines += _secret_lines(secrets, settings.region)
    for name, value in settings.variables:
        lines.append(f"export {_checked(name)}={shlex.quote(value)}")
    if len(lines) > 1:
        lines.append("# --- COMMANDS ---")
    return lines + command_lines(body)


def header_line(build: BuildContext) -> str:
    """``# ssm-deploy <repo>#<build> <commit>``, a comment in both shells. The parts come from the
    build's environment, so anything that could end the comment (a newline, a CR for PowerShell) or
    mean something else is replaced by ``_``."""
    parts = (_header_part(build.repo), _header_part(build.build_number), _header_part(build.short_commit))
    return f"# ssm-deploy {parts[0]}#{parts[1]} {parts[2]}".rstrip()


def _header_part(text: str) -> str:
    return _HEADER_UNSAFE.sub("_", text[:100])


def command_lines(text: str) -> list[str]:
    """The user's commands as lines. Only a newline ends a line: str.splitlines() would also split
    inside quotes at U+2028 and friends. CRLF endings (a script saved on Windows) become LF, a CR
    left at the very end included: ``exit 0\\r`` is an error in every POSIX shell."""
    return unix_line_endings(text).split("\n")


def _checked(name: str) -> str:
    """``name`` as it goes into the script; config checked it already, this keeps the promise here."""
    if not ENV_NAME.fullmatch(name):
        raise ValueError(f"{name[:60]!r} is not a valid environment variable name")
    return name


def _powershell_script(settings: DeploySettings, body: str, secrets: Sequence[SecretRef]) -> list[str]:
    """The same prelude for Windows: secrets read with AWS Tools for PowerShell, then COMMANDS."""
    lines = [header_line(settings.build)]
    # every secret is read before any is exported: a name cannot change how the next read runs
    for number, ref in enumerate(secrets, 1):
        lines += [
            "try {",
            f"  $ssm_deploy_secret_{number} = (Get-SSMParameter -Name {ps_quote(ref.parameter)} -WithDecryption $true "
            f"-Region {ps_quote(settings.region)} -ErrorAction Stop).Value",
            f"}} catch {{ [Console]::Error.WriteLine({ps_quote(_read_hint(ref))}); exit {PARAMETER_READ_FAILED} }}",
        ]
    for number, ref in enumerate(secrets, 1):
        lines.append(f"$env:{_checked(ref.env_name)} = $ssm_deploy_secret_{number}")
    for name, value in settings.variables:
        lines.append(f"$env:{_checked(name)} = {ps_quote(value)}")
    if len(lines) > 1:
        lines.append("# --- COMMANDS ---")
    return lines + command_lines(body)


def ps_quote(value: str) -> str:
    """A PowerShell single-quoted string: nothing inside is expanded; every quote character the
    tokenizer knows is doubled, which it reads back as that one character."""
    return "'" + "".join(c + c if c in POWERSHELL_SINGLE_QUOTES else c for c in value) + "'"


def script_bytes(lines: Sequence[str]) -> int:
    """The size of a script as SendCommand carries it: its lines joined, in UTF-8 (MAX_SCRIPT_BYTES)."""
    return len("\n".join(lines).encode())


def script_size_problem(settings: DeploySettings) -> str | None:
    """The whole script (exports, secret reads and COMMANDS) must stay within MAX_SCRIPT_BYTES."""
    size = script_bytes(build_script(settings))
    if size <= MAX_SCRIPT_BYTES:
        return None
    extras = [name for name, used in (("SECRETS", settings.secrets), ("VARIABLES", settings.variables)) if used]
    parts = " and ".join(["the pipe's header line", *extras])
    return (
        f"makes a script of {size:,} bytes (with {parts}); at most {MAX_SCRIPT_BYTES:,} can be sent. "
        "Put the steps in a script on the instances (e.g. deploy.sh) and run that"
    )


def _read_hint(ref: SecretRef) -> str:
    return (
        f"ssm-deploy: cannot read {ref.parameter} for {ref.env_name}: it no longer exists (deleted, or a version "
        "older than the last 100 that Parameter Store keeps: deploy again to read the current one), or the instance "
        "role needs ssm:GetParameter on it and kms:Decrypt on its key; the AWS error above says which"
    )


def _secret_lines(secrets: Sequence[SecretRef], region: str) -> list[str]:
    lines = [
        "if ! command -v aws >/dev/null 2>&1; then",
        "  echo 'ssm-deploy: the AWS CLI (aws) is not on PATH on this instance; it is needed to read SECRETS' >&2",
        f"  exit {AWS_CLI_MISSING}",
        "fi",
    ]
    # every secret is read into a variable of the pipe's own before any is exported, so no name
    # (PATH, AWS_CONFIG_FILE, ...) can change how the next read runs or what its failure says.
    # `$(...)` drops every trailing newline of what it captures, a value's own too (a PEM key ends
    # with one): a `.` after the CLI's output keeps them, and the export takes off the `.` and the
    # one newline the CLI's text output puts after the value (awscli/text.py: the value, then "\n")
    for number, ref in enumerate(secrets, 1):
        lines.append(
            f'ssm_deploy_secret_{number}="$(aws ssm get-parameter --region {shlex.quote(region)} '
            f'--name {shlex.quote(ref.parameter)} --with-decryption --query Parameter.Value --output text && echo .)" '
            f"|| {{ echo {shlex.quote(_read_hint(ref))} >&2; exit {PARAMETER_READ_FAILED}; }}"
        )
    for number, ref in enumerate(secrets, 1):
        name = _checked(ref.env_name)
        # a plain assignment, then export: `export NAME=$x` splits $x in older dash
        lines += [
            f'{name}="${{ssm_deploy_secret_{number}%?.}}"',
            f"export {name}",
            f"unset ssm_deploy_secret_{number}",
        ]
    return lines


def healthcheck_body(settings: DeploySettings, release_id: str | None = None) -> str:
    """HEALTHCHECK_COMMANDS retried on the instance: up to HEALTHCHECK_RETRIES attempts,
    HEALTHCHECK_INTERVAL seconds apart.

    The check is kept as quoted data and each attempt runs it with ``eval`` in a subshell that is
    its own command, never the condition of an ``if``, ``while``, ``&&`` or ``||``: there, POSIX
    shells ignore ``set -e``, so a check under ``set -e`` would go on past its failing command and
    pass. This way ``set -e``, ``pipefail`` and ``exit`` behave as they do in COMMANDS, and an
    ``exit`` ends the attempt, not the loop. In release mode the check gets the release id the
    deploy made live as ``SSM_DEPLOY_RELEASE``."""
    retries, interval = settings.healthcheck_retries, settings.healthcheck_interval
    release = [f"SSM_DEPLOY_RELEASE={shlex.quote(release_id)}", "export SSM_DEPLOY_RELEASE"] if release_id else []
    return "\n".join(
        [
            *release,
            f"ssm_deploy_check={shlex.quote(unix_line_endings(settings.healthcheck_commands))}",
            "ssm_deploy_attempt=1",
            "while :; do",
            '  ( eval "$ssm_deploy_check" )',
            "  ssm_deploy_status=$?",
            '  [ "$ssm_deploy_status" -ne 0 ] || exit 0',
            f'  if [ "$ssm_deploy_attempt" -ge {retries} ]; then',
            f'    echo "ssm-deploy: health check failed {retries} time(s) (last exit $ssm_deploy_status)" >&2',
            "    exit 1",
            "  fi",
            '  echo "ssm-deploy: health check attempt $ssm_deploy_attempt failed (exit $ssm_deploy_status); '
            f'retrying in {interval} s" >&2',
            "  ssm_deploy_attempt=$((ssm_deploy_attempt + 1))",
            f"  sleep {interval}",
            "done",
        ]
    )
