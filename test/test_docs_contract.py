"""README, pipe.yml and the schema describe the variables of one table; the image tag matches the release."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipe.config.lock import LOCK_EXPIRY_SECONDS, LOCK_RENEW_SECONDS
from pipe.config.variables import DOCUMENTED_REQUIRED, EXPANDED, SCHEMA, TABLE, Group
from pipe.plan.script import AWS_CLI_MISSING, PARAMETER_READ_FAILED
from pipe.release.artifact import check_artifact_path
from pipe.release.remote import RUNS_KEPT, ReleaseExit
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


def test_every_test_named_in_the_readme_and_docs_exists() -> None:
    texts = [README, *(path.read_text() for path in (ROOT / "docs").glob("*.md"))]
    named = {name for text in texts for name in re.findall(r"`(?:[\w/]+\.py::)?(test_\w+)`", text)}
    named |= {name for text in texts for name in re.findall(r"::(test_\w+)", text)}
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


def test_readme_states_how_many_runs_an_instance_remembers() -> None:
    assert f".ssm-deploy/run` (under its deploy lock, before anything else; the last {RUNS_KEPT} runs" in README


# --- the README a newcomer follows -------------------------------------------------------------------

DOCS = {path.name: path.read_text() for path in (ROOT / "docs").glob("*.md")}


def readme_headings() -> list[str]:
    """The README's headings outside code blocks."""
    found, fenced = [], False
    for line in README.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            found.append(line.lstrip("#").strip())
    return found


