"""Write the variables' documentation from their one table (pipe/config/variables.py).

Regenerates the README's "YAML Definition" and "Variables" sections and pipe.yml's ``variables``:
run ``.venv/bin/python scripts/variable_docs.py`` after changing the table.
test/test_docs_contract.py fails while the files differ from what this script writes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipe.config.variables import EXPANDED, LIST_FORMS, TABLE, Expand, Group, Variable

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PIPE_YML = ROOT / "pipe.yml"
EXPANDED_MARK = "@EXPANDED@"  # in ENVIRONMENT's usage: where the list of variables goes


def code_list(names: tuple[str, ...] | list[str]) -> str:
    """```A`, `B` and `C```"""
    quoted = [f"`{name}`" for name in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def usage(variable: Variable[object]) -> str:
    text = variable.usage.replace(EXPANDED_MARK, code_list(EXPANDED))
    return text + (f" Default: `{variable.default}`." if variable.default else "")


def grouped() -> list[Variable[object]]:
    """The table in the README's order: group by group, each in the table's order."""
    return [variable for group in Group for variable in TABLE if variable.group is group]


def yaml_definition(version: str) -> str:
    lines = [f"- pipe: org/ssm-deploy:{version}", "  variables:"]
    first = [variable for variable in grouped() if not variable.snippet.startswith("# Optional")]
    rest = [variable for variable in grouped() if variable.snippet.startswith("# Optional")]
    for variable in first:
        lines.append(f"    {variable.name}: '<{variable.kind}>'" + (f" {variable.snippet}" if variable.snippet else ""))
    for variable in rest:
        lines.append(f"    # {variable.name}: '<{variable.kind}>' {variable.snippet}")
    return (
        "Add the following snippet to the script section of your `bitbucket-pipelines.yml` file:\n\n"
        "```yaml\n" + "\n".join(lines) + "\n```\n\n"
        f"Pin this exact version, `{version}`, as every example here does: a new version of the pipe is a "
        "change you make to your `bitbucket-pipelines.yml`, after reading its CHANGELOG.\n"
    )


def group_table(group: Group) -> list[str]:
    rows = [f"### {group.value}", "", "| Variable | Usage |", "| --- | --- |"]
    rows += [
        f"| {variable.name}{' (*)' if variable.required else ''} | {usage(variable)} |"
        for variable in TABLE
        if variable.group is group
    ]
    return [*rows, ""]


def variables_section() -> str:
    rows = [line for group in Group for line in group_table(group)]
    strict = [variable.name for variable in TABLE if variable.expand is Expand.STRICT]
    kept = [variable.name for variable in TABLE if variable.expand is Expand.KEEP_OTHER_BRACES]
    return "\n".join(
        [
            "_(*) = required variable. One of `INSTANCE_IDS` and `TARGETS` is required too, and so are "
            "credentials: `AWS_OIDC_ROLE_ARN` (with `oidc: true` on the step) or the two access keys. "
            "`COMMANDS` or `SCRIPT` is required to run commands in place; in release mode (`ARTIFACT` or "
            "`RELEASE`) `COMMANDS` is optional (`ACTIVATE_COMMANDS` starts the release), and `ACTION: status` "
            "and a document of your own (`DOCUMENT_NAME`) need neither._",
            "",
            *rows,
            "",
            f"`{{{{environment}}}}` stays a literal `{{environment}}`. In {code_list(strict)}, whose values "
            f"cannot hold braces, any other `{{name}}` is refused as a misspelt placeholder; in {code_list(kept)} "
            "other braces are kept as they are.",
            "",
            "A YAML list, which Bitbucket passes to the pipe as `NAME_COUNT` and `NAME_0`, `NAME_1`, ..., is "
            f"accepted by {code_list(LIST_FORMS)}: one id, target or line per item, and for `SECRETS` and "
            "`VARIABLES` one `NAME=value` pair per item, whose value is kept whole (a `;` or newline in it is "
            "part of the value). Any other variable given as a list is refused by name.",
            "",
            "```yaml",
            "    COMMANDS:",
            "      - cd /srv/app",
            "      - ./deploy.sh",
            "    VARIABLES:",
            "      - JDBC_URL=jdbc:sqlserver://db:1433;databaseName=app",
            "```",
            "",
        ]
    )


def pipe_yml_variables() -> str:
    lines = ["variables:"]
    for variable in TABLE:
        default = variable.default.replace("'", "''")
        lines += [f"  - name: {variable.name}", f"    default: '{default}'"]
    return "\n".join(lines) + "\n"


def image_version(pipe_yml: str) -> str:
    match = re.search(r"^image: org/ssm-deploy:([0-9.]+)$", pipe_yml, flags=re.MULTILINE)
    if not match:
        raise SystemExit("pipe.yml has no image: org/ssm-deploy:<version> line")
    return match.group(1)


def replace_section(text: str, title: str, body: str) -> str:
    """The README with the body of ``## title`` (up to the next ``## ``) replaced."""
    start = text.index(f"## {title}\n") + len(f"## {title}\n")
    end = text.index("\n## ", start) + 1
    return text[:start] + "\n" + body + "\n" + text[end:]


def readme(text: str, version: str) -> str:
    text = replace_section(text, "YAML Definition", yaml_definition(version))
    return replace_section(text, "Variables", variables_section())


def pipe_yml(text: str) -> str:
    return text[: text.index("variables:\n")] + pipe_yml_variables()


def main() -> None:
    metadata = PIPE_YML.read_text()
    PIPE_YML.write_text(pipe_yml(metadata))
    README.write_text(readme(README.read_text(), image_version(metadata)))


if __name__ == "__main__":
    main()
