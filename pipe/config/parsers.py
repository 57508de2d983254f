"""Small parsers for pipe variable values. Each raises ValueError with a message for the user."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from pipe.config.build_context import cut
from pipe.config.env_names import name_problem

_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off", ""}


def parse_bool(text: str | None, default: bool) -> bool:
    if text is None:
        return default
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"must be true or false, got {text!r}")


def parse_int(text: str | None, default: int, minimum: int, maximum: int) -> int:
    if text is None or not text.strip():
        return default
    stripped = text.strip()
    if not re.fullmatch(r"[0-9]+", stripped):
        raise ValueError(f"must be a whole number of seconds from {minimum} to {maximum}, got {text!r}")
    if len(stripped.lstrip("0")) > len(str(maximum)):
        raise ValueError(f"must be from {minimum} to {maximum} seconds, got a {len(stripped)}-digit number")
    value = int(stripped)
    if not minimum <= value <= maximum:
        raise ValueError(f"must be from {minimum} to {maximum} seconds, got {value}")
    return value


def split_words(text: str) -> list[str]:
    """Split on spaces, commas and newlines; drop empty parts."""
    return [part for part in re.split(r"[\s,]+", text) if part]


def yaml_list(env: Mapping[str, str], name: str) -> list[str] | None:
    """Read a YAML list the way Bitbucket passes it to a pipe: NAME_COUNT and NAME_0..n."""
    count_text = env.get(f"{name}_COUNT")
    if count_text is None:
        return None
    if not re.fullmatch(r"[0-9]{1,4}", count_text.strip()):
        raise ValueError(f"{name}_COUNT must be a number below 10000, got {count_text[:20]!r}")
    items = []
    for index in range(int(count_text)):
        item = env.get(f"{name}_{index}")
        if item is None:
            raise ValueError(f"{name}_COUNT is {count_text} but {name}_{index} is missing")
        items.append(item)
    return items


def split_pairs(text: str) -> list[tuple[str, str]]:
    """``NAME=value`` entries, one per line; blank lines and lines starting with ``#`` are skipped.

    Only a newline separates entries: the value is the rest of its line after the first ``=``,
    ``;``, ``=``, ``#``, quotes and braces included. A value often comes from a variable the pipe never
    sees (``BRANCH=$BITBUCKET_BRANCH`` is expanded by Bitbucket), and a ``;`` inside it must not start
    a new entry, whose name would then be data. Git refuses control characters in branch and tag
    names, so a newline cannot come from there. Spaces around the name and the value are dropped.
    """
    pairs = []
    for raw in text.split("\n"):
        entry = raw.strip()
        if entry and not entry.startswith("#"):
            name, value = _entry(entry)
            pairs.append((name, value.strip()))
    return pairs


def list_pairs(items: Sequence[str]) -> list[tuple[str, str]]:
    """The YAML list form (``NAME_COUNT``, ``NAME_0``..): one entry per item, its value kept exactly as
    given after the first ``=`` (spaces and newlines too). Blank items and ``#`` items are skipped."""
    pairs = []
    for item in items:
        if item.strip() and not item.lstrip().startswith("#"):
            pairs.append(_entry(item))
    return pairs


def _entry(entry: str) -> tuple[str, str]:
    name, sep, value = entry.partition("=")
    if not sep:
        raise ValueError(f"entry {cut(entry.strip(), 60)!r} has no '=': write NAME=value")
    problem = name_problem(name.strip())
    if problem:
        raise ValueError(problem)
    return name.strip(), value


_FORMER_SEPARATOR = re.compile(r";\s*([A-Za-z_][A-Za-z0-9_]*)=")


def former_separator_hints(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """Warnings for values that hold ``;NAME=``: up to 1.x such a ``;`` started a new entry."""
    return [
        f"VARIABLES: the value of {name} holds ';{match.group(1)}=' and is kept whole: only a newline "
        "separates entries (a ';' no longer does). If you meant several variables, put each on its own line"
        for name, value in pairs
        if (match := _FORMER_SEPARATOR.search(value))
    ]


def expand_environment(text: str, environment: str | None) -> str:
    """Replace ``{environment}``; refuse any other placeholder and a missing environment."""
    unknown = sorted({m for m in _PLACEHOLDER.findall(text) if m != "environment"})
    if unknown:
        listed = ", ".join("{" + name + "}" for name in unknown)
        raise ValueError(f"unknown placeholder {listed}: only {{environment}} is supported")
    if "{environment}" in text:
        if not environment:
            raise ValueError(
                "uses {environment} but no environment is known: set ENVIRONMENT or run the pipe in a deployment step"
            )
        return text.replace("{environment}", environment)
    return text
