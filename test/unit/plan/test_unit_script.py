"""pipe.plan.script: the script the instances run, checked by running it with a fake ``aws``."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipe.config.build_context import BuildContext
from pipe.config.documents import POWERSHELL
from pipe.config.settings import DeploySettings
from pipe.model import SecretRef
from pipe.plan.script import (
    AWS_CLI_MISSING,
    PARAMETER_READ_FAILED,
    build_script,
    command_lines,
    healthcheck_body,
    ps_quote,
)
from unit.unit_support import make_settings

SECRET_VALUE = 'p@ss\'w$rd "x" $(id) `id` \\n;|&'
DB_PARAMETER = "/deploy/production/db-password"
API_PARAMETER = "/deploy/production/api-token"
API_VALUE = "tok-123456"
TRICKY_VARIABLE = 'it\'s $HOME "quoted" `date` $(id) ; & | * ~ \\'

# the fake CLI logs its arguments, then prints the value kept in $PARAMS/<name with / as _> and a
# newline, as the real one's text output does (awscli/text.py), or fails like the real one when there
# is no such file (ParameterNotFound exits 254)
FAKE_AWS = r"""#!/bin/sh
echo "aws $*" >> "$LOG"
name=""
while [ $# -gt 0 ]; do
  if [ "$1" = "--name" ]; then name="$2"; fi
  shift
done
file="$PARAMS/$(printf '%s' "$name" | tr / _)"
if [ ! -f "$file" ]; then
  echo "An error occurred (ParameterNotFound) when calling the GetParameter operation:" >&2
  exit 254
fi
cat "$file" && echo
"""

# runs in a child process, so it only sees variables the script exported
USER_COMMANDS = """\
echo user-commands-start >> "$LOG"
/bin/sh -c 'printf "%s" "$DB_PASSWORD" > "$OUT/DB_PASSWORD"'
/bin/sh -c 'printf "%s" "$API_TOKEN" > "$OUT/API_TOKEN"'
/bin/sh -c 'printf "%s" "$TRICKY" > "$OUT/TRICKY"'
/bin/sh -c 'printf "%s" "$PLAIN" > "$OUT/PLAIN"'
echo user-commands-end >> "$LOG"
"""

SHELLS = [shell for shell in ("bash", "dash") if shutil.which(shell)]


@dataclass
class Run:
    code: int
    stderr: str
    log: list[str]
    out: Path

    def exported(self, name: str) -> str:
        return (self.out / name).read_text()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for name in ("bin", "params", "out", "empty"):
        (tmp_path / name).mkdir()
    fake = tmp_path / "bin" / "aws"
    fake.write_text(FAKE_AWS)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return tmp_path


def store_parameter(workdir: Path, name: str, value: str) -> None:
    (workdir / "params" / name.replace("/", "_")).write_text(value)


def run_script(workdir: Path, lines: list[str], shell: str, with_aws: bool = True) -> Run:
    script = workdir / "_script.sh"  # the SSM Agent writes the commands to a file and runs it
    script.write_text("\n".join(lines) + "\n")
    log = workdir / "log"
    log.touch()
    path = f"{workdir / 'bin'}:/usr/bin:/bin" if with_aws else str(workdir / "empty")
    env = {"PATH": path, "LOG": str(log), "PARAMS": str(workdir / "params"), "OUT": str(workdir / "out")}
    shell_path = shutil.which(shell)
    assert shell_path is not None
    done = subprocess.run(
        [shell_path, str(script)],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return Run(done.returncode, done.stderr, log.read_text().splitlines(), workdir / "out")


def deploy_settings(**overrides: object) -> DeploySettings:
    values: dict[str, object] = {
        "secrets": [SecretRef("DB_PASSWORD", DB_PARAMETER), SecretRef("API_TOKEN", API_PARAMETER)],
        "variables": [("TRICKY", TRICKY_VARIABLE), ("PLAIN", "plain")],
        "commands": USER_COMMANDS,
    }
    values.update(overrides)
    return make_settings(**values)


# --- the script's text --------------------------------------------------------------------------


def test_plain_script_is_header_and_commands() -> None:
    lines = build_script(make_settings(commands="cd /srv\n./deploy.sh"))
    assert lines == ["# ssm-deploy team/app#42 0123456", "cd /srv", "./deploy.sh"]


def test_script_names_parameters_never_values() -> None:
    lines = build_script(deploy_settings())
    text = "\n".join(lines)
    assert DB_PARAMETER in text
    assert API_PARAMETER in text
    assert SECRET_VALUE not in text
    assert API_VALUE not in text
    assert "--with-decryption" in text
    assert "--region eu-west-1" in text
    assert lines.index("# --- COMMANDS ---") < lines.index('echo user-commands-start >> "$LOG"')


def test_variables_are_shell_quoted() -> None:
    lines = build_script(deploy_settings(secrets=[]))
    assert "export TRICKY='it'\"'\"'s $HOME \"quoted\" `date` $(id) ; & | * ~ \\'" in lines
    assert "export PLAIN=plain" in lines
    assert not any("command -v aws" in line for line in lines)  # no CLI needed without SECRETS


# --- the script, run ----------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_script_exports_secrets_and_variables_before_user_commands(workdir: Path, shell: str) -> None:
    store_parameter(workdir, DB_PARAMETER, SECRET_VALUE)
    store_parameter(workdir, API_PARAMETER, API_VALUE)

    run = run_script(workdir, build_script(deploy_settings()), shell)

    assert run.code == 0, run.stderr
    assert run.exported("DB_PASSWORD") == SECRET_VALUE
    assert run.exported("API_TOKEN") == API_VALUE
    assert run.exported("TRICKY") == TRICKY_VARIABLE
    assert run.exported("PLAIN") == "plain"
    assert run.log == [
        f"aws ssm get-parameter --region eu-west-1 --name {DB_PARAMETER} --with-decryption "
        "--query Parameter.Value --output text",
        f"aws ssm get-parameter --region eu-west-1 --name {API_PARAMETER} --with-decryption "
        "--query Parameter.Value --output text",
        "user-commands-start",
        "user-commands-end",
    ]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    "value", ["-----BEGIN KEY-----\nAbC=\n-----END KEY-----\n", "two\n\n", "\n", "ends-with-dot.", " spaced\t"]
)
def test_a_secret_is_exported_exactly_trailing_newlines_included(workdir: Path, shell: str, value: str) -> None:
    # attack 26: `$(...)` drops every trailing newline it captures, a PEM key's own one too
    store_parameter(workdir, DB_PARAMETER, value)
    store_parameter(workdir, API_PARAMETER, API_VALUE)

    run = run_script(workdir, build_script(deploy_settings()), shell)

    assert run.code == 0, run.stderr
    assert (run.exported("DB_PASSWORD"), run.exported("API_TOKEN")) == (value, API_VALUE)


@pytest.mark.parametrize("shell", SHELLS)
def test_unreadable_parameter_exits_98_before_user_commands(workdir: Path, shell: str) -> None:
    store_parameter(workdir, DB_PARAMETER, SECRET_VALUE)  # the first reads, the second does not

    run = run_script(workdir, build_script(deploy_settings()), shell)

    assert run.code == PARAMETER_READ_FAILED == 98
    assert not any(line.startswith("user-commands") for line in run.log)
    assert len(run.log) == 2  # stopped at the second parameter
    assert f"cannot read {API_PARAMETER} for API_TOKEN" in run.stderr
    assert "ssm:GetParameter" in run.stderr
    assert "kms:Decrypt" in run.stderr
    assert SECRET_VALUE not in run.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_missing_aws_cli_exits_127_before_user_commands(workdir: Path, shell: str) -> None:
    run = run_script(workdir, build_script(deploy_settings()), shell, with_aws=False)

    assert run.code == AWS_CLI_MISSING == 127
    assert run.log == []  # `echo` is a builtin: the user commands would have logged without PATH
    assert "AWS CLI (aws) is not on PATH" in run.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_script_without_secrets_needs_no_aws_cli(workdir: Path, shell: str) -> None:
    settings = deploy_settings(secrets=[], commands='echo "$TRICKY" >> "$LOG"')
    run = run_script(workdir, build_script(settings), shell, with_aws=False)
    assert run.code == 0, run.stderr
    assert run.log == [TRICKY_VARIABLE]


@pytest.mark.parametrize("shell", SHELLS)
def test_user_commands_exit_code_is_the_script_exit_code(workdir: Path, shell: str) -> None:
    settings = make_settings(commands='echo ran >> "$LOG"\nexit 3')
    run = run_script(workdir, build_script(settings), shell)
    assert run.code == 3
    assert run.log == ["ran"]


def test_parameter_name_is_quoted_for_the_shell(workdir: Path) -> None:
    # PARAMETER_NAME allows only safe characters today; the script must not rely on it
    settings = make_settings(secrets=[SecretRef("ODD", "/deploy/a b;touch pwned")], commands="true")
    store_parameter(workdir, "/deploy/a b;touch pwned", "odd-value")
    run = run_script(workdir, build_script(settings), "bash" if "bash" in SHELLS else SHELLS[0])
    assert run.code == 0, run.stderr
    assert not (workdir / "pwned").exists()
    assert run.log[0].endswith("--name /deploy/a b;touch pwned --with-decryption --query Parameter.Value --output text")


# --- no name or build value changes what the script does (issue 9, items 8 and 10) -----------------


@pytest.mark.parametrize("shell", SHELLS)
def test_a_secret_exported_as_path_cannot_break_the_next_secret_read(workdir: Path, shell: str) -> None:
    # config refuses PATH (pipe/config/env_names.py); the script must not depend on that either:
    # every read runs before any name is exported, so its failure message never blames IAM wrongly
    store_parameter(workdir, DB_PARAMETER, "/nowhere")
    store_parameter(workdir, API_PARAMETER, API_VALUE)
    settings = deploy_settings(
        secrets=[SecretRef("PATH", DB_PARAMETER), SecretRef("API_TOKEN", API_PARAMETER)],
        variables=[],
        commands='echo "path=$PATH" >> "$LOG"',
    )
    run = run_script(workdir, build_script(settings), shell)

    assert run.code == 0, run.stderr
    assert "cannot read" not in run.stderr
    assert run.log[-1] == "path=/nowhere"
    assert len([line for line in run.log if line.startswith("aws ssm get-parameter")]) == 2


@pytest.mark.parametrize("shell", SHELLS)
def test_newlines_in_the_build_context_stay_inside_the_header_comment(workdir: Path, shell: str) -> None:
    hostile = BuildContext(
        repo=f'team/app\ntouch "{workdir}/pwned-repo"',
        build_number=f'42\rtouch "{workdir}/pwned-cr"\n touch "{workdir}/pwned-build"',
        commit=f"abc\ntouch {workdir}/p",
        branch="main",
        triggerer="",
        deployment_environment="",
    )
    lines = build_script(make_settings(build=hostile, commands='echo ran >> "$LOG"'))
    run = run_script(workdir, lines, shell)

    assert run.code == 0, run.stderr
    assert run.log == ["ran"]
    assert not list(workdir.glob("pwned-*")) and not (workdir / "p").exists()
    assert re.fullmatch(r"# ssm-deploy [A-Za-z0-9_.@+/-]+#[A-Za-z0-9_.@+/-]+ [A-Za-z0-9_.@+/-]+", lines[0]), lines[0]


def test_the_powershell_header_has_no_line_break_either() -> None:
    hostile = BuildContext("team/app\r\nRemove-Item C:\\ -Recurse", "42\u2028x", "0" * 40, "main", "", "")
    lines = build_script(make_settings(build=hostile, document_name=POWERSHELL, commands="Write-Output ok"))
    assert lines[0] == "# ssm-deploy team/app__Remove-Item_C___-Recurse#42_x 0000000"


@pytest.mark.parametrize("name", ["BASH_ENV=x", "bad name", "1X", "PATH;touch x", "A\nB", "é"])
def test_the_script_refuses_a_name_that_is_not_an_identifier_whatever_config_let_through(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid environment variable name"):
        build_script(make_settings(variables=[(name, "v")]))
    with pytest.raises(ValueError, match="not a valid environment variable name"):
        build_script(make_settings(secrets=[SecretRef(name, "/p")], document_name=POWERSHELL))


# --- the health check keeps the check's own exit semantics (issue 9, item 1) ------------------------


def run_healthcheck(workdir: Path, shell: str, check: str, retries: int = 1) -> Run:
    settings = make_settings(healthcheck_commands=check, healthcheck_retries=retries, healthcheck_interval=0)
    return run_script(workdir, healthcheck_body(settings).split("\n"), shell)


@pytest.mark.parametrize("shell", SHELLS)
def test_a_health_check_under_set_e_fails_at_its_first_failing_command(workdir: Path, shell: str) -> None:
    run = run_healthcheck(workdir, shell, 'set -e\necho 503 >> "$LOG"\nfalse\necho went-on >> "$LOG"', retries=2)

    assert run.code == 1
    assert run.log == ["503", "503"]
    assert "health check attempt 1 failed (exit 1); retrying in 0 s" in run.stderr
    assert "health check failed 2 time(s) (last exit 1)" in run.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_exit_in_a_health_check_ends_the_attempt_not_the_loop(workdir: Path, shell: str) -> None:
    check = 'echo x >> "$LOG"\n[ "$(wc -l < "$LOG")" -ge 2 ] || exit 22\necho healthy'
    run = run_healthcheck(workdir, shell, check, retries=3)

    assert run.code == 0, run.stderr
    assert run.log == ["x", "x"]
    assert "attempt 1 failed (exit 22)" in run.stderr


def test_pipefail_in_a_health_check_is_kept(workdir: Path) -> None:
    run = run_healthcheck(workdir, "bash", "set -o pipefail\nfalse | cat")
    assert run.code == 1
    assert "(last exit 1)" in run.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_a_health_check_that_closes_the_loop_syntax_only_fails_its_attempt(workdir: Path, shell: str) -> None:
    # the check is data to the loop: a stray `done` or `)` in it cannot end the loop early
    run = run_healthcheck(workdir, shell, 'echo x >> "$LOG"\n)\ndone', retries=2)
    assert run.code == 1
    assert run.log == ["x", "x"]  # eval runs the check command by command, up to the syntax error
    assert "health check failed 2 time(s)" in run.stderr


# --- line endings (issue 9, item 17) ----------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_crlf_commands_run_to_the_last_line(workdir: Path, shell: str) -> None:
    # settings strip the final newline of COMMANDS, leaving the CR of the last CRLF behind
    commands = 'echo one >> "$LOG"\r\nif true; then\r\n  echo two >> "$LOG"\r\nfi\r\nexit 0\r'
    run = run_script(workdir, build_script(make_settings(commands=commands)), shell)

    assert run.code == 0, run.stderr
    assert run.log == ["one", "two"]


def test_command_lines_keep_a_cr_inside_a_line() -> None:
    assert command_lines("printf 'a\\rb'\r\nexit 0\r") == ["printf 'a\\rb'", "exit 0"]
    assert command_lines("a\rb") == ["a\rb"]


# --- PowerShell quoting (issue 9, item 9) -----------------------------------------------------------


@pytest.mark.parametrize("quote", ["'", "\u2018", "\u2019", "\u201a", "\u201b"])
def test_every_powershell_single_quote_is_doubled(quote: str) -> None:
    assert ps_quote(f"a{quote}b") == f"'a{quote}{quote}b'"


def test_powershell_variables_are_quoted_with_the_full_set() -> None:
    value = "x\u201a; Remove-Item C:\\data; \u201b"
    lines = build_script(make_settings(document_name=POWERSHELL, variables=[("GREETING", value)], commands="x"))
    assert "$env:GREETING = 'x\u201a\u201a; Remove-Item C:\\data; \u201b\u201b'" in lines


@pytest.mark.parametrize("shell", SHELLS)
def test_a_health_check_in_release_mode_gets_the_release_id(workdir: Path, shell: str) -> None:
    settings = make_settings(healthcheck_commands='echo "$SSM_DEPLOY_RELEASE" >> "$LOG"', healthcheck_retries=1)
    run = run_script(workdir, healthcheck_body(settings, "000042-0123456").split("\n"), shell)

    assert run.code == 0
    assert run.log == ["000042-0123456"]
