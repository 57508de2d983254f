"""Property-based tests of what becomes shell on the instances (issue 9, items 1, 7, 8, 9, 10).

* VARIABLES/SECRETS entries: any value (``;``, ``=``, ``#``, braces, quotes, control characters,
  unicode) stays whole and never creates a name;
* the exported values reach a child process byte for byte, in bash and dash;
* PowerShell quoting, checked against a port of PowerShell's own single-quoted string scanner;
* the header line, whatever the build variables hold;
* PARAMETERS_PATH names: always an identifier, refused exactly when reserved;
* a health check attempt exits as the check would on its own, ``set -e`` and ``exit`` included.

The expectations are written from the shells' and PowerShell's rules, not from pipe/plan/script.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipe.config.build_context import BuildContext
from pipe.config.documents import POWERSHELL
from pipe.config.env_names import RESERVED, reserved_reason
from pipe.config.parsers import list_pairs, split_pairs
from pipe.errors import PipeError
from pipe.plan.parameter_path import env_name, resolve_path
from pipe.plan.script import build_script, healthcheck_body, ps_quote
from pipe.runtime.redaction import Redactor
from unit.unit_support import BUILD, make_settings

SHELLS = [shell for shell in ("bash", "dash") if shutil.which(shell)]
# CharExtensions.IsSingleQuote in PowerShell's src/System.Management.Automation/engine/parser/CharTraits.cs
PS_SINGLE_QUOTES = frozenset("'\u2018\u2019\u201a\u201b")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FAST = settings(max_examples=300, deadline=None)
# each example starts shell processes: fewer, each with many values
SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies -------------------------------------------------------------------------------------

NAMES = st.from_regex(IDENTIFIER, fullmatch=True).filter(lambda n: len(n) <= 30 and reserved_reason(n) is None)
# anything a value may hold on one line: every character but a newline (and surrogates, which are not text)
LINE_VALUE = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\n"), max_size=40)
TRICKY = st.sampled_from(
    [";", "; B=1", ";BASH_ENV=$(id)", "{", "}", "{environment}", "=", "#", "'", '"', "`", "$(", "\\", "\r", "\t"]
)
ONE_LINE = st.lists(st.one_of(LINE_VALUE, TRICKY), max_size=6).map("".join)
# what a child process can receive: no NUL (execve ends a string there)
ENV_VALUE = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40)


def stripped(value: str) -> str:
    return value.strip()


# --- item 7: entries ---------------------------------------------------------------------------------


@FAST
@given(NAMES, ONE_LINE)
def test_a_value_on_one_line_is_one_entry_kept_whole(name: str, value: str) -> None:
    assert split_pairs(f"{name}={value}") == [(name, stripped(value))]


@FAST
@given(st.lists(st.tuples(NAMES, ONE_LINE), max_size=6), st.sampled_from(["\n", "\r\n", "\n\n", " \n"]))
def test_entries_separated_by_newlines_round_trip(pairs: list[tuple[str, str]], separator: str) -> None:
    text = separator.join(f"{name}={value}" for name, value in pairs)
    assert split_pairs(text) == [(name, stripped(value)) for name, value in pairs]


@FAST
@given(NAMES, ONE_LINE)
def test_data_never_becomes_a_name(name: str, value: str) -> None:
    """Whatever a variable expanded into the value holds, the only name is the one written."""
    assert [parsed for parsed, _ in split_pairs(f"{name}={value}")] == [name]


@FAST
@given(st.lists(st.tuples(NAMES, ENV_VALUE), max_size=5))
def test_the_yaml_list_form_keeps_each_value_exactly(pairs: list[tuple[str, str]]) -> None:
    assert list_pairs([f"{name}={value}" for name, value in pairs]) == pairs


@st.composite
def reserved_names(draw: st.DrawFn, everywhere: bool = True) -> str:
    """A name of the table in any case (Windows ignores case), a prefix with any ending."""
    patterns = [p for entry in RESERVED if entry.everywhere or not everywhere for p in entry.patterns]
    pattern = draw(st.sampled_from(patterns))
    name = (
        pattern[:-1] + draw(st.from_regex(r"[A-Za-z0-9_]{0,8}", fullmatch=True)) if pattern.endswith("*") else pattern
    )
    return "".join(c.lower() if draw(st.booleans()) else c for c in name)


@FAST
@given(reserved_names(), ONE_LINE)
def test_a_reserved_name_is_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(name)} is reserved: "):
        split_pairs(f"{name}={value}")


# --- item 7: the values on the instance --------------------------------------------------------------


def exported_in(shell: str, lines: list[str], names: list[str]) -> dict[str, bytes]:
    """Run the script with ``shell`` and read each variable back from a child process's environment."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        dump = "; ".join(f"printf '%s' \"${name}\" > {out / name}" for name in names)
        script = out / "_script.sh"
        script.write_bytes(("\n".join([*lines, f"/bin/sh -c '{dump}'"]) + "\n").encode())
        done = subprocess.run(
            [shell, str(script)], env={"PATH": "/usr/bin:/bin"}, cwd=out, capture_output=True, timeout=20, check=False
        )
        assert done.returncode == 0, done.stderr
        assert not (out / "pwned").exists()
        return {name: (out / name).read_bytes() for name in names}