def anchor(heading: str) -> str:
    """The id GitHub and Bitbucket give a heading: lower case, punctuation dropped, spaces as '-'."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_every_link_inside_the_readme_leads_to_one_heading() -> None:
    anchors = [anchor(heading) for heading in readme_headings()]
    links = set(re.findall(r"\]\(#([^)]+)\)", README))

    assert sorted(links - set(anchors)) == []
    assert sorted({a for a in anchors if anchors.count(a) > 1}) == []  # a link would reach the first only


def test_every_docs_file_the_readme_links_exists() -> None:
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", README))

    assert linked == {f"docs/{name}" for name in DOCS}


def quick_start() -> str:
    return README.split("## Quick start", 1)[1].split("\n## ", 1)[0]


def pipeline(section: str) -> dict[str, Any]:
    """The bitbucket-pipelines.yml of a README section (its first YAML block), anchors resolved."""
    text = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def deploy_steps(loaded: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry["step"] for entry in loaded["pipelines"]["branches"]["main"] if "deployment" in entry["step"]]


def pipe_variables(step: dict[str, Any]) -> dict[str, str]:
    variables: dict[str, str] = step["script"][0]["variables"]
    return variables


@pytest.mark.parametrize("heading", ["## Quick start", "### The whole flow: dev, stg and prod"])
def test_one_build_and_one_step_definition_deploy_dev_stg_and_prod(heading: str) -> None:
    from app_fixture import ACTIVATE, HEALTH_CHECK, INSTALL  # what test/e2e/test_node_pm2.py deploys with

    loaded = pipeline(README.split(heading, 1)[1])
    main = loaded["pipelines"]["branches"]["main"]
    steps = deploy_steps(loaded)

    assert [step["deployment"] for step in steps] == ["dev", "stg", "prod"]
    assert [entry for entry in main if "deployment" not in entry["step"]] == [{"step": main[0]["step"]}]  # built once
    assert main[0]["step"]["artifacts"] == ["web-api.tgz"]
    variables = [pipe_variables(step) for step in steps]
    assert variables[0] == variables[1] == variables[2]  # one definition: the environment comes from deployment:
    deploy = variables[0]
    assert (deploy["COMMANDS"], deploy["ACTIVATE_COMMANDS"], deploy["HEALTHCHECK_COMMANDS"]) == (
        INSTALL,
        ACTIVATE,
        HEALTH_CHECK,
    )
    assert deploy["ARTIFACT"] == "web-api.tgz"
    assert deploy["RUN_AS"] == "ec2-user"
    # zero downtime in prod, and no load balancer needed in dev (test_one_step_for_every_environment.py);
    # MAX_CONCURRENCY alone would keep restarting instances in the target group: 502s
    assert deploy["TARGET_GROUPS"] == "auto"
    assert "MAX_CONCURRENCY" not in deploy


def build_command(heading: str) -> str:
    build = pipeline(README.split(heading, 1)[1])["pipelines"]["branches"]["main"][0]["step"]
    (command,) = [line for line in build["script"] if line.startswith("tar ")]
    return str(command)


def pack_as_the_readme_says(command: str, tree: Path) -> bytes:
    subprocess.run(["bash", "-c", command], cwd=tree, check=True, timeout=60)
    return (tree / "web-api.tgz").read_bytes()


def test_the_readme_archive_recipe_gives_the_same_bytes_for_the_same_files(tmp_path: Path) -> None:
    """ "Upload once" holds only when the same files pack to the same bytes: the S3 key is the SHA-256."""
    from app_fixture import APP_FILES, FIXTURE_DIR

    command = build_command("## Quick start")
    assert command == build_command("### The whole flow: dev, stg and prod")
    packed = []
    for number, (mode, mtime) in enumerate([(0o644, 1_700_000_000), (0o664, 1_800_000_000)]):
        tree = tmp_path / f"clone{number}"
        tree.mkdir()
        for name in APP_FILES:
            shutil.copyfile(FIXTURE_DIR / name, tree / name)
            (tree / name).chmod(mode)
            os.utime(tree / name, (mtime, mtime))
        packed.append(pack_as_the_readme_says(command, tree))
        assert check_artifact_path("web-api.tgz", str(tree)) is None  # the pipe takes it as it is
        with tarfile.open(tree / "web-api.tgz") as archive:
            assert sorted(archive.getnames()) == sorted(APP_FILES)

    assert packed[0] == packed[1]


def test_the_contradictions_newcomers_met_are_gone() -> None:
    assert "tar -czf web-api.tgz" not in README  # not reproducible: a rebuild would upload again
    flow = README.split("### The whole flow: dev, stg and prod", 1)[1].split("\n## ", 1)[0]
    assert "MAX_CONCURRENCY: '25%'" not in flow
    assert set(pipeline(flow)["pipelines"]["branches"]) == {"main"}  # no rebuild per branch


def test_the_exit_codes_table_lists_every_code_an_instance_ends_with() -> None:
    section = README.split("\n## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    listed = {int(code) for code in re.findall(r"^\| `(\d+)` \|", section, flags=re.MULTILINE)}

    assert {0, 1, PARAMETER_READ_FAILED, AWS_CLI_MISSING} | {int(code) for code in ReleaseExit} <= listed


def test_running_it_locally_names_every_bitbucket_variable_the_pipe_reads() -> None:
    read = {
        name
        for path in (ROOT / "pipe").rglob("*.py")
        for name in re.findall(r"\"(BITBUCKET_[A-Z_]+)\"", path.read_text())
    }
    section = README.split("\n## Running it locally\n", 1)[1].split("\n## ", 1)[0]

    assert {"BITBUCKET_CLONE_DIR", "BITBUCKET_COMMIT", "BITBUCKET_STEP_OIDC_TOKEN"} <= read
    assert {name for name in read if f"`{name}`" not in section} == set()


def test_running_it_locally_names_the_emulator_settings_the_tests_use() -> None:
    standin = (ROOT / "test" / "standin" / "standin.py").read_text()
    pipe_env = standin.split("def pipe_env", 1)[1].split("\n    def ", 1)[0]
    settings = set(re.findall(r"\"(AWS_(?:ENDPOINT_URL|DISABLE_[A-Z_]+))\"", pipe_env))
    section = README.split("### Against an AWS emulator", 1)[1].split("\n## ", 1)[0]

    assert settings == {"AWS_ENDPOINT_URL", "AWS_DISABLE_HOST_PREFIX_INJECTION"}
    assert all(f"`{name}=" in section for name in settings)


def test_maintainers_material_lives_in_docs() -> None:
    for heading in ("## Reliability", "## Performance", "### Architecture", "### Layout"):
        assert f"\n{heading}\n" not in README, heading
    assert "| Fault | What the pipe does | Test |" in DOCS["reliability.md"]
    assert "`bench/` measures the pipe" in DOCS["performance.md"]
    assert "A deploy is two steps: **plan**, then **apply**." in DOCS["architecture.md"]
    assert not re.search(r"^Tests: ", README, flags=re.MULTILINE)
