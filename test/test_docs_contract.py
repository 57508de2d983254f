"""README, pipe.yml and the schema describe the variables of one table; the image tag matches the release."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from pipe.config.lock import LOCK_EXPIRY_SECONDS, LOCK_RENEW_SECONDS
from pipe.config.variables import DOCUMENTED_REQUIRED, EXPANDED, SCHEMA, TABLE, Group
from scripts import variable_docs

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PIPE_YML = (ROOT / "pipe.yml").read_text()
REGENERATE = "out of date: run .venv/bin/python scripts/variable_docs.py"


def variables_section() -> str:
    return README.split("\n## Variables\n", 1)[1].split("\n## ", 1)[0]


def readme_table() -> dict[str, bool]:
    rows = re.findall(r"^\| ([A-Z0-9_]+)( \(\*\))? \|", variables_section(), flags=re.MULTILINE)
    return {name: bool(required) for name, required in rows}


def readme_groups() -> dict[str, list[str]]:
    """Each ``### <group>`` table of the Variables section: its title and the variables it lists."""
    tables = re.split(r"^### ", variables_section(), flags=re.MULTILINE)[1:]
    return {
        table.split("\n", 1)[0]: re.findall(r"^\| ([A-Z0-9_]+)(?: \(\*\))? \|", table, flags=re.MULTILINE)
        for table in tables
    }


def test_readme_variables_and_yaml_definition_are_generated_from_the_table() -> None:
    assert variable_docs.readme(README, variable_docs.image_version(PIPE_YML)) == README, f"README.md is {REGENERATE}"


def test_pipe_yml_variables_are_generated_from_the_table() -> None:
    assert variable_docs.pipe_yml(PIPE_YML) == PIPE_YML, f"pipe.yml is {REGENERATE}"


def test_readme_table_lists_every_schema_variable_and_marks_the_required_ones() -> None:
    table = readme_table()

    assert sorted(table) == sorted(variable.name for variable in TABLE)
    assert set(table) == set(SCHEMA)
    assert {name for name, required in table.items() if required} == set(DOCUMENTED_REQUIRED)


def test_readme_lists_the_variables_in_one_table_per_group_in_the_groups_order() -> None:
    groups = readme_groups()

    assert list(groups) == [group.value for group in Group]
    for group in Group:
        assert groups[group.value] == [variable.name for variable in TABLE if variable.group is group], group
    assert groups[Group.REQUIRED.value][0] == "AWS_DEFAULT_REGION"  # a newcomer starts with what is required


def test_readme_footnote_does_not_require_commands_in_release_mode() -> None:
    footnote = next(line for line in variables_section().splitlines() if line.startswith("_(*)"))

    assert "one of `COMMANDS` and `SCRIPT`, are required" not in footnote
    assert "in release mode (`ARTIFACT` or `RELEASE`) `COMMANDS` is optional" in footnote


def test_readme_names_the_variables_that_expand_environment() -> None:
    row = next(line for line in README.splitlines() if line.startswith("| ENVIRONMENT |"))
    listed = re.findall(r"`([A-Z0-9_]+)`", row.split("Replaces `{environment}` in", 1)[1])

    assert listed == list(EXPANDED)
    assert {"TARGETS", "PARAMETERS_PATH", "OUTPUT_S3_PREFIX"} <= set(listed)  # once missing from the README


def test_readme_yaml_definition_names_every_variable() -> None:
    snippet = README.split("## YAML Definition", 1)[1].split("## Variables", 1)[0]
    named = set(re.findall(r"#? ?([A-Z0-9_]+): '<", snippet))

    assert named == set(SCHEMA)


def test_pipe_yml_declares_every_variable_with_the_tables_default() -> None:
    metadata = yaml.safe_load(PIPE_YML)

    assert [(entry["name"], entry["default"]) for entry in metadata["variables"]] == [
        (variable.name, variable.default) for variable in TABLE
    ]
    assert metadata["category"] == "Deployment"


def test_each_default_is_written_once() -> None:
    """The "Default: `...`" of a row comes from the table's default, never from its usage text."""
    for variable in TABLE:
        if variable.default:
            assert "Default:" not in variable.usage, variable.name
            assert f"Default: `{variable.default}`." in README, variable.name


def test_pipe_yml_and_readme_use_the_latest_released_version() -> None:
    releases = sorted(
        (tuple(int(p) for p in path.stem.split(".")) for path in (ROOT / ".changes").glob("*.*.*.json")),
    )
    assert releases, "no release in .changes/"
    version = ".".join(str(p) for p in releases[-1])
    metadata = yaml.safe_load(PIPE_YML)

    assert metadata["image"] == f"org/ssm-deploy:{version}"
    assert set(re.findall(r"pipe: org/ssm-deploy:([0-9.]+)", README)) == {version}
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {version}" in changelog
    entries = json.loads((ROOT / ".changes" / f"{version}.json").read_text())
    assert entries, "the release has no change entries"


def test_every_test_named_in_the_readme_exists() -> None:
    named = set(re.findall(r"`(?:[\w/]+\.py::)?(test_\w+)`", README)) | set(re.findall(r"::(test_\w+)", README))
    defined = {
        match
        for path in (ROOT / "test").rglob("test_*.py")
        for match in re.findall(r"^def (test_\w+)", path.read_text(), flags=re.MULTILINE)
    }

    assert named, "the README names no tests"
    assert named <= defined, f"named in README but not defined: {sorted(named - defined)}"


def readme_block(after: str, language: str) -> str:
    """The first fenced ``language`` block after the line ``after``."""
    section = README.split(after, 1)[1]
    return section.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_readme_ecosystem_file_is_the_tested_one() -> None:
    # test/e2e/test_node_pm2.py deploys the fixture app with this file, under real pm2
    tested = (ROOT / "test" / "fixtures" / "web-api" / "ecosystem.config.js").read_text()
    assert readme_block("### Node.js with pm2: the ecosystem file", "js") == tested


def test_readme_release_example_installs_activates_and_checks_as_the_pm2_tests_do() -> None:
    from app_fixture import ACTIVATE, HEALTH_CHECK, INSTALL  # what test/e2e/test_node_pm2.py deploys with

    example = yaml.safe_load(readme_block("## Releases", "yaml"))
    variables = next(step for step in example if "Deploy" in step["step"]["name"])["step"]["script"][0]["variables"]
    assert (variables["COMMANDS"], variables["ACTIVATE_COMMANDS"], variables["HEALTHCHECK_COMMANDS"]) == (
        INSTALL,
        ACTIVATE,
        HEALTH_CHECK,
    )


def test_readme_states_the_lock_timing_the_pipe_uses() -> None:
    section = README.split("### The deploy lock when a build dies", 1)[1].split("\n## ", 1)[0]
    minutes = LOCK_EXPIRY_SECONDS // 60

    assert LOCK_EXPIRY_SECONDS % 60 == 0
    assert f"renews it every {LOCK_RENEW_SECONDS} s, each time to expire {minutes} minutes later" in section
    assert f"at most {minutes} minutes after the kill" in section
    assert f"expires {minutes} minutes after it was taken or last renewed" in README
    assert f"renewed every {LOCK_RENEW_SECONDS} s while this deploy runs" in README  # the build-log sample