@SLOW
@given(st.lists(st.one_of(ENV_VALUE, TRICKY.map(lambda t: t + ' touch pwned"')), min_size=1, max_size=12))
@pytest.mark.parametrize("shell", SHELLS)
def test_every_value_reaches_the_commands_byte_for_byte(shell: str, values: list[str]) -> None:
    variables = [(f"V_{index}", value) for index, value in enumerate(values)]
    lines = build_script(make_settings(variables=variables, commands="true"))

    got = exported_in(shell, lines[:-1], [name for name, _ in variables])

    assert got == {name: value.encode() for name, value in variables}


# --- item 9: PowerShell quoting ----------------------------------------------------------------------


def ps_scan_single_quoted(text: str) -> tuple[str, int]:
    """PowerShell's tokenizer on a single-quoted string (Tokenizer.ScanStringLiteral): returns the
    string's value and the index just after its closing quote. A quote followed by a quote, any two
    of the five, is one quote character: the second one."""
    assert text[0] in PS_SINGLE_QUOTES
    value: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        index += 1
        if char in PS_SINGLE_QUOTES:
            if index >= len(text) or text[index] not in PS_SINGLE_QUOTES:
                return "".join(value), index
            char = text[index]
            index += 1
        value.append(char)
    raise AssertionError("the string never ends")


PS_VALUE = st.text(
    st.one_of(st.characters(exclude_categories=["Cs"]), st.sampled_from(sorted(PS_SINGLE_QUOTES))), max_size=40
)
# what follows a quoted value in the script: end of line, a space, `)`, `;`; never a quote
PS_AFTER = st.sampled_from(["", " ", ")", "; Remove-Item C:\\ -Recurse", " -WithDecryption $true"])


@FAST
@given(PS_VALUE, PS_AFTER)
def test_a_powershell_string_ends_exactly_where_the_quoting_ends(value: str, after: str) -> None:
    quoted = ps_quote(value)
    assert ps_scan_single_quoted(quoted + after) == (value, len(quoted))


@FAST
@given(NAMES, PS_VALUE)
def test_a_powershell_variable_line_is_one_assignment_of_the_value(name: str, value: str) -> None:
    lines = build_script(make_settings(document_name=POWERSHELL, variables=[(name, value)], commands="x"))
    line = next(line for line in lines if line.startswith(f"$env:{name} = "))
    rest = line[len(f"$env:{name} = ") :]
    assert ps_scan_single_quoted(rest) == (value, len(rest))


# --- item 10: the header line ------------------------------------------------------------------------


