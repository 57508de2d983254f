"""pipe.config.env_names: the reserved names, refused where they are set, and listed in the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipe.config.env_names import RESERVED, name_problem, reserved_reason
from pipe.config.settings import load_settings
from pipe.errors import ValidationFailed

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()
MINIMAL = {"AWS_DEFAULT_REGION": "eu-west-1", "INSTANCE_IDS": "i-0123456789abcdef0", "COMMANDS": "true"}


def test_the_readme_lists_every_reserved_name() -> None:
    section = README.split("### Reserved names", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`([A-Z0-9_]+\*?)`", section))
    declared = {pattern for entry in RESERVED for pattern in entry.patterns}
    assert declared <= listed, sorted(declared - listed)


@pytest.mark.parametrize(
    "name",
    [
        *("BASH_ENV", "ENV", "PATH", "IFS", "PS4", "SHELLOPTS", "BASHOPTS", "HOME", "CDPATH", "GLOBIGNORE"),
        *("PROMPT_COMMAND", "BASH_FUNC_ls", "LD_PRELOAD", "LD_LIBRARY_PATH", "GCONV_PATH", "AWS_CONFIG_FILE"),
        *("AWS_ENDPOINT_URL_SSM", "AWS_ACCESS_KEY_ID", "path", "Home", "ld_audit", "PSModulePath", "ssm_deploy_check"),
    ],
)
def test_names_that_change_the_shell_loader_or_cli_are_reserved_everywhere(name: str) -> None:
    assert reserved_reason(name) is not None
    assert (name_problem(name) or "").startswith(f"{name} is reserved: ")


@pytest.mark.parametrize("name", ["NODE_OPTIONS", "PYTHONPATH", "PYTHONSTARTUP", "PERL5OPT", "JAVA_TOOL_OPTIONS"])
def test_interpreter_options_are_refused_only_from_parameter_names(name: str) -> None:
    assert reserved_reason(name) is None  # an author's own VARIABLES/SECRETS entry
    assert reserved_reason(name, from_parameter_name=True) is not None  # PARAMETERS_PATH


@pytest.mark.parametrize(
    "name", ["DB_PASSWORD", "PATHWAY", "ENVIRONMENT", "HOMEPAGE", "MY_PATH", "LANG", "TZ", "TMPDIR"]
)
def test_ordinary_names_are_not_reserved(name: str) -> None:
    assert reserved_reason(name, from_parameter_name=True) is None


@pytest.mark.parametrize(
    ("variable", "entry"),
    [
        ("VARIABLES", "PATH=/opt/app/bin"),
        ("VARIABLES", "OK=1\nLD_PRELOAD=/tmp/x.so"),
        ("SECRETS", "BASH_ENV=/deploy/x"),
        ("SECRETS", "AWS_SECRET_ACCESS_KEY=/deploy/key"),
    ],
)
def test_load_settings_refuses_a_reserved_name_under_its_variable(variable: str, entry: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        load_settings({**MINIMAL, variable: entry}, {})
    (reason,) = refused.value.problems[variable]
    name = entry.split("\n")[-1].partition("=")[0]
    assert reason.startswith(f"{name} is reserved: ")
    assert "set it yourself in COMMANDS" in reason