@FAST
@given(st.text(max_size=60), st.text(max_size=30), st.text(max_size=50), st.sampled_from(["shell", "powershell"]))
def test_the_header_is_one_comment_line_whatever_the_build_variables(
    repo: str, build_number: str, commit: str, document: str
) -> None:
    build = BuildContext(repo, build_number, commit, BUILD.branch, BUILD.triggerer, BUILD.deployment_environment)
    extra: dict[str, Any] = {"document_name": POWERSHELL} if document == "powershell" else {}
    header = build_script(make_settings(build=build, commands="true", **extra))[0]
    # nothing that ends a comment in sh (LF) or PowerShell (LF, CR), nor anything else but these
    assert re.fullmatch(r"# ssm-deploy [A-Za-z0-9_.@+/-]*#[A-Za-z0-9_.@+/-]*( [A-Za-z0-9_.@+/-]+)?", header), header


# --- item 8: names from PARAMETERS_PATH ---------------------------------------------------------------

# the last level of a Parameter Store name: letters, digits and . _ -
SEGMENT = st.from_regex(r"[A-Za-z0-9_.\-]{1,30}", fullmatch=True)


class FakeSSM:
    """GetParametersByPath over a fixed list of parameters, one page."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def get_paginator(self, operation: str) -> FakeSSM:
        assert operation == "get_parameters_by_path"
        return self

    def paginate(self, **_: Any) -> list[dict[str, Any]]:
        return [{"Parameters": [{"Name": name, "Value": "v"} for name in self.names]}]


@FAST
@given(SEGMENT)
def test_a_parameter_name_becomes_an_identifier(segment: str) -> None:
    assert IDENTIFIER.fullmatch(env_name(f"/deploy/prod/{segment}"))


@FAST
@given(st.lists(st.one_of(SEGMENT, reserved_names(everywhere=False)), min_size=1, max_size=5, unique_by=env_name))
def test_parameters_path_refuses_exactly_the_reserved_names(segments: list[str]) -> None:
    names = [f"/deploy/prod/{segment}" for segment in segments]
    reserved = [name for name in names if reserved_reason(env_name(name), from_parameter_name=True)]
    ssm = FakeSSM(names)
    if reserved:
        with pytest.raises(PipeError) as refused:
            resolve_path(ssm, "/deploy/prod/", set(), Redactor(), "role")
        for name in reserved:
            assert f"{name} would be exported as {env_name(name)}, a reserved name" in str(refused.value)
        assert str(refused.value).startswith("PARAMETERS_PATH: nothing was sent.")
    else:
        refs = resolve_path(ssm, "/deploy/prod/", set(), Redactor(), "role")
        assert [ref.parameter for ref in refs] == names


# --- item 1: a health check attempt exits as the check would on its own -------------------------------

CHECK_LINES = st.sampled_from(
    [
        "set -e",
        "set +e",
        "true",
        "false",
        "echo step",
        "exit 3",
        "(exit 5)",
        "false || true",
        "! true",
        "f() { false; echo in-f; }; f",
        "if false; then echo no; fi",
        "[ -n x ] && false",
        "{ false; echo after-group; }",
    ]
)


def run_shell(shell: str, text: str) -> tuple[int, bytes]:
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "_script.sh"
        script.write_text(text + "\n")
        done = subprocess.run([shell, str(script)], capture_output=True, cwd=folder, timeout=20, check=False)
        return done.returncode, done.stdout


@SLOW
@given(st.lists(CHECK_LINES, min_size=1, max_size=8))
@pytest.mark.parametrize("shell", SHELLS)
def test_a_health_check_attempt_ends_as_the_check_alone_would(shell: str, lines: list[str]) -> None:
    check = "\n".join(lines)
    alone_code, alone_output = run_shell(shell, check)

    body = healthcheck_body(make_settings(healthcheck_commands=check, healthcheck_retries=1, healthcheck_interval=0))
    code, output = run_shell(shell, body)

    assert output == alone_output
    assert code == (0 if alone_code == 0 else 1)
